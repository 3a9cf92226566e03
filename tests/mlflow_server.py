"""A real MLflow tracking server (`mlflow server`, sqlite backend) on 127.0.0.1, stopped afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jobs.localcloud.servers import free_port, wait_until_up


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """The server's URL. Its uvicorn workers are children of `mlflow server`: the whole session is stopped."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--default-artifact-root",
        (folder / "artifacts").as_uri(),
    ]
    with open(folder / "mlflow.log", "ab") as log:
        # No job runner: its worker pool serves features (scoring, trace archival) no test here uses.
        server = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        try:
            wait_until_up(f"{url}/health", server, timeout_s=300)
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def rest(url: str, path: str, body: dict[str, Any] | None = None, **query: str) -> dict[str, Any]:
    """One call of MLflow's REST API: a POST with `body`, else a GET with `query`."""
    address = f"{url}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(address, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
