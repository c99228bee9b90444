#!/usr/bin/env bash
# Instructions per request / per read, counted by callgrind (repeatable, unlike
# wall time on a shared machine). Needs valgrind (Debian package `valgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ff-tower --example instructions
bin=target/release/examples/instructions
n=100000
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 | awk '/Collected/ {print $4}'
}
per() { echo $(( ($(count "$1" "$n") - $(count "$1" 0)) / n )); }
plain=$(per plain)
layer=$(per layer)
read_=$(per read)
echo "request through a no-op service: $plain instructions"
echo "the same through FlagsLayer:      $layer instructions (layer overhead $((layer - plain)))"
echo "bool read through Current:        $read_ instructions"
echo "request scope + Current::config(), hand-written Config: $(per config_hand) instructions"
echo "request scope + Current::config(), #[derive(Config)]:   $(per config_derived) instructions"
echo "request through FlagsLayer reading a 10% split: $(per split_layer) instructions; with a guard on it: $(per guarded_layer)"
