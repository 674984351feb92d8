#!/usr/bin/env bash
# Webhook intake throughput: signed Stripe subscription events, stored and
# applied exactly once.
#
#   bench/webhooks.sh                          # 5000 events over 250 orgs, 32 connections
#   EVENTS=20000 ORGS=1000 CONNECTIONS=64 bench/webhooks.sh
#
# Starts a release build with --dev on 127.0.0.1 (SQLite in a temp dir) with
# a Stripe webhook secret from the environment, creates ORGS team orgs
# through the API (a dev token), then a small Python asyncio client (HTTP/1.1
# keep-alive, CONNECTIONS connections) posts EVENTS pre-built
# `customer.subscription.*` events, each signed just before the run, spread
# over the orgs (each org's events carry increasing `created` times, so a
# late one is stale rather than applied over a newer one). It reports
# events/s, then verifies with sqlite3 that each event was stored and applied
# exactly once, and that replaying a sample changes nothing.
#
# Bounded: every step has a timeout and the server is killed on exit.
# Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-5000}
ORGS=${ORGS:-250}
CONNECTIONS=${CONNECTIONS:-32}
PORT=${PORT:-18490}
BASE="http://127.0.0.1:$PORT"
SECRET=whsec_bench_secret
PRICE=price_bench_business

command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 1; }
command -v sqlite3 >/dev/null || { echo "sqlite3 is missing: apt-get install -y sqlite3" >&2; exit 1; }
timeout 1200 cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/orgplane

DATA=$(mktemp -d)
SERVER=
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; [ -n "$SERVER" ] && wait "$SERVER" 2>/dev/null; rm -rf "$DATA"' EXIT

# The catalog maps the bench's Stripe price to business.
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_stripe_catalog "$DATA/orgplane.toml" "$PRICE"

export ORGPLANE_DATA_DIR="$DATA"
export ORGPLANE_LOG=warn
# The bench sends deliveries and org creations far faster than [limits]
# lets one provider or one user: set those rates out of reach.
export ORGPLANE_LIMITS_WEBHOOK_RATE_PER_SECOND=1000000000 ORGPLANE_LIMITS_WEBHOOK_RATE_BURST=1000000000
export ORGPLANE_LIMITS_RATE_PER_SECOND=1000000000 ORGPLANE_LIMITS_RATE_BURST=1000000000
export ORGPLANE_BILLING_STRIPE_WEBHOOK_SECRETS="[\"$SECRET\"]"
"$BIN" serve --dev --config "$DATA/orgplane.toml" --listen "127.0.0.1:$PORT" &
SERVER=$!
for _ in $(seq 1 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$BASE/healthz" >/dev/null || { echo "server did not start" >&2; exit 1; }

timeout 900 python3 - "$BASE" "$SECRET" "$PRICE" "$EVENTS" "$ORGS" "$CONNECTIONS" "$DATA/orgplane.db" <<'PY'
import asyncio, sqlite3, sys, time
sys.path.insert(0, "bench")
from stripe_events import Events, create_orgs, post_all

base, secret, price, n_events, n_orgs, conns, db = sys.argv[1:8]
n_events, n_orgs, conns = int(n_events), int(n_orgs), int(conns)
target = [("127.0.0.1", int(base.rsplit(":", 1)[1]))]

t0 = time.time()
orgs = create_orgs(base, n_orgs)
print(f"created {n_orgs} orgs in {time.time() - t0:.1f} s")
events = Events(orgs, n_events, price)
results, elapsed = asyncio.run(post_all(target, list(enumerate(events.bodies)), conns, secret))
results = list(results.values())
bad = [r for r in results if r[0] != 200] + [None] * (n_events - len(results))
fresh = sum(1 for r in results if b'"duplicate":false' in r[1])
print(f"posted {len(results)} signed events over {conns} connections in {elapsed:.2f} s: "
      f"{len(results) / elapsed:.0f} events/s ({len(bad)} non-2xx, {fresh} first deliveries)")

# Replay a sample: acknowledged, no second effect.
sample = list(enumerate(events.bodies[: min(500, n_events)]))
replayed, _ = asyncio.run(post_all(target, sample, conns, secret))
dups = sum(1 for r in replayed.values() if r[0] == 200 and b'"duplicate":true' in r[1])
print(f"replayed {len(sample)} events: {dups} acknowledged as duplicates")

con = sqlite3.connect(db)
q = lambda sql: con.execute(sql).fetchone()[0]
by_status = dict(con.execute("SELECT status, COUNT(*) FROM provider_events GROUP BY status").fetchall())
outcomes = dict(con.execute("SELECT outcome, COUNT(*) FROM provider_events GROUP BY outcome").fetchall())
stored, distinct = q("SELECT COUNT(*) FROM provider_events"), q("SELECT COUNT(DISTINCT event_id) FROM provider_events")
subs = q("SELECT COUNT(*) FROM subscriptions")
created = q("SELECT COUNT(*) FROM events WHERE type = 'subscription.created'")
print(f"provider_events: {stored} stored ({distinct} distinct), by status {by_status}, by outcome {outcomes}")
print(f"subscriptions: {subs} rows; subscription.created audit events: {created}")
ok = (not bad and fresh == n_events and dups == len(sample) and stored == n_events and distinct == n_events
      and by_status.get("applied") == n_events and subs == n_orgs and created == n_orgs)
print("VERIFIED: every event stored and applied exactly once" if ok else "VERIFICATION FAILED")
sys.exit(0 if ok else 1)
PY
