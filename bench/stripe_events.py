"""Signed Stripe subscription events and a small keep-alive HTTP/1.1 client,
shared by bench/webhooks.sh and the Stripe storms under bench/faults/.

Each org gets a run of `customer.subscription.*` events for one subscription
(`sub_bench_{n}`), event `seq` created `seq` seconds after the first, with a
quantity of `1 + seq` and `cancel_at_period_end` alternating, so the newest
event of an org fixes its final state exactly: `expected_final` tells it.
Signing happens just before sending (Stripe's tolerance is 5 minutes).
Traffic goes to 127.0.0.1 only (the callers' base URLs).
"""
import asyncio
import hashlib
import hmac
import json
import time
import urllib.request

OBJECTS = "tests/api/fixtures/stripe/objects.json"


def call(base, method, path, body=None, token=None, timeout=10):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def create_orgs(base, n, name="Bench Clinic"):
    token = call(base, "POST", "/dev/token", {"email": "bench@example.com", "name": "Bench"})["token"]
    return [call(base, "POST", "/v1/orgs", {"name": f"{name} {i}"}, token)["id"] for i in range(n)]


class Events:
    """`count` events spread over `orgs` in turn: event i is seq i // len(orgs) of org i % len(orgs)."""

    def __init__(self, orgs, count, price, now=None):
        self.orgs, self.count, self.price = orgs, count, price
        self.now = int(time.time()) if now is None else now
        self.template = json.load(open(OBJECTS))["resources"]["subscription"]
        self.bodies = [self._body(i) for i in range(count)]

    def seq(self, i):
        return i // len(self.orgs)

    def _body(self, i):
        org_n, seq = i % len(self.orgs), self.seq(i)
        sub = json.loads(json.dumps(self.template))
        sub.update(id=f"sub_bench_{org_n}", customer=f"cus_bench_{org_n}", status="active",
                   metadata={"org_id": self.orgs[org_n]}, cancel_at_period_end=seq % 2 == 1, cancel_at=None,
                   trial_end=None)
        item = sub["items"]["data"][0]
        item.update(id=f"si_bench_{org_n}", quantity=1 + seq, current_period_end=self.now + 30 * 86400)
        item["price"]["id"] = self.price
        kind = "customer.subscription.created" if seq == 0 else "customer.subscription.updated"
        return json.dumps({"id": f"evt_bench_{i}", "object": "event", "api_version": "2025-03-31.basil",
                           "created": self.now - 3600 + seq, "type": kind, "data": {"object": sub}},
                          separators=(",", ":")).encode()

    def expected_final(self):
        """org id -> (quantity, cancel_at_period_end, observed_at in ms) of its newest event."""
        final = {}
        for i in range(self.count):
            org, seq = self.orgs[i % len(self.orgs)], self.seq(i)
            final[org] = (1 + seq, seq % 2 == 1, (self.now - 3600 + seq) * 1000)
        return final


def signed(body, secret, host, port):
    t = int(time.time())
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    head = (f"POST /v1/webhooks/stripe HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"stripe-signature: t={t},v1={sig}\r\ncontent-length: {len(body)}\r\n\r\n").encode()
    return head + body


async def read_response(reader, status_line=None):
    """(status, headers, body) of one response (its status line already read,
    if given); raises on a closed or broken connection."""
    status_line = status_line if status_line is not None else await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before a response")
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def post_all(targets, items, conns_per_target, secret, stop_target=None, on_answer=None):
    """Posts every (key, body) of `items` (a shared queue) over `conns_per_target`
    keep-alive connections to each (host, port) in `targets`, signing each just
    before it goes. Returns (results, seconds): results maps key -> (status, body)
    for each delivery that got an answer; a delivery whose connection broke gets
    no entry (the provider would deliver it again), and that connection stops.
    `stop_target(host, port)` true means: stop sending to that target;
    `on_answer(count)` is called after each answer with the count so far."""
    queue = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    results = {}

    async def worker(host, port):
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            return
        try:
            while not (stop_target and stop_target(host, port)):
                try:
                    key, body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                writer.write(signed(body, secret, host, port))
                try:
                    status, _, payload = await asyncio.wait_for(read_response(reader), 30)
                except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                    return
                results[key] = (status, payload)
                if on_answer:
                    on_answer(len(results))
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(h, p) for h, p in targets for _ in range(conns_per_target)))
    return results, time.perf_counter() - started
