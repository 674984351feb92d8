"""A webhook receiver for orgplane's tests: verifies every delivery with the
`standardwebhooks` package (the reference Python implementation of Standard
Webhooks, independent of orgplane's signing code) and records what it got.

    python webhook_receiver.py        # prints "PORT <n>" once listening on 127.0.0.1

Deliveries: POST /hook/<name>. Each is checked against every secret
registered for <name>, one by one (so that a test sees which of an old and a
new secret verify during a rotation), and answered with the next status
scripted for <name> (default 200; a 3xx carries `Location: /hook/<name>-moved`;
a delivery no secret verifies is answered 400).

Control (JSON):
    POST /control/secrets/<name>   ["whsec_…", …]   replaces <name>'s secrets
    POST /control/script/<name>    [500, 500]       the next answers for <name>
    POST /control/fail/<name>      500 (or null)    answer every delivery so, until null
    POST /control/delay/<name>     5                seconds to wait before answering <name>
    GET  /control/received                          every delivery, in order
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

LOCK = threading.Lock()
SECRETS = {}
SCRIPTS = {}
FAILING = {}
DELAYS = {}
RECEIVED = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm
    # and the client's delayed ACK hold every answer ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length)

    def do_GET(self):
        if self.path == "/control/received":
            with LOCK:
                body = json.dumps(RECEIVED).encode()
            self.answer(200, body)
        else:
            self.answer(404)

    def do_POST(self):
        body = self.read_body()
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "control":
            value = json.loads(body)
            with LOCK:
                if parts[1] == "secrets":
                    SECRETS[parts[2]] = value
                elif parts[1] == "script":
                    SCRIPTS.setdefault(parts[2], []).extend(value)
                elif parts[1] == "fail":
                    FAILING[parts[2]] = value
                elif parts[1] == "delay":
                    DELAYS[parts[2]] = value
            self.answer(200, b"{}")
            return
        if len(parts) != 2 or parts[0] != "hook":
            self.answer(404)
            return
        name = parts[1]
        with LOCK:
            delay = DELAYS.get(name) or 0
        if delay:
            time.sleep(delay)
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            secrets = list(SECRETS.get(name, []))
        verified = []
        errors = []
        for secret in secrets:
            try:
                Webhook(secret).verify(body, headers)
                verified.append(True)
            except WebhookVerificationError as e:
                verified.append(False)
                errors.append(str(e))
        with LOCK:
            script = SCRIPTS.get(name) or []
            status = script.pop(0) if script else 200
            if FAILING.get(name):
                status = FAILING[name]
            if not any(verified):
                status = 400
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            RECEIVED.append({
                "name": name,
                "webhook_id": headers.get("webhook-id"),
                "webhook_timestamp": headers.get("webhook-timestamp"),
                "signatures": len((headers.get("webhook-signature") or "").split(" ")),
                "content_type": headers.get("content-type"),
                "user_agent": headers.get("user-agent"),
                "verified": verified,
                "errors": errors,
                "answered": status,
                "received_at": time.time(),
                "body": payload,
            })
        extra = [("location", f"/hook/{name}-moved")] if 300 <= status < 400 else []
        self.answer(status, json.dumps({"answered": status}).encode(), extra)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
