#!/usr/bin/env bash
# Cost flat in size (issue 13): seeds ORGS orgs straight into a fresh
# database with `orgplane dev seed`, then measures with wrk, each request on
# a random seeded org, beside /healthz in the same run:
#   GET  /v1/orgs/{org}/entitlements   (API key)
#   GET  /v1/orgs/{org}/members        (API key)
#   POST /v1/orgs/{org}/resources      (API key; `clients`, under the plan's limit)
# and the server's RSS (VmRSS now, VmHWM peak) after each route.
#
#   bench/scale.sh                          # 1,000 orgs, SQLite
#   ORGS=100000 bench/scale.sh
#   ORGS=1000000 BACKEND=postgres bench/scale.sh
#
# Knobs: ORGS, BACKEND (sqlite | postgres), DURATION (per route, default 8s),
# CONNECTIONS (64), THREADS (2), BIN (a built orgplane: no cargo build),
# SEED_BIN (the orgplane that seeds; default BIN), PG_URL (an admin URL; a scratch database
# orgplane_scale_<pid> is created and dropped), KEEP=1 keeps the data dir.
# Bounded: each wrk run stops after DURATION; the server is killed and the
# scratch database dropped on exit. Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

ORGS=${ORGS:-1000}
BACKEND=${BACKEND:-sqlite}
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PORT=${PORT:-18481}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
BASE="http://127.0.0.1:$PORT"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=target/release/orgplane
fi
SEED_BIN=${SEED_BIN:-$BIN}

DATA=$(mktemp -d)
SERVER=""
PG_DB=""
cleanup() {
  [ -n "$SERVER" ] && { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
  [ -n "$PG_DB" ] && psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$DATA"
}
trap cleanup EXIT
export ORGPLANE_DATA_DIR="$DATA"
export ORGPLANE_LOG=warn
export ORGPLANE_LIMITS_RATE_PER_SECOND=1000000000 ORGPLANE_LIMITS_RATE_BURST=1000000000
export ORGPLANE_LIMITS_MAX_IN_FLIGHT=$(( CONNECTIONS > 1024 ? 2 * CONNECTIONS : 1024 ))
case "$BACKEND" in
  sqlite) DB_URL="sqlite://$DATA/orgplane.db" ;;
  postgres)
    PG_DB="orgplane_scale_$$"
    psql "$PG_URL" -qc "CREATE DATABASE $PG_DB" >/dev/null
    DB_URL="${PG_URL%/*}/$PG_DB" ;;
  *) echo "BACKEND must be sqlite or postgres" >&2; exit 1 ;;
esac

started=$(date +%s.%N)
"$SEED_BIN" dev seed --database-url "$DB_URL" --orgs "$ORGS" --ids "$DATA/orgs.txt" >"$DATA/seed.out"
SEED_SECS=$(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')")
cat "$DATA/seed.out"
DB_SIZE=""
[ "$BACKEND" = sqlite ] && DB_SIZE=$(du -sh "$DATA" | cut -f1)
[ "$BACKEND" = postgres ] && DB_SIZE=$(psql "$PG_URL" -Atc "SELECT pg_size_pretty(pg_database_size('$PG_DB'))")

"$BIN" serve --dev --database-url "$DB_URL" --listen "127.0.0.1:$PORT" &
SERVER=$!
for _ in $(seq 1 300); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$BASE/healthz" >/dev/null || { echo "server did not start" >&2; exit 1; }
KEY=$("$BIN" keys create --database-url "$DB_URL" --name scale 2>/dev/null)

# A Lua script per route: each request picks a random seeded org.
lua() { # method path-suffix [body]
  cat <<LUA
local ids = {}
for line in io.lines("$DATA/orgs.txt") do ids[#ids + 1] = line end
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
wrk.method = "$1"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.headers["Content-Type"] = "application/json"
${3:+wrk.body = '$3'}
request = function()
  return wrk.format(nil, "/v1/orgs/" .. ids[math.random(#ids)] .. "$2")
end
LUA
}
lua GET /entitlements >"$DATA/ent.lua"
lua GET /members >"$DATA/members.lua"
lua POST /resources '{"type":"clients","name":"Bench client"}' >"$DATA/create.lua"

rss() { awk '/VmRSS/ {r=$2} /VmHWM/ {h=$2} END {printf "%.0f|%.0f", r/1024, h/1024}' "/proc/$SERVER/status"; }
run() { # name lua-or-empty path
  local out
  if [ -n "$2" ]; then
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$2" "$BASE")
  else
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$BASE$3")
  fi
  local rps p50 p99 non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  echo "$1|$rps|$p50|$p99|${non2xx:-0}|$(rss)"
}

HEALTH=$(run "/healthz" "" /healthz)
ENT=$(run "GET entitlements (random org)" "$DATA/ent.lua")
MEMBERS=$(run "GET members (random org)" "$DATA/members.lua")
CREATE=$(run "POST resources (random org)" "$DATA/create.lua")
HEALTH_RPS=$(echo "$HEALTH" | cut -d'|' -f2)

echo
echo "$(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$ORGS orgs on $BACKEND ($DB_SIZE), seeded in $SEED_SECS s; wrk -t$THREADS -c$CONNECTIONS -d$DURATION, release build"
echo
echo "| route | req/s | × /healthz | p50 | p99 | non-2xx | RSS after (MiB) | peak RSS (MiB) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for row in "$HEALTH" "$ENT" "$MEMBERS" "$CREATE"; do
  IFS='|' read -r name rps p50 p99 non2xx rss_now rss_peak <<<"$row"
  ratio=$(python3 -c "print(f'{float($rps)/float($HEALTH_RPS):.2f}')")
  echo "| $name | $rps | $ratio | $p50 | $p99 | $non2xx | $rss_now | $rss_peak |"
done
