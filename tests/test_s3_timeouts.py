"""Every control-plane S3 call is bounded: an endpoint that accepts connections and never answers gives
a one-line error naming it, not a hang (botocore's defaults waited minutes per call)."""

import contextlib
import socket
import threading
from collections.abc import Iterator

from tests.conftest import run_cli


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """A server on 127.0.0.1 that accepts every connection and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


def test_a_silent_endpoint_ends_a_command_with_one_line_naming_it():
    with silent_endpoint() as endpoint:
        environment = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        for command in (("status", "--local"), ("weights", "pull", "w:1")):
            # the bound only stops a hang from stalling the suite; the control plane answers well within it
            result = run_cli(*command, "--storage", "s3://bucket/seco", environment=environment, timeout=150)
            assert result.returncode == 2, (command, result.stderr[-2000:])
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert result.stderr.startswith("error: storage s3://bucket/seco: ") and endpoint in result.stderr, (
                result.stderr
            )
