"""`python -m jobs.localcloud.tokens [--host H] --port P --key K`: a SAS token service shaped like Planetary Computer's.

`GET /api/sas/v1/token/{account}/{container}` answers `{"msft:expiry": ..., "token": ...}` with a
container SAS token (`st`, `se`, `sp`, `sv`, `sr`, `sig`) that the COG server (cogserver.py, same
key) checks on every read: a missing, forged or expired token gets Azure Storage's 403. Tokens
expire `--lifetime-s` after issue; `--stated-lifetime-s` is what the answer claims, as when the
service hands out tokens that storage stops honouring early (PlanetaryComputer#418, #463).
`GET /__tokens__` tells how many were issued.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

TOKEN_PATH = "/api/sas/v1/token/"
SERVICE_VERSION = "2024-05-04"
STAMP = "%Y-%m-%dT%H:%M:%SZ"


def _signature(key: str, account: str, container: str, start: str, expiry: str) -> str:
    to_sign = "\n".join(("rl", start, expiry, f"/blob/{account}/{container}", SERVICE_VERSION))
    return base64.b64encode(hmac.new(key.encode(), to_sign.encode(), hashlib.sha256).digest()).decode()


def issue(key: str, account: str, container: str, now: datetime, lifetime_s: float) -> str:
    """A container SAS token (query string) valid from a few minutes ago to `lifetime_s` from `now`."""
    start = (now - timedelta(minutes=5)).strftime(STAMP)
    expiry = (now + timedelta(seconds=lifetime_s)).strftime(STAMP)
    signature = _signature(key, account, container, start, expiry)
    return (
        f"st={quote(start, safe='')}&se={quote(expiry, safe='')}&sp=rl&sv={SERVICE_VERSION}&sr=c"
        f"&sig={quote(signature, safe='')}"
    )


def refusal(key: str, path: str, query: str, now: datetime) -> str | None:
    """Why storage refuses a read of `path` (`/{account}/{container}/...`) with this query; None if it does not."""
    fields = {name: values[0] for name, values in parse_qs(query).items()}
    parts = path.lstrip("/").split("/")
    if len(parts) < 3 or not {"st", "se", "sig"} <= fields.keys():
        return "NoAuthenticationInformation"
    expected = _signature(key, parts[0], parts[1], fields["st"], fields["se"])
    if not hmac.compare_digest(expected, fields["sig"]):
        return "AuthenticationFailed: Signature did not match"
    expiry = datetime.strptime(fields["se"], STAMP).replace(tzinfo=timezone.utc)
    if now >= expiry:
        return f"AuthenticationFailed: Signed expiry time [{fields['se']}] must be after signed start time and now"
    return None


def make_handler(key: str, lifetime_s: float, stated_lifetime_s: float) -> type[BaseHTTPRequestHandler]:
    issued = {"count": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = urlsplit(self.path).path
            if path == "/__tokens__":
                with lock:
                    self._send(200, {"issued": issued["count"]})
                return
            names = path.removeprefix(TOKEN_PATH).split("/") if path.startswith(TOKEN_PATH) else []
            if len(names) != 2 or not all(names):
                self._send(404, {"detail": "Not Found"})
                return
            now = datetime.now(timezone.utc)
            token = issue(key, names[0], names[1], now, lifetime_s)
            with lock:
                issued["count"] += 1
            stated = (now + timedelta(seconds=stated_lifetime_s)).strftime(STAMP)
            self._send(200, {"msft:expiry": stated, "token": token})

        def _send(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.localcloud.tokens")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True, help="the secret the COG server checks signatures with")
    parser.add_argument("--lifetime-s", type=float, default=2700.0, help="how long storage honours a token")
    parser.add_argument("--stated-lifetime-s", type=float, help="what msft:expiry claims (default: the lifetime)")
    args = parser.parse_args()
    stated = args.lifetime_s if args.stated_lifetime_s is None else args.stated_lifetime_s
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args.key, args.lifetime_s, stated))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
