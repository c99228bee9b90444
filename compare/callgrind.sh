#!/usr/bin/env bash
# ff's instructions per evaluation for each workload of the comparison, from callgrind
# (2N runs minus N, so neither loading nor a thread's first read of a flag, which
# allocates its counters, is counted), and with `--cache` the simulated cache
# misses of the timed loop alone (32 KiB L1, 512 KiB L2: this machine's per-core sizes).
# Needs valgrind (Debian package `valgrind`). Run from anywhere:
#   compare/callgrind.sh            instructions, W1..W5
#   compare/callgrind.sh --cache    instructions and L1/L2 misses of the timed loop
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release -q
bin=target/release/ff-compare
units() { if [ "$1" = W5 ]; then echo 40; else echo 20000; fi; }
if [ "${1:-}" = --cache ]; then
  for w in W1 W2 W3 W4 W4off W5; do
    n=$(units "$w")
    valgrind --tool=callgrind --cache-sim=yes --D1=32768,8,64 --LL=524288,8,64 \
      --toggle-collect='*Timed*run*' --callgrind-out-file=/dev/null "$bin" --instructions "$w" "$n" 2>&1 |
      awk -v n="$n" -v w="$w" '/Collected/ {printf "%s: %.1f instructions, %.2f L1 and %.2f L2 read misses per unit\n", w, $4/n, $8/n, $11/n}'
  done
  exit 0
fi
count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --instructions "$1" "$2" 2>&1 | awk '/Collected/ {print $4}'; }
for w in W1 W2 W3 W4 W4off W5; do
  n=$(units "$w")
  echo "$w: $(( ($(count "$w" $((2 * n))) - $(count "$w" "$n")) / n )) instructions per unit"
done
