#!/usr/bin/env bash
# Load test of the write path against /healthz, in the same run.
#
#   bench/writes.sh                          # release build, SQLite, 32 connections, 8 s per route
#   BACKEND=postgres bench/writes.sh         # a fresh database on 127.0.0.1:5432 (dropped on exit)
#   DURATION=5s CONNECTIONS=32 USERS=200 bench/writes.sh
#   SYSCALLS=1 bench/writes.sh               # also count the server's sleeps and fsyncs per write route
#
# Starts a release build with --dev on 127.0.0.1, then runs wrk against:
#   /healthz                            baseline: no auth, no database
#   POST /v1/orgs/{org}/resources       one hot org, an API key (no limit set)
#   POST /v1/orgs                       USERS users' JWTs, one per request in turn
# With SYSCALLS=1, `perf stat` counts the server's clock_nanosleep calls
# during each write route (SQLite's busy handler sleeps with it; tokio never
# does) and its fsync/fdatasync calls, printed per request.
# It prints a Markdown table with each route's throughput relative to
# /healthz and its p50/p99, plus the rows each write route created (read back
# from the API, so a 2xx that wrote nothing would show). Rate limits are set
# out of reach (still checked). Bounded: each wrk run stops after DURATION;
# the server is killed (and the PostgreSQL database dropped) on exit.
# Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND=${BACKEND:-sqlite}
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
USERS=${USERS:-200}
PORT=${PORT:-18495}
BIN=${BIN:-target/release/orgplane}
BASE="http://127.0.0.1:$PORT"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release --locked --quiet

DATA=$(mktemp -d)
PGDB=
SERVER=
cleanup() {
  set +e
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; fi
  if [ -n "$PGDB" ]; then dropdb -h 127.0.0.1 -U postgres --if-exists "$PGDB"; fi
  rm -rf "$DATA"
}
trap cleanup EXIT
export ORGPLANE_DATA_DIR="$DATA"
export ORGPLANE_LOG=warn
export ORGPLANE_LIMITS_RATE_PER_SECOND=1000000000 ORGPLANE_LIMITS_RATE_BURST=1000000000
export ORGPLANE_LIMITS_MAX_IN_FLIGHT=$(( CONNECTIONS > 1024 ? 2 * CONNECTIONS : 1024 ))
if [ "$BACKEND" = postgres ]; then
  PGDB="orgplane_bench_writes_$$"
  createdb -h 127.0.0.1 -U postgres "$PGDB"
  export ORGPLANE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$PGDB"
fi
"$BIN" serve --dev --listen "127.0.0.1:$PORT" &
SERVER=$!
for _ in $(seq 1 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$BASE/healthz" >/dev/null || { echo "server did not start" >&2; exit 1; }

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
KEY=$("$BIN" keys create --name bench 2>/dev/null)
TOKEN=$(curl -sf -X POST "$BASE/dev/token" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","name":"Bench"}' | json "['token']")
ORG=$(curl -sf -X POST "$BASE/v1/orgs" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"name":"Hot Agency"}' | json "['id']")
# No limit on the hot org's customers (an override), so every create succeeds.
curl -sf -X PUT "$BASE/v1/orgs/$ORG/overrides" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"limits":{"customers":null}}' >/dev/null

# USERS tokens (each user's first request creates the user and a personal org).
TOKENS="$DATA/tokens.lua"
echo "tokens = {" >"$TOKENS"
for i in $(seq 1 "$USERS"); do
  t=$(curl -sf -X POST "$BASE/dev/token" -H 'content-type: application/json' \
    -d "{\"email\":\"writer$i@example.com\",\"name\":\"Writer $i\"}" | json "['token']")
  curl -sf "$BASE/v1/me" -H "authorization: Bearer $t" >/dev/null
  echo "  \"$t\"," >>"$TOKENS"
done
echo "}" >>"$TOKENS"
cat >>"$TOKENS" <<'LUA'
local n = 0
request = function()
  n = n + 1
  local t = tokens[(n % #tokens) + 1]
  return wrk.format("POST", "/v1/orgs", {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. t},
    '{"name":"Bench Org"}')
end
LUA
RES="$DATA/resources.lua"
cat >"$RES" <<'LUA'
wrk.method = "POST"
wrk.body = '{"type":"customers","name":"c"}'
wrk.headers["Content-Type"] = "application/json"
LUA

SYSCALL_EVENTS='syscalls:sys_enter_clock_nanosleep,syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync'
run() { # name path token lua
  local out perf=
  if [ "${SYSCALLS:-0}" = 1 ] && [ -n "${4:-}" ]; then
    perf="$DATA/perf.$RANDOM"
    perf stat -x, -e "$SYSCALL_EVENTS" -p "$SERVER" -o "$perf" &
    PERF=$!
  fi
  if [ -n "${4:-}" ] && [ -n "$3" ]; then
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$4" -H "authorization: Bearer $3" "$BASE$2")
  elif [ -n "${4:-}" ]; then
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$4" "$BASE$2")
  else
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$BASE$2")
  fi
  local rps p50 p99 non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  if [ -n "$perf" ]; then
    kill -INT "$PERF"; wait "$PERF" 2>/dev/null || true
    local requests
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    awk -F, -v n="$requests" -v name="$1" '$1 ~ /^[0-9]+$/ {printf "  %s: %s %s (%.3f per request)\n", name, $1, $3, $1 / n}' "$perf" >&2
  fi
  echo "$1|$rps|$p50|$p99|${non2xx:-0}"
}

LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
HEALTH=$(run "/healthz" /healthz "")
RESOURCES=$(run "POST /v1/orgs/{org}/resources (one org, API key)" "/v1/orgs/$ORG/resources" "$KEY" "$RES")
ORGS=$(run "POST /v1/orgs ($USERS users' JWTs)" /v1/orgs "" "$TOKENS")
HEALTH_RPS=$(echo "$HEALTH" | cut -d'|' -f2)
CREATED=$(curl -sf "$BASE/v1/orgs/$ORG/entitlements" -H "authorization: Bearer $KEY" |
  python3 -c "import json,sys; print(json.load(sys.stdin)['limits'].get('customers'))")

echo
echo "$(date -u '+%Y-%m-%d %H:%M') UTC on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average $LOAD_BEFORE before the runs, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $BIN, $BACKEND"
echo
echo "| route | req/s | × /healthz | p50 | p99 | non-2xx |"
echo "|---|---:|---:|---:|---:|---:|"
for row in "$HEALTH" "$RESOURCES" "$ORGS"; do
  IFS='|' read -r name rps p50 p99 non2xx <<<"$row"
  ratio=$(python3 -c "print(f'{float($rps)/float($HEALTH_RPS):.3f}')")
  echo "| $name | $rps | $ratio | $p50 | $p99 | $non2xx |"
done
echo
echo "hot org customers after the run (limit, used): $CREATED"
