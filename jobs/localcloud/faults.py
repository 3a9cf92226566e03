"""A forwarding HTTP proxy that adds latency and injects faults in front of a real server.

`python -m jobs.localcloud.faults --upstream 127.0.0.1:8081 [--host H] --port 9081 --latency-ms 50 --rules JSON`

It forwards every request as the client sent it, the Host header included (S3's SigV4 signs it),
bodies whole (Content-Length or chunked), Range and the answer's status, headers and body.

Rules are tried in order; a rule fires on requests whose path matches `path` (a regex), and whose
method is `method` when the rule names one, until it has fired `times` times:
`{"path": "B04", "action": "status", "status": 429, "retry_after": 1}` answers 429 with
Retry-After, `"action": "cut"` sends the upstream's headers and half its body, then drops the
connection. `"action": "reset"` reads the request and resets the connection (TCP RST) without
forwarding it; `"action": "stall"` holds the request `seconds` before forwarding it, as a store that
stops answering for a while. `"after": N` lets the first N matching requests through, so a burst
can come mid-run. `"action": "throttle"` is a rate limit rather than a fault: a token bucket of
`burst` requests refilled at `rate_per_s`; a request finding it empty gets `status` (and
Retry-After), as an API protecting itself from many clients does; it never stops firing.
`GET /__faults__` tells how many requests passed and what fired.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


class FaultState:
    def __init__(self, rules: list[dict[str, Any]]) -> None:
        self.rules = [
            {
                **rule,
                "pattern": re.compile(rule["path"]),
                "fired": 0,
                "seen": 0,
                "tokens": float(rule.get("burst", 1)),
                "filled_at": time.monotonic(),
            }
            for rule in rules
        ]
        self.requests = 0
        self.lock = threading.Lock()

    def take(self, method: str, path: str) -> dict[str, Any] | None:
        with self.lock:
            self.requests += 1
            for rule in self.rules:
                if method == "HEAD" and rule["action"] == "cut":
                    continue  # a HEAD has no body to cut
                if not rule["pattern"].search(path) or rule.get("method", method) != method:
                    continue
                if rule["action"] == "throttle":
                    if self._bucket_empty(rule):
                        rule["fired"] += 1
                        return rule
                    continue
                rule["seen"] += 1
                if rule["seen"] > rule.get("after", 0) and rule["fired"] < rule.get("times", 1):
                    rule["fired"] += 1
                    return rule
        return None

    @staticmethod
    def _bucket_empty(rule: dict[str, Any]) -> bool:
        now = time.monotonic()
        rule["tokens"] = min(float(rule["burst"]), rule["tokens"] + (now - rule["filled_at"]) * rule["rate_per_s"])
        rule["filled_at"] = now
        if rule["tokens"] >= 1:
            rule["tokens"] -= 1
            return False
        return True

    def report(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "rules": [
                    {
                        "path": r["path"],
                        "method": r.get("method"),
                        "action": r["action"],
                        "fired": r["fired"],
                        "seen": r["seen"],
                    }
                    for r in self.rules
                ],
            }


def make_handler(upstream: tuple[str, int], latency_s: float, state: FaultState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def _body(self) -> bytes | None:
            """The request's body whole: by Content-Length, or de-chunked (forwarded with a Content-Length)."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while size := int(self.rfile.readline().split(b";", 1)[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else None

        def _forward(self, body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
            # Host as the client sent it (SigV4 signs it); Expect was answered here already
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"expect"}}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            connection = http.client.HTTPConnection(*upstream, timeout=60)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                kept = [
                    (k, v)
                    for k, v in response.getheaders()
                    if k.lower() not in HOP_BY_HOP | {"content-length", "server", "date"}
                ]
                if self.command == "HEAD":  # no body, but the size the client asked about
                    kept.append(("Content-Length", response.getheader("Content-Length", "0")))
                return response.status, kept, payload
            finally:
                connection.close()

        def _answer(self) -> None:
            if self.path == "/__faults__":
                self._send(200, [("Content-Type", "application/json")], json.dumps(state.report()).encode())
                return
            time.sleep(latency_s)
            rule = state.take(self.command, self.path)
            body = self._body()
            if rule and rule["action"] == "reset":
                # closed at once with no linger: an RST, where a shutdown first would send a polite FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            if rule and rule["action"] == "stall":
                time.sleep(rule["seconds"])
            if rule and rule["action"] in ("status", "throttle"):
                extra = [("Retry-After", str(rule["retry_after"]))] if "retry_after" in rule else []
                self._send(rule["status"], [("Content-Type", "text/plain"), *extra], b"injected fault\n")
                return
            status, headers, payload = self._forward(body)
            if rule and rule["action"] == "cut":
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(status, headers, payload)

        def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            if self.command != "HEAD" or not any(key == "Content-Length" for key, _ in headers):
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _answer

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.localcloud.faults")
    parser.add_argument("--upstream", required=True, help="host:port of the real server")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rules", default="[]", help="JSON list of fault rules")
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    handler = make_handler((host, int(port)), args.latency_ms / 1000, FaultState(json.loads(args.rules)))
    server = ThreadingHTTPServer((args.host, args.port), handler, bind_and_activate=False)
    server.daemon_threads = True
    server.request_queue_size = 256  # http.server's backlog of 5 drops SYNs when GDAL opens many files at once
    server.server_bind()
    server.server_activate()
    server.serve_forever()


if __name__ == "__main__":
    main()
