"""The Stripe storm shared by stripe-storm-replicas.sh and stripe-storm-sqlite.sh.

  stripe_storm.py setup STATE BASE ORGS EVENTS
      creates ORGS orgs through BASE and writes STATE (orgs, event count, clock)
  stripe_storm.py storm STATE SECRET KILL_PID KILL_AFTER PORT…
      delivers every event once, shuffled, over 16 connections per port; once
      KILL_AFTER of them are answered, SIGKILLs KILL_PID (the server on the
      last PORT) and keeps going on the others (if any)
  stripe_storm.py redeliver STATE SECRET DATABASE_URL PORT…
      delivers every event again, reshuffled, to the survivors, then checks
      the database: each event stored once and applied (none failed or
      unmatched), one subscription and one `subscription.created` per org,
      each org's quantity, cancel_at_period_end and observed_at those of its
      newest event; prints one PASS:/FAIL: line and exits 1 on FAIL.
"""
import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stripe_events import Events, create_orgs, post_all  # noqa: E402

PRICE = "price_bench_business"
CONNS = 16


def load(state_file):
    state = json.load(open(state_file))
    return state, Events(state["orgs"], state["events"], PRICE, state["now"])


def shuffled(events, seed):
    items = list(enumerate(events.bodies))
    random.Random(seed).shuffle(items)
    return items


def setup(state_file, base, n_orgs, n_events):
    t0 = time.time()
    orgs = create_orgs(base, int(n_orgs), "Storm Clinic")
    json.dump({"orgs": orgs, "events": int(n_events), "now": int(time.time())}, open(state_file, "w"))
    print(f"created {len(orgs)} orgs in {time.time() - t0:.1f} s")


def storm(state_file, secret, kill_pid, kill_after, ports):
    _, events = load(state_file)
    targets = [("127.0.0.1", int(p)) for p in ports]
    victim = targets[-1]
    kill_at = int(float(kill_after) * events.count)
    killed = {}

    def stop_target(host, port):
        return (host, port) in killed

    def on_answer(answered):
        if not killed and answered >= kill_at:
            os.kill(int(kill_pid), signal.SIGKILL)
            killed[victim] = answered
            print(f"SIGKILLed the server on port {victim[1]} after {answered} answers")

    async def run():
        return await post_all(targets, shuffled(events, 1), CONNS, secret, stop_target, on_answer)

    results, elapsed = asyncio.run(run())
    ok = sum(1 for s, _ in results.values() if s == 200)
    other = {s for s, _ in results.values() if s != 200}
    print(f"storm: {events.count} events, {len(results)} answered ({ok} 200, other statuses {sorted(other)}), "
          f"{events.count - len(results)} unanswered (in flight at the kill, or not sent), in {elapsed:.1f} s "
          f"({len(results) / elapsed:.0f} answers/s)")
    if not killed:
        print("FAIL: the storm ended before the kill point; nothing was proved")
        sys.exit(1)


def query(database_url, sql):
    if database_url.startswith("postgres"):
        out = subprocess.run(["psql", "-X", "-At", "-F", "\t", "-d", database_url, "-c", sql],
                             check=True, capture_output=True, text=True).stdout
        return [tuple(line.split("\t")) for line in out.splitlines() if line]
    path = database_url.removeprefix("sqlite://").split("?")[0]
    con = sqlite3.connect(path)
    try:
        return [tuple(str(v) for v in row) for row in con.execute(sql).fetchall()]
    finally:
        con.close()


def redeliver(state_file, secret, database_url, ports):
    _, events = load(state_file)
    targets = [("127.0.0.1", int(p)) for p in ports]
    results, elapsed = asyncio.run(post_all(targets, shuffled(events, 2), CONNS, secret))
    not_ok = [(k, s) for k, (s, _) in results.items() if s != 200]
    unanswered = events.count - len(results)
    first = sum(1 for _, b in results.values() if b'"duplicate":false' in b)
    print(f"redelivery: {events.count} events to {len(targets)} server(s) in {elapsed:.1f} s: "
          f"{len(not_ok)} non-200, {unanswered} unanswered, {first} first deliveries "
          f"(lost in the storm), {len(results) - first} duplicates")

    q = lambda sql: query(database_url, sql)
    stored = int(q("SELECT COUNT(*) FROM provider_events WHERE provider = 'stripe'")[0][0])
    distinct = int(q("SELECT COUNT(DISTINCT event_id) FROM provider_events WHERE provider = 'stripe'")[0][0])
    by_status = dict(q("SELECT status, COUNT(*) FROM provider_events GROUP BY status"))
    by_outcome = dict(q("SELECT COALESCE(outcome, '-'), COUNT(*) FROM provider_events GROUP BY outcome"))
    subs = int(q("SELECT COUNT(*) FROM subscriptions")[0][0])
    created = int(q("SELECT COUNT(*) FROM events WHERE type = 'subscription.created'")[0][0])
    rows = q("SELECT org_id, quantity, CASE WHEN cancel_at_period_end THEN 1 ELSE 0 END, observed_at "
             "FROM subscriptions")
    actual = {org: (int(qty), cancel == "1", int(obs)) for org, qty, cancel, obs in rows}
    expected = events.expected_final()
    wrong = [org for org in expected if actual.get(org) != expected[org]]
    print(f"provider_events: {stored} stored ({distinct} distinct) of {events.count}; by status {by_status}; "
          f"by outcome {by_outcome}")
    print(f"subscriptions: {subs} for {len(expected)} orgs; subscription.created audit events: {created}; "
          f"orgs whose final state is not their newest event's: {len(wrong)}"
          + (f" (e.g. {wrong[0]}: {actual.get(wrong[0])} != {expected[wrong[0]]})" if wrong else ""))
    problems = []
    if not_ok or unanswered:
        problems.append(f"{len(not_ok)} redeliveries not 200, {unanswered} unanswered")
    if stored != events.count or distinct != events.count:
        problems.append(f"{stored} events stored ({distinct} distinct) for {events.count} sent")
    if set(by_status) - {"applied"}:
        problems.append(f"events not applied: {by_status}")
    if subs != len(expected) or created != len(expected):
        problems.append(f"{subs} subscriptions and {created} subscription.created for {len(expected)} orgs")
    if wrong:
        problems.append(f"{len(wrong)} orgs not at their newest event's state")
    if problems:
        print("FAIL: " + "; ".join(problems))
        sys.exit(1)
    return stored, len(expected)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "setup":
        setup(*args)
    elif cmd == "storm":
        storm(args[0], args[1], args[2], args[3], args[4:])
    elif cmd == "redeliver":
        stored, orgs = redeliver(args[0], args[1], args[2], args[3:])
        print(f"__OK__ {stored} {orgs}")
    else:
        sys.exit(f"unknown command {cmd}")
