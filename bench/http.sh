#!/usr/bin/env bash
# Load test of orgplane's hot read paths against /healthz, in the same run.
#
#   bench/http.sh                 # release build, SQLite, 64 connections, 10 s per route
#   DURATION=5s CONNECTIONS=32 bench/http.sh
#
# Starts a release build with --dev on 127.0.0.1 (SQLite in a temp dir), gets
# a dev token, creates an API key and an org, then runs wrk against:
#   /healthz                         baseline: no auth, no database
#   GET /v1/me                       a user's JWT (verified token cached until exp)
#   GET /v1/orgs/{org}/entitlements  an API key
#   POST /v1/api_keys/verify         an API key verifying an org key (ok_…)
# and prints a Markdown table with each route's throughput relative to
# /healthz measured in the same run. The per-credential rate limit is set
# out of reach (it is still checked on every request). Bounded: each wrk
# run stops after DURATION; the server is killed on exit. Traffic goes to
# 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PORT=${PORT:-18480}
BASE="http://127.0.0.1:$PORT"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet
BIN=target/release/orgplane

DATA=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$DATA"' EXIT
export ORGPLANE_DATA_DIR="$DATA"
export ORGPLANE_LOG=warn
# One credential at full speed is what [limits] exists to refuse: the rate
# limit stays on (its cost is measured) at a rate no run reaches, and the
# in-flight cap stays above the connection count.
export ORGPLANE_LIMITS_RATE_PER_SECOND=1000000000 ORGPLANE_LIMITS_RATE_BURST=1000000000
export ORGPLANE_LIMITS_MAX_IN_FLIGHT=$(( CONNECTIONS > 1024 ? 2 * CONNECTIONS : 1024 ))
"$BIN" serve --dev --listen "127.0.0.1:$PORT" &
SERVER=$!
for _ in $(seq 1 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$BASE/healthz" >/dev/null || { echo "server did not start" >&2; exit 1; }

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
TOKEN=$(curl -sf -X POST "$BASE/dev/token" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","name":"Bench"}' | json "['token']")
KEY=$("$BIN" keys create --name bench 2>/dev/null)
ORG=$(curl -sf -X POST "$BASE/v1/orgs" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"name":"Bench Agency"}' | json "['id']")
curl -sf "$BASE/v1/me" -H "authorization: Bearer $TOKEN" >/dev/null
curl -sf "$BASE/v1/orgs/$ORG/entitlements" -H "authorization: Bearer $KEY" >/dev/null
# The org gets api_tokens by override (no checkout needed), then an org key.
curl -sf -X PUT "$BASE/v1/orgs/$ORG/overrides" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"features":{"api_tokens":true}}' >/dev/null
ORG_KEY=$(curl -sf -X POST "$BASE/v1/orgs/$ORG/api_keys" -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' -d '{"name":"bench"}' | json "['key']")
VERIFY_LUA="$DATA/verify.lua"
cat >"$VERIFY_LUA" <<LUA
wrk.method = "POST"
wrk.body = '{"key":"$ORG_KEY"}'
wrk.headers["Content-Type"] = "application/json"
LUA
curl -sf -X POST "$BASE/v1/api_keys/verify" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d "{\"key\":\"$ORG_KEY\"}" | grep -q '"valid":true' || { echo "verify did not answer valid" >&2; exit 1; }

run() { # name path token [lua script]
  local out
  if [ -n "${4:-}" ]; then
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$4" -H "authorization: Bearer $3" "$BASE$2")
  elif [ -n "$3" ]; then
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "authorization: Bearer $3" "$BASE$2")
  else
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$BASE$2")
  fi
  local rps p50 p99 non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  echo "$1|$rps|$p50|$p99|${non2xx:-0}"
}

HEALTH=$(run "/healthz" /healthz "")
ME=$(run "GET /v1/me (JWT)" /v1/me "$TOKEN")
ENT=$(run "GET /v1/orgs/{org}/entitlements (API key)" "/v1/orgs/$ORG/entitlements" "$KEY")
VERIFY=$(run "POST /v1/api_keys/verify (API key)" /v1/api_keys/verify "$KEY" "$VERIFY_LUA")
HEALTH_RPS=$(echo "$HEALTH" | cut -d'|' -f2)

echo
echo "$(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), wrk -t$THREADS -c$CONNECTIONS -d$DURATION, release build, SQLite"
echo
echo "| route | req/s | × /healthz | p50 | p99 | non-2xx |"
echo "|---|---:|---:|---:|---:|---:|"
for row in "$HEALTH" "$ME" "$ENT" "$VERIFY"; do
  IFS='|' read -r name rps p50 p99 non2xx <<<"$row"
  ratio=$(python3 -c "print(f'{float($rps)/float($HEALTH_RPS):.2f}')")
  echo "| $name | $rps | $ratio | $p50 | $p99 | $non2xx |"
done
