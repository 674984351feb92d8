#!/usr/bin/env bash
# Outgoing webhooks: commit-to-receipt latency and delivery throughput.
#
#   bench/webhooks-out.sh                       # 10000 changes, 16 connections, 30 s outage
#   CHANGES=2000 OUTAGE_SECS=0 bench/webhooks-out.sh
#   PROFILE=debug bench/webhooks-out.sh         # the debug build (no release build needed)
#   ORGPLANE_WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT=8 bench/webhooks-out.sh   # order traded for throughput
#
# Starts orgplane with --dev on 127.0.0.1 (SQLite in a temp dir) and a local
# receiver (Python, answers 204 at once, appends `webhook-id received_at` to
# a file) with one endpoint for every event. Then:
#
#  1. CHANGES org renames over CONNECTIONS keep-alive connections (a small
#     asyncio client), while a thread probes /healthz every 20 ms. Reported:
#     changes/s, deliveries/s (first change to last receipt), the p50/p99
#     from commit to receipt (the event's created_at to the receiver's
#     clock), and /healthz p50/p99 during the run.
#  2. The receiver is stopped, OUTAGE_CHANGES more renames are made, and
#     after OUTAGE_SECS it starts again on the same port. Reported: whether
#     every event arrived, and how long after the restart the last did
#     (retries here follow [webhooks] retry_schedule_secs = [5, 10, 20, 30, 60]),
#     and the rate at which the backlog drained: delivery capacity, which
#     phase 1 can't show once deliveries keep up with the changes.
#
# Bounded: every step has a timeout; both processes are killed on exit.
# Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

CHANGES=${CHANGES:-10000}
ORGS=${ORGS:-50}
CONNECTIONS=${CONNECTIONS:-16}
OUTAGE_SECS=${OUTAGE_SECS:-30}
OUTAGE_CHANGES=${OUTAGE_CHANGES:-2000}
PROFILE=${PROFILE:-release}
PORT=${PORT:-18491}
RECEIVER_PORT=${RECEIVER_PORT:-18492}
BASE="http://127.0.0.1:$PORT"

command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 1; }
if [ "$PROFILE" = release ]; then
  timeout 1800 cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/orgplane
else
  timeout 1800 cargo build --quiet
  BIN=${CARGO_TARGET_DIR:-target}/debug/orgplane
fi

DATA=$(mktemp -d)
SERVER=
RECEIVER=
cleanup() {
  set +e
  if [ -n "$RECEIVER" ]; then kill "$RECEIVER" 2>/dev/null; wait "$RECEIVER" 2>/dev/null; fi
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; fi
  rm -rf "$DATA"
  exit "${STATUS:-0}"
}
trap 'STATUS=$?; cleanup' EXIT

cat >"$DATA/receiver.py" <<'PY'
import sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
out = open(sys.argv[2], "a", buffering=1)
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        at = time.time()
        with lock:
            out.write(f"{self.headers.get('webhook-id')} {at:.6f}\n")
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()
s = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
s.daemon_threads = True
s.serve_forever()
PY
start_receiver() {
  python3 "$DATA/receiver.py" "$RECEIVER_PORT" "$DATA/received.txt" &
  RECEIVER=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$RECEIVER_PORT/" && return; sleep 0.05; done
  echo "receiver did not start" >&2; exit 1
}
start_receiver

cat >"$DATA/orgplane.toml" <<EOF
[webhooks]
retry_schedule_secs = [5, 10, 20, 30, 60]
EOF
export ORGPLANE_DATA_DIR="$DATA"
export ORGPLANE_LOG=error
# Far more changes per second than [limits] lets one user make.
export ORGPLANE_LIMITS_RATE_PER_SECOND=1000000000 ORGPLANE_LIMITS_RATE_BURST=1000000000
if curl -sf "$BASE/healthz" >/dev/null 2>&1; then echo "port $PORT is taken; set PORT=" >&2; exit 1; fi
"$BIN" serve --dev --config "$DATA/orgplane.toml" --listen "127.0.0.1:$PORT" &
SERVER=$!
for _ in $(seq 1 200); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$BASE/healthz" >/dev/null || { echo "server did not start" >&2; exit 1; }
kill -0 "$SERVER" 2>/dev/null || { echo "server exited (is port $PORT taken?)" >&2; exit 1; }
KEY=$("$BIN" keys create --name bench)

export BENCH_BASE="$BASE" BENCH_KEY="$KEY" BENCH_DB="$DATA/orgplane.db" BENCH_RECEIVED="$DATA/received.txt"
export BENCH_HOOK="http://127.0.0.1:$RECEIVER_PORT/hook"

# The client: setup, the load, and the reading of what arrived.
cat >"$DATA/client.py" <<'PY'
import asyncio, json, os, sqlite3, sys, threading, time, urllib.request

base, key, db, received = os.environ["BENCH_BASE"], os.environ["BENCH_KEY"], os.environ["BENCH_DB"], os.environ["BENCH_RECEIVED"]
host, port = base.removeprefix("http://").split(":")

def call(method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)

async def renames(token, orgs, n, conns, tag):
    queue = asyncio.Queue()
    for i in range(n):
        body = json.dumps({"name": f"Clinic {tag} {i}"}).encode()
        org = orgs[i % len(orgs)]
        queue.put_nowait((f"PATCH /v1/orgs/{org} HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: application/json\r\n"
                          f"authorization: Bearer {token}\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body)
    bad = []
    async def worker():
        reader, writer = await asyncio.open_connection(host, int(port))
        while True:
            try:
                request = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if status != 200:
                bad.append(status)
        writer.close()
    started = time.time()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return started, time.time() - started, bad

def arrived():
    seen = {}
    with open(received) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                seen.setdefault(parts[0], []).append(float(parts[1]))
    return seen

def events_after(seq):
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, created_at, seq FROM events WHERE seq > ? ORDER BY seq", (seq,)).fetchall()
    con.close()
    return rows

def wait_all(ids, limit):
    deadline = time.time() + limit
    while time.time() < deadline:
        seen = arrived()
        if all(i in seen for i in ids):
            return seen
        time.sleep(0.05)
    return arrived()

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")

phase = sys.argv[1]
if phase == "setup":
    token = call("POST", "/dev/token", {"email": "bench@example.com", "name": "Bench"})["token"]
    orgs = [call("POST", "/v1/orgs", {"name": f"Bench Clinic {i}"}, token)["id"] for i in range(int(os.environ["ORGS"]))]
    call("POST", "/v1/webhook_endpoints", {"url": os.environ["BENCH_HOOK"]}, key)
    con = sqlite3.connect(db)
    start = con.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    con.close()
    print(json.dumps({"token": token, "orgs": orgs, "seq": start}))
elif phase == "load":
    setup = json.loads(sys.argv[2])
    n, conns = int(os.environ["CHANGES"]), int(os.environ["CONNECTIONS"])
    probes, stop = [], threading.Event()
    def probe():
        while not stop.is_set():
            t = time.perf_counter()
            urllib.request.urlopen(base + "/healthz", timeout=10).read()
            probes.append(time.perf_counter() - t)
            time.sleep(0.02)
    prober = threading.Thread(target=probe)
    prober.start()
    started, elapsed, bad = asyncio.run(renames(setup["token"], setup["orgs"], n, conns, "a"))
    events = events_after(setup["seq"])
    seen = wait_all([e[0] for e in events], 300)
    stop.set()
    prober.join()
    missing = [e[0] for e in events if e[0] not in seen]
    latencies = [seen[e[0]][0] - e[1] / 1000 for e in events if e[0] in seen]
    last = max((seen[e[0]][0] for e in events if e[0] in seen), default=started)
    dups = sum(len(seen[e[0]]) - 1 for e in events if e[0] in seen)
    print(f"changes: {n} renames over {conns} connections in {elapsed:.2f} s = {n / elapsed:.0f} changes/s ({len(bad)} non-200)")
    print(f"deliveries: {len(events) - len(missing)} of {len(events)} events arrived, first change to last receipt "
          f"{last - started:.2f} s = {(len(events) - len(missing)) / (last - started):.0f} deliveries/s; {dups} duplicates")
    print(f"commit to receipt: p50 {pct(latencies, 0.5) * 1000:.0f} ms, p99 {pct(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    print(f"/healthz during the run: {len(probes)} probes, p50 {pct(probes, 0.5) * 1000:.1f} ms, p99 {pct(probes, 0.99) * 1000:.1f} ms")
    print(json.dumps({"seq": events[-1][2] if events else setup["seq"]}), file=sys.stderr)
elif phase == "outage-load":
    setup = json.loads(sys.argv[2])
    n = int(os.environ["OUTAGE_CHANGES"])
    started, elapsed, bad = asyncio.run(renames(setup["token"], setup["orgs"], n, int(os.environ["CONNECTIONS"]), "b"))
    print(f"outage: {n} renames in {elapsed:.2f} s with the receiver down ({len(bad)} non-200)")
elif phase == "outage-wait":
    seq, back_at = int(sys.argv[2]), float(sys.argv[3])
    events = events_after(seq)
    seen = wait_all([e[0] for e in events], 600)
    missing = [e[0] for e in events if e[0] not in seen]
    last = max((max(seen[e[0]]) for e in events if e[0] in seen), default=back_at)
    firsts = [min(t for t in seen[e[0]] if t >= back_at) for e in events if e[0] in seen and any(t >= back_at for t in seen[e[0]])]
    print(f"outage: {len(events) - len(missing)} of {len(events)} events arrived after the receiver came back; "
          f"the last {last - back_at:.1f} s after it")
    if len(firsts) > 1:
        span = max(firsts) - min(firsts)
        print(f"outage: the backlog drained at {len(firsts) / span:.0f} deliveries/s "
              f"({len(firsts)} deliveries in {span:.2f} s, from the first retry that went through)")
PY

export ORGS CHANGES CONNECTIONS OUTAGE_CHANGES
SETUP=$(timeout 120 python3 "$DATA/client.py" setup)
timeout 900 python3 "$DATA/client.py" load "$SETUP" 2>"$DATA/after.json"
if [ "$OUTAGE_SECS" -gt 0 ]; then
  SEQ=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seq"])' "$DATA/after.json")
  kill "$RECEIVER"; wait "$RECEIVER" 2>/dev/null || true; RECEIVER=
  DOWN_AT=$(date +%s.%N)
  timeout 300 python3 "$DATA/client.py" outage-load "$SETUP"
  LEFT=$(python3 -c "import time; print(max(0.0, $OUTAGE_SECS - (time.time() - $DOWN_AT)))")
  sleep "$LEFT"
  start_receiver
  BACK_AT=$(date +%s.%N)
  echo "receiver down for $(python3 -c "print(round($BACK_AT - $DOWN_AT, 1))") s"
  timeout 900 python3 "$DATA/client.py" outage-wait "$SEQ" "$BACK_AT"
fi
