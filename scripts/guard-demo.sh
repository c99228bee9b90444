#!/usr/bin/env bash
# Guarded rollout, end to end: the example app with a demo fault in its new checkout,
# NEW_CHECKOUT on a guarded 10 % -> 50 % ramp (through the admin API), traffic from
# distinct users, and `ff guard` showing the test until the guard acts.
#
#   bash scripts/guard-demo.sh [SHARE]
#
# SHARE: the share of the new checkout's requests that fail (default 0.2: the guard
# rolls the rollout back); 0 for a healthy rollout, which the guard ramps on to 50 %.
# Needs curl. Uses a throwaway SQLite file and port 3000 (FF_DEMO_PORT to change it).
set -euo pipefail
cd "$(dirname "$0")/.."
share=${1:-0.2}
port=${FF_DEMO_PORT:-3000}
cargo build -q -p ff-axum-example -p ff-cli
dir=$(mktemp -d)
export FF_TOKEN=demo-operator-secret-0123456789abcdef
export FF_URL=http://127.0.0.1:$port/admin
FF_ADMIN_TOKEN=$FF_TOKEN FF_DEMO_CHECKOUT_FAILURES=$share FF_LISTEN=127.0.0.1:$port \
  DATABASE_URL="sqlite://$dir/ff.db?mode=rwc" RUST_LOG=warn target/debug/ff-axum-example >"$dir/app.log" 2>&1 &
app=$!
trap 'kill $app 2>/dev/null; rm -rf "$dir"' EXIT
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.1; done
ff=target/debug/ff

echo "== NEW_CHECKOUT: 10 % now, 50 % once the guard finds it healthy (new checkout failing: $share)"
etag=$(curl -s -D - -o /dev/null -H "authorization: Bearer $FF_TOKEN" "$FF_URL/api/flags/NEW_CHECKOUT" |
  tr -d '\r' | sed -n 's/^etag: //Ip')
due=$(date -u +%Y-%m-%dT%H:%M:%SZ)
split() { echo "{\"variations\": [{\"value\": true, \"weight\": $1}, {\"value\": false, \"weight\": $((10000 - $1))}]}"; }
curl -sf -X PATCH "$FF_URL/api/flags/NEW_CHECKOUT" -H "authorization: Bearer $FF_TOKEN" -H "if-match: $etag" \
  -H 'content-type: application/json' -o /dev/null -d "{
    \"targeting\": {
      \"split\": $(split 1000),
      \"schedule\": [{\"at\": \"$due\", \"split\": $(split 5000)}],
      \"guard\": {\"max_error_increase\": 1, \"min_requests\": 200}
    },
    \"reason\": \"new checkout: guarded ramp 10 % then 50 %\"
  }"

# Traffic: batches of 250 checkouts from distinct UUID-shaped users, one curl each.
sent=0
for batch in $(seq 1 40); do
  : >"$dir/batch"
  for i in $(seq 1 250); do
    n=$((sent + i))
    [ "$i" = 1 ] || echo next >>"$dir/batch"
    printf 'url = "http://127.0.0.1:%s/checkout"\nheader = "x-user-id: %08x-0000-4000-8000-%012x"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' \
      "$port" $((n * 2654435761 % 4294967296)) "$n" >>"$dir/batch"
  done
  codes=$(curl -s -K "$dir/batch" | sort | uniq -c | tr -s ' ' | tr '\n' ' ')
  sent=$((sent + 250))
  state=$($ff guard NEW_CHECKOUT | head -1)
  echo "$sent requests (status counts: $codes) -> $state"
  case "$state" in *"no guard"*) break ;; esac
  if [ "$share" = 0 ] && $ff guard NEW_CHECKOUT | grep -q "ramp advanced"; then break; fi
done

echo
$ff guard NEW_CHECKOUT
echo
$ff history NEW_CHECKOUT --limit 3
