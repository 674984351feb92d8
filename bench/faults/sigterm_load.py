"""The load and the verdict of sigterm-under-load.sh.

  sigterm_load.py BASE PID KEY ORG… (env: CONNECTIONS, LOAD_SECS, GRACE_SECS)

CONNECTIONS keep-alive connections each send, one at a time, in turn: a
resource create (write), the org's entitlements (read) and its resources
list (read), on orgs taken in turn, with an API key. After LOAD_SECS the
script SIGTERMs PID (time T) and the connections go on until the server
closes them. A connection whose response says `connection: close`, or that
the server closes, connects again; a connect refused after T ends it.

A request counts as accepted if its bytes were written before T, or if it
got any response: every accepted request must get a complete 2xx. A request
written after T on a keep-alive connection that the server closed without
any byte of response was not accepted (HTTP/1.1 lets a server close an idle
connection; a client retries such a request on a new connection), and a
connect refused after T is a new connection refused: both are counted and
allowed. The process must then exit with status 0 within GRACE_SECS of T.
"""
import asyncio
import os
import signal
import sys
import time

from urllib.parse import urlparse

base, pid, key, orgs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
conns = int(os.environ.get("CONNECTIONS", "64"))
load_secs = float(os.environ.get("LOAD_SECS", "3"))
grace = float(os.environ.get("GRACE_SECS", "10"))
host, port = urlparse(base).hostname, urlparse(base).port

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stripe_events import read_response  # noqa: E402


def request(n):
    org = orgs[n % len(orgs)]
    auth = f"authorization: Bearer {key}\r\n"
    kind = n % 3
    if kind == 0:
        body = b'{"type":"customers","name":"c"}'
        head = (f"POST /v1/orgs/{org}/resources HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n")
        return "write", head.encode() + body
    path = f"/v1/orgs/{org}/entitlements" if kind == 1 else f"/v1/orgs/{org}/resources?type=customers&limit=5"
    return "read", f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode()


T = None
records = []  # (kind, written_at, outcome, status)
refused_after = 0
refused_before = 0
counter = iter(range(10**9))


async def connection():
    global refused_after, refused_before
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            if T is not None:
                refused_after += 1
                return
            refused_before += 1
            await asyncio.sleep(0.01)
            continue
        try:
            while True:
                kind, raw = request(next(counter))
                written_at = time.monotonic()
                try:
                    writer.write(raw)
                    await writer.drain()
                except OSError:
                    records.append((kind, written_at, "closed_unanswered", None))
                    break
                try:
                    first = await asyncio.wait_for(reader.readline(), grace + 5)
                except (OSError, ConnectionError):
                    first = b""
                except asyncio.TimeoutError:
                    records.append((kind, written_at, "timeout", None))
                    break
                if not first:
                    # Not one byte of a response: the server closed the connection.
                    records.append((kind, written_at, "closed_unanswered", None))
                    break
                try:
                    status, headers, _ = await asyncio.wait_for(read_response(reader, first), grace + 5)
                except (OSError, ConnectionError, asyncio.IncompleteReadError):
                    records.append((kind, written_at, "broken", None))
                    break
                except asyncio.TimeoutError:
                    records.append((kind, written_at, "timeout", None))
                    break
                records.append((kind, written_at, "answered", status))
                if headers.get("connection", "").lower() == "close":
                    break
        finally:
            writer.close()
        if T is not None and time.monotonic() - T > grace + 5:
            return


def exited(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def main():
    global T
    tasks = [asyncio.ensure_future(connection()) for _ in range(conns)]
    await asyncio.sleep(load_secs)
    T = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    exit_at = None
    while time.monotonic() - T < grace + 5:
        if exit_at is None and exited(pid):
            exit_at = time.monotonic()
        if exit_at is not None and all(t.done() for t in tasks):
            break
        await asyncio.sleep(0.005)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return exit_at


exit_at = asyncio.run(main())
before = [r for r in records if r[1] < T]
after = [r for r in records if r[1] >= T]
accepted = before + [r for r in after if r[2] != "closed_unanswered"]
failed = [r for r in accepted if not (r[2] == "answered" and 200 <= r[3] < 300)]
ok_before = sum(1 for r in before if r[2] == "answered" and 200 <= r[3] < 300)
writes = sum(1 for r in accepted if r[0] == "write" and r[2] == "answered" and 200 <= r[3] < 300)
unaccepted = sum(1 for r in after if r[2] == "closed_unanswered")
load_rate = ok_before / load_secs
print(f"load: {conns} connections, {len(before)} requests written before SIGTERM ({load_rate:.0f} req/s), "
      f"{len(after)} after it; {writes} resource creates answered 2xx")
print(f"after SIGTERM: {len(after) - unaccepted} answered on open connections, {unaccepted} not accepted "
      f"(keep-alive connection closed with no byte of response), {refused_after} new connections refused"
      + (f"; {refused_before} connects refused before SIGTERM" if refused_before else ""))
kinds = {}
for r in failed:
    kinds[(r[2], r[3], "before" if r[1] < T else "after")] = kinds.get((r[2], r[3], "before" if r[1] < T else "after"), 0) + 1
if failed:
    print(f"failed accepted requests by (outcome, status, written SIGTERM): {kinds}")
exit_secs = None if exit_at is None else exit_at - T
print(f"the process exited {'%.2f s' % exit_secs if exit_secs is not None else 'not at all'} after SIGTERM "
      f"(grace {grace:.0f} s)")
print(f"__RESULT__ {len(accepted)} {len(failed)} {exit_secs if exit_secs is not None else -1}")
