#!/usr/bin/env bash
# Fault proof: a Stripe webhook storm on SQLite, the server SIGKILLed
# mid-storm and restarted, then full redelivery.
#
#   bench/faults/stripe-storm-sqlite.sh              # 5000 events over 250 orgs
#   EVENTS=2000 ORGS=100 KILL_AFTER=0.3 bench/faults/stripe-storm-sqlite.sh
#
# One `orgplane serve` (release build) on a SQLite file in a temp dir.
# EVENTS signed `customer.subscription.*` events (shuffled, see
# stripe-storm-replicas.sh) go over 16 keep-alive connections; once
# KILL_AFTER of them are answered the server is SIGKILLed, which ends the
# storm (the rest is never sent). The server restarts on the same file, and
# every event is delivered again, reshuffled. The verdict: as for the
# replicas (each event stored exactly once and applied, each org at its
# newest event's state), plus `PRAGMA integrity_check` ok after the kill.
#
# Bounded: each phase has a timeout; the server is killed on exit. Traffic
# goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
source bench/faults/storm_config.sh

EVENTS=${EVENTS:-5000}
ORGS=${ORGS:-250}
KILL_AFTER=${KILL_AFTER:-0.4}
PORT=${PORT:-18610}

started=$(date +%s)
bench_init
unset ORGPLANE_DATABASE_URL
storm_config
CONFIG=(--config "$DATA/orgplane.toml")
DB="$DATA/orgplane.db"
bench_start s1 "$PORT" "${CONFIG[@]}"
bench_wait_healthy "$PORT"

STATE="$DATA/storm.json"
timeout 300 python3 bench/faults/stripe_storm.py setup "$STATE" "http://127.0.0.1:$PORT" "$ORGS" "$EVENTS"
timeout 600 python3 bench/faults/stripe_storm.py storm "$STATE" "$STORM_SECRET" "$PID_s1" "$KILL_AFTER" "$PORT"
{ wait "$PID_s1"; } 2>/dev/null || true
integrity=$(sqlite3 "$DB" 'PRAGMA integrity_check')
echo "after the SIGKILL: PRAGMA integrity_check = $integrity"
[ "$integrity" = ok ] || { echo "FAIL: the SQLite file is damaged after SIGKILL: $integrity"; exit 1; }
t0=$(date +%s.%N)
bench_start s2 "$PORT" "${CONFIG[@]}"
bench_wait_healthy "$PORT"
printf 'restarted in %.1f s\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
out=$(timeout 600 python3 bench/faults/stripe_storm.py redeliver "$STATE" "$STORM_SECRET" "sqlite://$DB" "$PORT") \
  || { echo "$out"; exit 1; }
echo "$out" | grep -v '^__OK__'
read -r _ stored orgs <<<"$(echo "$out" | grep '^__OK__')"
echo "PASS: $stored Stripe events on SQLite (server SIGKILLed mid-storm, restarted) stored exactly once after full redelivery; all $orgs orgs at their newest event's state; integrity_check ok ($(( $(date +%s) - started )) s)"
