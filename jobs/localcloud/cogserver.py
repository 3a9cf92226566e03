"""`python -m jobs.localcloud.cogserver --port P --directory D`: RangeHTTPServer's handler, wide backlog.

RangeHTTPServer's own `__main__` uses http.server's listen backlog of 5, and GDAL opening many
COGs at once overflows it (dropped SYNs cost a 1 s retransmit each): the handler is the same.
"""

from __future__ import annotations

import argparse
import functools
from http.server import ThreadingHTTPServer

from RangeHTTPServer import RangeRequestHandler


class WideBacklogServer(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


class QuietRangeRequestHandler(RangeRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.localcloud.cogserver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--directory", required=True)
    args = parser.parse_args()
    handler = functools.partial(QuietRangeRequestHandler, directory=args.directory)
    WideBacklogServer(("127.0.0.1", args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
