"""The long-running servers a test cluster is made of (etcd, the API server, kubelet, Kueue...).

Each runs in a session of its own, so a stop reaches its children too, and logs to NAME.log in
one folder; a wait for readiness fails at once, with the log's tail, when any of them has exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ProcessGroup:
    def __init__(self, folder: Path, failure: type[Exception] = RuntimeError):
        self.folder = folder
        self.failure = failure
        self.running: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.folder / f"{name}.log", "ab") as log:  # the child holds its own copy
            self.running[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
            )

    def alive(self, name: str) -> bool:
        process = self.running.get(name)
        return process is not None and process.poll() is None

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.folder / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def wait(self, what: str, ready: Callable[[], bool], timeout: float = 60.0, interval: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.running.items():
                if process.poll() is not None:
                    raise self.failure(
                        f"{name} exited with {process.returncode}; its log, {self.folder / name}.log, "
                        f"ends:\n{self.log_tail(name)}"
                    )
            if ready():
                return
            time.sleep(interval)
        raise self.failure(f"{what} was not ready in {timeout:.0f} s; logs in {self.folder}")

    def terminate(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM to the process's session, SIGKILL after `grace`."""
        process = self.running.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self, grace: float = 5.0) -> None:
        """All of them at once, the last started first, within one grace."""
        processes = list(reversed(self.running.values()))
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.running.clear()
