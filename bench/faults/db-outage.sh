#!/usr/bin/env bash
# Fault proof: PostgreSQL unreachable for 10 s behind a TCP proxy.
#
#   bench/faults/db-outage.sh                   # the proxy refuses and closes every link (a database gone)
#   MODE=blackhole bench/faults/db-outage.sh    # links stay open, no byte moves (a partition);
#                                               # FAILs today: a statement in flight when the link
#                                               # goes silent waits for it (no client-side deadline)
#   CUT_SECS=10 RECOVER_LIMIT_SECS=5 bench/faults/db-outage.sh
#
# A fresh database on 127.0.0.1:5432 (dropped on exit), reached by
# `orgplane serve` (release build) through bench/faults/tcp_proxy.py
# (python3, no other dependency). A probe (bench/faults/db_outage_probe.py)
# loads a write, two database reads and /healthz over four connections
# before, during and after the outage. The verdict: answers during the
# outage are 2xx or `503 unavailable` with Retry-After, none slower than the
# statement timeout plus a second; the process stays up; writes are 2xx
# again within RECOVER_LIMIT_SECS of the database coming back, without a
# restart.
#
# Bounded: the probe stops by itself; the server and the proxy are killed
# and the database dropped on exit. Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh

MODE=${MODE:-cut}
PORT=${PORT:-18630}
PROXY_PORT=${PROXY_PORT:-18631}
export CUT_SECS=${CUT_SECS:-10} RECOVER_LIMIT_SECS=${RECOVER_LIMIT_SECS:-5}
export STATEMENT_TIMEOUT_MS=${ORGPLANE_DATABASE_STATEMENT_TIMEOUT_MS:-5000}
BASE="http://127.0.0.1:$PORT"

started=$(date +%s)
bench_init
bench_pg_db orgplane_fault_outage
python3 bench/faults/tcp_proxy.py "$PROXY_PORT" 5432 "$MODE" >>"$DATA/proxy.log" 2>&1 &
PROXY=$!
BENCH_PIDS+=("$PROXY")
for _ in $(seq 1 50); do grep -q '^proxy: 127' "$DATA/proxy.log" 2>/dev/null && break; sleep 0.1; done
export ORGPLANE_DATABASE_URL="postgres://postgres@127.0.0.1:$PROXY_PORT/$PGDB"
bench_start s1 "$PORT"
bench_wait_healthy "$PORT"

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
KEY=$("$BIN" keys create --name fault 2>/dev/null)
TOKEN=$(curl -sf -X POST "$BASE/dev/token" -H 'content-type: application/json' \
  -d '{"email":"fault@example.com","name":"Fault"}' | json "['token']")
ORG=$(curl -sf -X POST "$BASE/v1/orgs" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"name":"Outage Agency"}' | json "['id']")
curl -sf -X PUT "$BASE/v1/orgs/$ORG/overrides" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"limits":{"customers":null}}' >/dev/null

out=$(timeout $((CUT_SECS + RECOVER_LIMIT_SECS + 60)) python3 bench/faults/db_outage_probe.py \
  "$BASE" "$PID_s1" "$PROXY" "$KEY" "$ORG") || { echo "$out"; exit 1; }
echo "$out" | grep -v '^__OK__'
echo "PASS: PostgreSQL $MODE for ${CUT_SECS} s behind a TCP proxy: $(echo "$out" | sed -n 's/^__OK__ //p') ($(( $(date +%s) - started )) s)"
