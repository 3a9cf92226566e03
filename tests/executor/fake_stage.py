"""A small real stage process for the executor tests: it keeps the part contract of jobs/.

It appends to a ledger each time a part does its work (so a test can count executions),
reports progress, checks that the stages the plan says it reads (its second argument) are complete,
and obeys FAKE_SLEEP_S (seconds per step), FAKE_FAIL_STAGE and FAKE_STOP_S (seconds its stop takes).
"""

import os
import signal
import sys
import time

from jobs.common.part import Part, run
from secoctl import store


def work(part: Part) -> dict:
    steps = 5
    for step in range(steps):
        part.progress(step, steps, "steps", force=True, loss=1.0 / (step + 1))
        time.sleep(float(os.environ.get("FAKE_SLEEP_S", "0")))
    if os.environ.get("FAKE_FAIL_STAGE") == part.stage:
        print(f"{part.stage}: simulated failure in part {part.index}", flush=True)
        sys.exit(3)
    for upstream in READS:
        assert store.exists(part.stage_tree(upstream).success), f"{part.stage} ran before {upstream} completed"
    ledger = part.stage_tree(part.stage).path("ledger", f"{part.index:05d}-{time.time_ns()}")
    store.write_text(ledger, "done")
    part.progress(steps, steps, "steps", force=True)
    return {"index": part.index}


def stop_slowly(signum, frame) -> None:
    """As pretrain stops: a checkpoint that takes FAKE_STOP_S, written where a test looks, then exit 143."""
    time.sleep(float(os.environ["FAKE_STOP_S"]))
    marker = os.environ.get("FAKE_STOPPED_FILE")
    if marker:
        os.makedirs(os.path.dirname(marker), exist_ok=True)  # as a checkpoint's write makes its folders
        open(marker, "a").write(f"{sys.argv[1]} {os.environ.get('JOB_COMPLETION_INDEX')}\n")
    os._exit(143)


if __name__ == "__main__":
    if os.environ.get("FAKE_STOP_S"):
        signal.signal(signal.SIGTERM, stop_slowly)
    if os.environ.get("FAKE_PLAN"):  # a test that adds a stage to its plan adds it to the part's too
        import importlib

        importlib.import_module(os.environ["FAKE_PLAN"]).install_plan()
    READS = [name for name in sys.argv[2].split(",") if name]  # the stages the plan says this one reads
    run(sys.argv[1], work, sys.argv[3:])
