"""The probe and the verdict of db-outage.sh.

  db_outage_probe.py BASE SERVER_PID PROXY_PID KEY ORG
  (env: CUT_SECS, STATEMENT_TIMEOUT_MS, RECOVER_LIMIT_SECS)

Four keep-alive connections send, in turn, a resource create (a write), the
members list and the resource list (reads that need the database), and
/healthz (which doesn't): 2 s before the outage, CUT_SECS during it (SIGUSR1
to the proxy), then until RECOVER_LIMIT_SECS after it ends (SIGUSR2).

The verdict: before the outage everything is 2xx; during it every answer of
a database route is 2xx or `503 unavailable` with Retry-After (no 500, no
other error), at least one is 503, none takes longer than the statement
timeout plus a second, and /healthz stays 200; the process never exits;
after the outage a write is 2xx again within RECOVER_LIMIT_SECS, and every
request sent after that first recovered write is 2xx.
"""
import asyncio
import json
import os
import signal
import sys
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stripe_events import read_response  # noqa: E402

base, server_pid, proxy_pid, key, org = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
cut_secs = float(os.environ.get("CUT_SECS", "10"))
statement_timeout = float(os.environ.get("STATEMENT_TIMEOUT_MS", "5000")) / 1000
recover_limit = float(os.environ.get("RECOVER_LIMIT_SECS", "5"))
host, port = urlparse(base).hostname, urlparse(base).port

ROUTES = [
    ("write", "POST", f"/v1/orgs/{org}/resources", b'{"type":"customers","name":"c"}'),
    ("members", "GET", f"/v1/orgs/{org}/members", None),
    ("resources", "GET", f"/v1/orgs/{org}/resources?type=customers&limit=5", None),
    ("healthz", "GET", "/healthz", None),
]
records = []  # (route, sent, seconds, status, code, retry_after)
stop = False
messages = {}  # (route, status, code) -> the first such answer's body


def raw(method, path, body):
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nauthorization: Bearer {key}\r\n"
    if body is not None:
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return (head + "\r\n").encode() + (body or b"")


async def prober(offset):
    n = offset
    reader = writer = None
    while not stop:
        route, method, path, body = ROUTES[n % len(ROUTES)]
        n += 1
        sent = time.monotonic()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(raw(method, path, body))
            status, headers, payload = await asyncio.wait_for(read_response(reader), 60)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            records.append((route, sent, time.monotonic() - sent, None, type(e).__name__, None))
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.05)
            continue
        code = None
        if status >= 400:
            try:
                code = json.loads(payload)["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "?"
            messages.setdefault((route, status, code), payload[:300].decode(errors="replace"))
        records.append((route, sent, time.monotonic() - sent, status, code, headers.get("retry-after")))
        if headers.get("connection", "").lower() == "close":
            writer.close()
            reader = writer = None
        await asyncio.sleep(0.02)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


async def main():
    global stop
    tasks = [asyncio.ensure_future(prober(i)) for i in range(4)]
    await asyncio.sleep(2)
    t1 = time.monotonic()
    os.kill(proxy_pid, signal.SIGUSR1)
    died = False
    while time.monotonic() - t1 < cut_secs:
        died = died or not alive(server_pid)
        await asyncio.sleep(0.1)
    t2 = time.monotonic()
    os.kill(proxy_pid, signal.SIGUSR2)
    while time.monotonic() - t2 < recover_limit + 3:
        died = died or not alive(server_pid)
        await asyncio.sleep(0.1)
    stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    return t1, t2, died


t1, t2, died = asyncio.run(main())
ok = lambda r: r[3] is not None and 200 <= r[3] < 300
# A request answered before the cut is "before"; one in flight when it came
# is "during" (the cut may reset its statement).
before = [r for r in records if r[1] + r[2] < t1]
during = [r for r in records if r[1] + r[2] >= t1 and r[1] < t2]
after = [r for r in records if r[1] >= t2]
db_during = [r for r in during if r[0] != "healthz"]
unavailable = [r for r in db_during if r[3] == 503 and r[4] == "unavailable"]
bad_during = [r for r in db_during if not ok(r) and not (r[3] == 503 and r[4] == "unavailable" and r[5])]
slow = [r for r in db_during if r[2] > statement_timeout + 1]
health_bad = [r for r in during if r[0] == "healthz" and not ok(r)]
writes_after = [r for r in after if r[0] == "write" and ok(r)]
recovered_at = min((r[1] + r[2] for r in writes_after), default=None)
after_recovery = [r for r in after if recovered_at is not None and r[1] >= recovered_at]
bad_after = [r for r in after_recovery if not ok(r)]
latencies = sorted(r[2] for r in db_during)
p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0

print(f"before the outage: {len(before)} requests, {sum(1 for r in before if not ok(r))} not 2xx "
      f"{[messages.get(k, k) for k in sorted({(r[0], r[3], r[4]) for r in before if not ok(r)}, key=str)]}")
print(f"during the {cut_secs:.0f} s outage: {len(db_during)} database-route requests: {len(unavailable)} "
      f"503 unavailable, {sum(1 for r in db_during if ok(r))} 2xx, {len(bad_during)} other "
      f"{sorted({(r[3], r[4]) for r in bad_during}, key=str)}; latency p50 {p(0.5):.2f} s, max "
      f"{latencies[-1] if latencies else 0:.2f} s (statement timeout {statement_timeout:.0f} s); "
      f"/healthz {sum(1 for r in during if r[0] == 'healthz')} requests, {len(health_bad)} not 200")
rec = "never" if recovered_at is None else f"{recovered_at - t2:.2f} s"
print(f"after the outage: first write 2xx {rec} after it ended; {len(after_recovery)} requests after that, "
      f"{len(bad_after)} not 2xx; the process {'EXITED' if died else 'stayed up'}")

problems = []
if any(not ok(r) for r in before):
    problems.append("errors before the outage")
if not unavailable:
    problems.append("no 503 during the outage (was it cut?)")
if bad_during:
    problems.append(f"{len(bad_during)} answers during the outage neither 2xx nor 503 unavailable with Retry-After")
if slow:
    problems.append(f"{len(slow)} answers slower than the statement timeout + 1 s")
if health_bad:
    problems.append("/healthz failed during the outage")
if died:
    problems.append("the process exited")
if recovered_at is None or recovered_at - t2 > recover_limit:
    problems.append(f"no recovery within {recover_limit:.0f} s")
if bad_after:
    problems.append(f"{len(bad_after)} errors after recovery")
summary = (f"{len(unavailable)} × 503 unavailable during the cut, slowest {latencies[-1] if latencies else 0:.2f} s, "
           f"writes 2xx again {rec} after it ended, process up")
print(("FAIL: " + "; ".join(problems)) if problems else f"__OK__ {summary}")
sys.exit(1 if problems else 0)
