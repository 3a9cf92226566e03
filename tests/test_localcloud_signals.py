"""Ctrl-C through the quickstart's wrapper (`python -m jobs.localcloud run ... -- COMMAND`) is COMMAND's to handle:
the wrapper keeps the made cloud up until COMMAND has stopped, exits with COMMAND's code and prints no traceback."""

import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT

SPEC = """apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {name: signals}
spec:
  collect: {locations: 2, workers: 1, stacUrl: "http://127.0.0.1:%d/"}
"""
# COMMAND: on SIGINT it takes a second (a checkpoint), notes that it finished, and exits 130.
COMMAND = (
    "import signal, sys, time, pathlib\n"
    "def stop(*_):\n    time.sleep(1)\n    pathlib.Path(sys.argv[1]).write_text('stopped')\n    sys.exit(130)\n"
    "signal.signal(signal.SIGINT, stop)\npathlib.Path(sys.argv[2]).write_text('ready')\ntime.sleep(120)\n"
)


def test_ctrl_c_is_left_to_the_command_and_the_wrapper_exits_with_its_code_quietly(tmp_path):
    from jobs.localcloud.servers import free_port

    spec, stopped, ready = tmp_path / "spec.yaml", tmp_path / "stopped", tmp_path / "ready"
    spec.write_text(SPEC % free_port())
    wrapper = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.localcloud",
            "run",
            "--spec",
            str(spec),
            "--cache",
            str(tmp_path / "worlds"),
            "--",
            sys.executable,
            "-c",
            COMMAND,
            str(stopped),
            str(ready),
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300  # bounds the made world's build, never a measured duration
    while not ready.exists():
        assert wrapper.poll() is None and time.monotonic() < deadline, wrapper.stderr.read() if wrapper.poll() else ""
        time.sleep(0.1)
    os.killpg(wrapper.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    code = wrapper.wait(timeout=60)
    stderr = wrapper.stderr.read()
    assert stopped.exists(), "the wrapper exited before its command had stopped"
    assert (code, "Traceback" in stderr) == (130, False), stderr
