#!/usr/bin/env bash
# Fault proof: a Stripe webhook storm across three replicas on one
# PostgreSQL database, one replica SIGKILLed mid-storm, then full redelivery.
#
#   bench/faults/stripe-storm-replicas.sh            # 5000 events over 250 orgs
#   EVENTS=2000 ORGS=100 KILL_AFTER=0.3 bench/faults/stripe-storm-replicas.sh
#
# A fresh, uniquely named database on 127.0.0.1:5432 (dropped on exit);
# three `orgplane serve` processes on it (release build, ports PORT..PORT+2).
# EVENTS signed `customer.subscription.*` events (EVENTS/ORGS per org, each
# with its own quantity, shuffled so that older events often arrive after
# newer ones) go over 16 keep-alive connections per replica; once KILL_AFTER
# of them are answered, the third replica is SIGKILLed (its in-flight
# deliveries get no answer; the rest go to the survivors). Then every event
# is delivered again, reshuffled, to the two survivors, as Stripe would
# retry. The verdict: every redelivery answered 200, every event stored
# exactly once and applied, one subscription and one `subscription.created`
# per org, and each org's final quantity, cancel_at_period_end and
# observed_at equal to its newest event's.
#
# Bounded: each phase has a timeout; every server is killed and the database
# dropped on exit. Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
source bench/faults/storm_config.sh

EVENTS=${EVENTS:-5000}
ORGS=${ORGS:-250}
KILL_AFTER=${KILL_AFTER:-0.4}
PORT=${PORT:-18600}

started=$(date +%s)
bench_init
bench_pg_db orgplane_fault_storm
storm_config
CONFIG=(--config "$DATA/orgplane.toml")
# The first replica migrates the database and writes the dev issuer's key
# into the shared data dir before the others start.
bench_start r1 "$PORT" "${CONFIG[@]}"
bench_wait_healthy "$PORT"
bench_start r2 $((PORT + 1)) "${CONFIG[@]}"
bench_start r3 $((PORT + 2)) "${CONFIG[@]}"
bench_wait_healthy $((PORT + 1))
bench_wait_healthy $((PORT + 2))

STATE="$DATA/storm.json"
timeout 300 python3 bench/faults/stripe_storm.py setup "$STATE" "http://127.0.0.1:$PORT" "$ORGS" "$EVENTS"
timeout 600 python3 bench/faults/stripe_storm.py storm "$STATE" "$STORM_SECRET" "$PID_r3" "$KILL_AFTER" \
  "$PORT" $((PORT + 1)) $((PORT + 2))
{ wait "$PID_r3"; } 2>/dev/null || true
for p in "$PORT" $((PORT + 1)); do
  curl -sf "http://127.0.0.1:$p/healthz" >/dev/null || { echo "FAIL: the survivor on port $p is down"; exit 1; }
done
out=$(timeout 600 python3 bench/faults/stripe_storm.py redeliver "$STATE" "$STORM_SECRET" "$ORGPLANE_DATABASE_URL" \
  "$PORT" $((PORT + 1))) || { echo "$out"; exit 1; }
echo "$out" | grep -v '^__OK__'
read -r _ stored orgs <<<"$(echo "$out" | grep '^__OK__')"
echo "PASS: $stored Stripe events over 3 PostgreSQL replicas (one SIGKILLed mid-storm) stored exactly once after full redelivery; all $orgs orgs at their newest event's state ($(( $(date +%s) - started )) s)"
