#!/usr/bin/env bash
# Fault proof: SIGTERM while 64 connections load write and read routes.
#
#   bench/faults/sigterm-under-load.sh                    # SQLite
#   BACKEND=postgres bench/faults/sigterm-under-load.sh   # a fresh database on 127.0.0.1:5432, dropped on exit
#   CONNECTIONS=64 LOAD_SECS=3 GRACE_SECS=10 bench/faults/sigterm-under-load.sh
#
# Starts `orgplane serve` (release build), creates 8 orgs with no customer
# limit and an API key, then CONNECTIONS keep-alive connections create
# resources and read entitlements and resource lists in turn; after
# LOAD_SECS the server gets SIGTERM. The verdict (see
# bench/faults/sigterm_load.py for how accepted requests are told apart
# from connections refused or closed after shutdown began): every accepted
# request answered 2xx, the process exits with status 0 within GRACE_SECS,
# and the database holds exactly the resource creates answered 2xx.
#
# Bounded: the load stops by itself GRACE_SECS + 5 s after the signal; the
# server is killed on exit. Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh

BACKEND=${BACKEND:-sqlite}
PORT=${PORT:-18620}
export CONNECTIONS=${CONNECTIONS:-64} LOAD_SECS=${LOAD_SECS:-3} GRACE_SECS=${GRACE_SECS:-10}
BASE="http://127.0.0.1:$PORT"

bench_init
if [ "$BACKEND" = postgres ]; then bench_pg_db orgplane_fault_sigterm; else unset ORGPLANE_DATABASE_URL; fi
bench_start s1 "$PORT"
bench_wait_healthy "$PORT"

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
KEY=$("$BIN" keys create --name fault 2>/dev/null)
TOKEN=$(curl -sf -X POST "$BASE/dev/token" -H 'content-type: application/json' \
  -d '{"email":"fault@example.com","name":"Fault"}' | json "['token']")
ORGS=()
for i in $(seq 1 8); do
  org=$(curl -sf -X POST "$BASE/v1/orgs" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"name\":\"Shutdown Agency $i\"}" | json "['id']")
  curl -sf -X PUT "$BASE/v1/orgs/$org/overrides" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
    -d '{"limits":{"customers":null}}' >/dev/null
  ORGS+=("$org")
done

out=$(timeout $((GRACE_SECS + 60)) python3 bench/faults/sigterm_load.py "$BASE" "$PID_s1" "$KEY" "${ORGS[@]}")
echo "$out" | grep -v '^__RESULT__'
read -r _ accepted failed exit_secs <<<"$(echo "$out" | grep '^__RESULT__')"
status=0
wait "$PID_s1" || status=$?
echo "exit status: $status"

# Every create answered 2xx is stored: the server's own count, read back
# from a server started again on the same database.
bench_start s2 "$PORT"
bench_wait_healthy "$PORT"
stored=0
for org in "${ORGS[@]}"; do
  n=$(curl -sf "$BASE/v1/orgs/$org/entitlements" -H "authorization: Bearer $KEY" | json "['limits']['customers']['used']")
  stored=$((stored + n))
done
answered=$(echo "$out" | sed -n 's/.* \([0-9]*\) resource creates answered 2xx.*/\1/p')
echo "resources stored: $stored; creates answered 2xx: $answered"

problems=()
[ "$failed" = 0 ] || problems+=("$failed of $accepted accepted requests failed")
[ "$status" = 0 ] || problems+=("exit status $status")
python3 -c "import sys; sys.exit(0 if 0 <= $exit_secs <= $GRACE_SECS else 1)" || problems+=("exit after ${exit_secs} s, grace ${GRACE_SECS} s")
[ "$stored" = "$answered" ] || problems+=("$answered creates answered 2xx but $stored stored")
if [ ${#problems[@]} -eq 0 ]; then
  printf 'PASS: SIGTERM under %s connections (%s): all %s accepted requests answered 2xx, clean exit %.2f s after the signal (grace %s s), every acknowledged create stored\n' \
    "$CONNECTIONS" "$BACKEND" "$accepted" "$exit_secs" "$GRACE_SECS"
else
  echo "FAIL: SIGTERM under $CONNECTIONS connections ($BACKEND): $(IFS=';'; echo "${problems[*]}")"
  exit 1
fi
