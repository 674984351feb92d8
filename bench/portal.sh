#!/usr/bin/env bash
# Load test of the portal's overview page for an org with 100 members.
#
#   bench/portal.sh                      # release build, SQLite, 8 connections, 10 s
#   DURATION=5s CONNECTIONS=4 bench/portal.sh
#
# Starts a release build with --dev on 127.0.0.1 (SQLite in a temp dir),
# makes a team org, buys 100 seats through the sandbox checkout, invites and
# admits 99 colleagues, mints a portal link with an API key, opens it (the
# session cookie), then runs wrk against GET /portal/orgs/{org} and prints
# wrk's latency (client side, loopback) next to the server's own time for
# the route from /metrics (the histogram's p99 bucket bound), and the page
# weight: the HTML plus its stylesheet and script. Target: p99 under 5 ms,
# weight under 100 KiB. The server is killed on exit; traffic stays on
# 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-8}
THREADS=${THREADS:-2}
PORT=${PORT:-18481}
BASE="http://127.0.0.1:$PORT"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet
BIN=target/release/orgplane

DATA=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$DATA"' EXIT
export ORGPLANE_DATA_DIR="$DATA"
export ORGPLANE_LOG=warn
export ORGPLANE_LIMITS_RATE_PER_SECOND=1000000000 ORGPLANE_LIMITS_RATE_BURST=1000000000
export ORGPLANE_LIMITS_ANONYMOUS_RATE_PER_SECOND=1000000000 ORGPLANE_LIMITS_ANONYMOUS_RATE_BURST=1000000000
"$BIN" serve --dev --listen "127.0.0.1:$PORT" &
SERVER=$!
for _ in $(seq 1 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$BASE/healthz" >/dev/null || { echo "server did not start" >&2; exit 1; }

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
token() { curl -sf -X POST "$BASE/dev/token" -H 'content-type: application/json' -d "{\"email\":\"$1\"}" | json "['token']"; }
post() { # path token body
  curl -sf -X POST "$BASE$1" -H "authorization: Bearer $2" -H 'content-type: application/json' -d "$3"
}

OWNER=$(token owner@bench.example)
OWNER_ID=$(curl -sf "$BASE/v1/me" -H "authorization: Bearer $OWNER" | json "['id']")
ORG=$(post /v1/orgs "$OWNER" '{"name":"Bench Clinic"}' | json "['id']")
CHECKOUT=$(post "/v1/orgs/$ORG/checkout" "$OWNER" \
  '{"plan":"business","seats":100,"success_url":"http://127.0.0.1/ok","cancel_url":"http://127.0.0.1/no"}' | json "['url']")
curl -sf -X POST "$CHECKOUT/pay" -H 'accept: application/json' >/dev/null
for i in $(seq 1 99); do
  email="member$i@bench.example"
  invite=$(post "/v1/orgs/$ORG/invitations" "$OWNER" "{\"email\":\"$email\",\"role\":\"member\"}" | json "['token']")
  post /v1/invitations/accept "$(token "$email")" "{\"token\":\"$invite\"}" >/dev/null
done
MEMBERS=$(curl -sf "$BASE/v1/orgs/$ORG/entitlements" -H "authorization: Bearer $OWNER" | json "['limits']['seats']['used']")

KEY=$("$BIN" keys create --name bench 2>/dev/null)
LINK=$(post /v1/portal_sessions "$KEY" "{\"org_id\":\"$ORG\",\"user_id\":\"$OWNER_ID\"}" | json "['url']")
COOKIE=$(curl -s -o /dev/null -D - "$LINK" | awk -F'[ ;]' 'tolower($1)=="set-cookie:" {print $2}')
PAGE="$BASE/portal/orgs/$ORG"
HTML=$(curl -sf -H "cookie: $COOKIE" "$PAGE" | wc -c)
CSS=$(curl -sf "$BASE/portal/assets/portal.css" | wc -c)
JS=$(curl -sf "$BASE/portal/assets/htmx.min.js" | wc -c)

OUT=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "cookie: $COOKIE" "$PAGE")
RPS=$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')
P50=$(echo "$OUT" | awk '$1=="50%" {print $2}')
P99=$(echo "$OUT" | awk '$1=="99%" {print $2}')
NON2XX=$(echo "$OUT" | awk '/Non-2xx/ {print $NF}')
# The server's own time: the smallest histogram bucket holding 99% of the route's requests.
SERVER_P99=$(curl -sf "$BASE/metrics" | python3 -c '
import re, sys
buckets, count = [], 0
for line in sys.stdin:
    if "route=\"/portal/orgs/{org}\"" not in line or "method=\"GET\"" not in line or "status=\"200\"" not in line:
        continue
    m = re.match(r"orgplane_http_request_duration_seconds_bucket\{.*le=\"([^\"]+)\"\} (\d+)", line)
    if m:
        buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), int(m.group(2))))
    m = re.match(r"orgplane_http_request_duration_seconds_count\{.*\} (\d+)", line)
    if m:
        count = int(m.group(1))
bound = next((le for le, n in sorted(buckets) if count and n >= 0.99 * count), None)
print("n/a" if bound is None else f"<= {bound * 1000:g} ms")
')

echo
echo "$(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), wrk -t$THREADS -c$CONNECTIONS -d$DURATION, release build, SQLite"
echo
echo "| page | members | req/s | p50 | p99 (wrk) | p99 (server, /metrics bucket) | non-2xx | weight (HTML + CSS + JS) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
echo "| GET /portal/orgs/{org} | $MEMBERS | $RPS | $P50 | $P99 | $SERVER_P99 | ${NON2XX:-0} | $HTML + $CSS + $JS = $((HTML + CSS + JS)) bytes |"
