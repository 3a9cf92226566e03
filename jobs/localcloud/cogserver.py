"""`python -m jobs.localcloud.cogserver [--host H] --port P --directory D [--sas-key K]`: RangeHTTPServer's handler,
wide backlog.

RangeHTTPServer's own `__main__` uses http.server's listen backlog of 5, and GDAL opening many
COGs at once overflows it (dropped SYNs cost a 1 s retransmit each): the handler is the same.
With `--sas-key`, it is storage behind SAS tokens: a read without a valid, unexpired token from
the token service (tokens.py, same key) gets Azure Storage's 403 and its error body.
"""

from __future__ import annotations

import argparse
import functools
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

from RangeHTTPServer import RangeRequestHandler

from jobs.localcloud.tokens import refusal


class WideBacklogServer(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


class QuietRangeRequestHandler(RangeRequestHandler):
    sas_key: str | None = None

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def send_head(self):
        if self.sas_key:
            url = urlsplit(self.path)
            reason = refusal(self.sas_key, url.path, url.query, datetime.now(timezone.utc))
            if reason:
                code, _, message = reason.partition(": ")
                body = (
                    f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                    f"<Message>{message or code}</Message></Error>"
                ).encode()
                self.send_response(403, "Server failed to authenticate the request")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                return None
        return super().send_head()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.localcloud.cogserver")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--directory", required=True)
    parser.add_argument("--sas-key", help="refuse reads without a valid SAS token signed with this key")
    args = parser.parse_args()
    handler_class = type("Handler", (QuietRangeRequestHandler,), {"sas_key": args.sas_key})
    handler = functools.partial(handler_class, directory=args.directory)
    WideBacklogServer((args.host, args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
