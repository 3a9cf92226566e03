"""`python -m jobs.common.logged --spec FILE --stage NAME [--termination-log PATH] -- ARGV...`

Runs a stage part, its log also in storage. In a pod, a part's output otherwise lives only in the
container log, which goes with the pod. This wrapper runs the part's command (torchrun and every
worker included), passes each line through to its own stdout, so `kubectl logs` still works, and
keeps the log in storage as the embedded executor does: `<stage>/logs/<index>.log`, rewritten
every few seconds. A long run's log is sealed in chunks of CHUNK_BYTES, `<index>.<n>.log`
(n = 00001, 00002, ...), that are written once, so an upload never grows past a chunk; the live
tail stays in `<index>.log`. `secoctl.partlog` reads them back in order. A later pod of the same
part (one readmitted after a Kueue preemption, or a retry) continues that log after the earlier
pod's: the earlier tail is sealed as the next chunk, so its last lines (a "stopped" line, a
traceback) are not overwritten.

The last failure line the part printed (partlog.failure_line) is written to --termination-log, the
pod's terminationMessagePath, so `status` shows the cause from the pod without reading storage.

SIGTERM and SIGINT (the pod being stopped) go to the part; the wrapper exits with its code, except
that a part that fails after being sent signal N ends with 128 + N, as a process stopped by N reports
itself: torchrun passes SIGTERM on to its workers, waits for them (pretrain checkpoints and exits 143)
and then exits 1 with a traceback of its own.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading

from secoctl import store
from secoctl.partlog import chunk_uri, failure_message, files, live_uri

FLUSH_S = 5.0
CHUNK_BYTES = 8 * 1024 * 1024


class StorageLog:
    """The part's log in storage: sealed chunks, and the live tail rewritten on every flush."""

    def __init__(self, stage_uri: str, index: int, chunk_bytes: int = CHUNK_BYTES):
        self.stage_uri, self.index, self.chunk_bytes = stage_uri, index, chunk_bytes
        self.sealed = 0
        self.tail = bytearray()
        self.dirty = False
        self.lock = threading.Lock()

    def continue_earlier(self) -> None:
        """Keep an earlier pod's log of this part: number new chunks after its chunks, seal its tail as one."""
        earlier = files(self.stage_uri, self.index)
        live = live_uri(self.stage_uri, self.index)
        self.sealed = max((int(uri.rsplit("/", 1)[1].split(".")[1]) for uri in earlier if uri != live), default=0)
        tail = store.read_bytes(live) if live in earlier else b""
        if tail:
            self.sealed += 1
            store.write_bytes(chunk_uri(self.stage_uri, self.index, self.sealed), tail)
            store.write_bytes(live, b"")

    def write(self, data: bytes) -> None:
        with self.lock:
            self.tail += data
            self.dirty = True
            while len(self.tail) >= self.chunk_bytes:
                cut = self.tail.rfind(b"\n", 0, self.chunk_bytes) + 1 or self.chunk_bytes
                self.sealed += 1
                store.write_bytes(chunk_uri(self.stage_uri, self.index, self.sealed), bytes(self.tail[:cut]))
                del self.tail[:cut]

    def flush(self) -> None:
        with self.lock:
            if self.dirty:
                store.write_bytes(live_uri(self.stage_uri, self.index), bytes(self.tail))
                self.dirty = False


def _flusher(log: StorageLog, stop: threading.Event) -> None:
    while not stop.wait(FLUSH_S):
        try:
            log.flush()
        except Exception as error:  # noqa: BLE001 - storage hiccups must not kill the part
            print(f"logged: cannot write the log to storage yet: {error}", file=sys.stderr, flush=True)


def _terminate_with(path: str | None, failure: bytes | None) -> None:
    if path and failure:
        try:
            with open(path, "wb") as handle:
                handle.write(failure)
        except OSError as error:  # the exit code and the log still say it
            print(f"logged: cannot write the termination message: {error}", file=sys.stderr, flush=True)


def run(stage_uri: str, index: int, argv: list[str], termination_log: str | None = None) -> int:
    log = StorageLog(stage_uri, index)
    try:
        log.continue_earlier()
    except Exception as error:  # noqa: BLE001 - storage hiccups must not keep the part from running
        print(f"logged: cannot read the part's earlier log: {error}", file=sys.stderr, flush=True)
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    forwarded: list[int] = []

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)
            forwarded.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    stop = threading.Event()
    flusher = threading.Thread(target=_flusher, args=(log, stop), daemon=True)
    flusher.start()
    out = sys.stdout.buffer
    failure = None
    for line in iter(child.stdout.readline, b""):
        out.write(line)
        out.flush()
        log.write(line)
        if failure_message(line.decode(errors="replace").strip()):
            failure = line.strip()
    code = child.wait()
    if code:
        _terminate_with(termination_log, failure)
    stop.set()
    flusher.join()
    try:
        log.flush()
    except Exception as error:  # noqa: BLE001 - the part's own exit code is what the Job must see
        print(f"logged: cannot write the log to storage: {error}", file=sys.stderr, flush=True)
    if code and forwarded:
        return 128 + forwarded[0]  # stopped as asked, whatever a launcher in between says of it
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell and the kubelet report it


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print(
            "usage: python -m jobs.common.logged --spec FILE --stage NAME [--termination-log PATH] -- COMMAND...",
            file=sys.stderr,
        )
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m jobs.common.logged")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--stage", required=True)
    parser.add_argument(
        "--termination-log", help="where the part's failure line goes (the pod's terminationMessagePath)"
    )
    args = parser.parse_args(argv[:split])
    from secoctl.spec.file import read_experiment
    from secoctl.stored import named_stage_tree

    store.use_timeouts(store.DATA_PLANE)
    experiment = read_experiment(args.spec)
    index = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    return run(named_stage_tree(experiment, args.stage).uri, index, argv[split + 1 :], args.termination_log)


if __name__ == "__main__":
    sys.exit(main())
