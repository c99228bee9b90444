#!/usr/bin/env bash
# Load benchmark: the example app with and without FlagsLayer under wrk (Debian
# package `wrk`), same binary, same endpoint (GET /me/config, 10,000 user ids in
# turn), loopback; the server pinned to CPU 0, wrk to CPU 1. Runs each ROUNDS
# times, alternating, and prints requests/s, p99, the server's CPU time per request
# (from /proc: what a noisy neighbour's steal time does not inflate) and the ratios,
# then the median ratios.
#   ROUNDS=4 DURATION=10s CONNECTIONS=64 scripts/load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "load.sh needs wrk (apt-get install wrk)" >&2; exit 1; }
duration=${DURATION:-10s}
connections=${CONNECTIONS:-64}
cargo build --release -q -p ff-axum-example
bin=target/release/ff-axum-example
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > "$dir/users.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  -- UUID-shaped ids (36 characters), 10,000 of them in turn.
  local u = n % 10000
  wrk.headers["x-user-id"] = string.format("%08x-%04x-4%03x-a%03x-%012x", u * 104729 % 2147483648, u % 65536, u % 4096, (u * 7) % 4096, u * 40503)
  return wrk.format("GET", "/me/config")
end
LUA

# CPU ticks (user + system) the process has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run WITHOUT_LAYER PORT -> "requests/s p99 cpu-µs-per-request"
run() {
  FF_WITHOUT_LAYER=$1 FF_LISTEN=127.0.0.1:$2 DATABASE_URL="sqlite://$dir/ff.db?mode=rwc" RUST_LOG=error TOKIO_WORKER_THREADS=1 \
    taskset -c 0 "$bin" > "$dir/app.log" 2>&1 &
  local app=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$2/healthz" > /dev/null && break
    sleep 0.1
  done
  taskset -c 1 wrk -t1 -c"$connections" -d2s -s "$dir/users.lua" "http://127.0.0.1:$2" > /dev/null
  local t0 t1
  t0=$(ticks "$app")
  taskset -c 1 wrk -t1 -c"$connections" -d"$duration" --latency -s "$dir/users.lua" "http://127.0.0.1:$2" > "$dir/wrk.txt"
  t1=$(ticks "$app")
  kill "$app"; wait "$app" 2>/dev/null || true
  if grep -q "Non-2xx" "$dir/wrk.txt"; then echo "errors under load:" >&2; cat "$dir/wrk.txt" >&2; exit 1; fi
  local rps p99 n
  rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$dir/wrk.txt")
  n=$(awk '/requests in/ {print $1}' "$dir/wrk.txt")
  echo "$rps $p99 $(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')"
}

printf "%-8s %-16s %12s %10s %14s\n" round variant "requests/s" p99 "cpu µs/req"
ratios=() cpu_ratios=()
for round in $(seq "${ROUNDS:-2}"); do
  read -r base_rps base_p99 base_cpu < <(run 1 3901)
  read -r ff_rps ff_p99 ff_cpu < <(run 0 3902)
  printf "%-8s %-16s %12s %10s %14s\n" "$round" "without layer" "$base_rps" "$base_p99" "$base_cpu"
  printf "%-8s %-16s %12s %10s %14s\n" "$round" "with FlagsLayer" "$ff_rps" "$ff_p99" "$ff_cpu"
  ratio=$(awk -v a="$ff_rps" -v b="$base_rps" 'BEGIN { printf "%.1f", 100 * a / b }')
  cpu_ratio=$(awk -v a="$ff_cpu" -v b="$base_cpu" 'BEGIN { printf "%.1f", 100 * b / a }')
  printf "%-8s %-16s %11s%% %25s%%\n" "$round" "ratio" "$ratio" "$cpu_ratio"
  ratios+=("$ratio") cpu_ratios+=("$cpu_ratio")
done
median() { printf "%s\n" "$@" | sort -n | awk '{a[NR] = $1} END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
echo "median: throughput with the layer $(median "${ratios[@]}")% of without;" \
  "requests per server CPU-second $(median "${cpu_ratios[@]}")%"
