"""Where a stage part's log lives in storage, and how to read it back whole.

`<stage>/logs/<index>.log` holds a part's log (the embedded executor writes it so; in a pod,
`jobs.common.logged` does); a long run's log is sealed in chunks `<index>.<n>.log` before it, the
live tail staying in `<index>.log`. Names are zero-padded so that listing order is reading order.

A part that fails predictably (jobs.common.failures) ends its log with one failure line, JSON like
its progress lines: the control plane shows that line instead of the traceback above it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from secoctl import store
from secoctl.errors import UserError
from secoctl.tree import LOGS

FAILURE_PREFIX = '{"event": "failed"'  # how failure_line's JSON begins: any other line is not read as one
PREDICTABLE_EXIT = 3  # a part's exit code for a failure it named; a bug exits 1 with its traceback
# A part stopped by SIGTERM, its pod deleted (a Job suspended by Kueue's preemption, a drain): jobs.common.logged
# exits 128 + 15 then, and pretrain has checkpointed the step it reached.
STOPPED_EXIT = 143
# In a pod the failure line is also the container's termination message, which `status` reads from the pod.
TERMINATION_LOG = "/dev/termination-log"
MAX_FAILURE_CHARS = 1000  # a Kubernetes termination message holds 4096 bytes; a line a person reads, far less
LOG_OUTPUTS = ("text", "json")
# A record line as `logs` yields it: an optional `[stage/part] ` or `[pod] ` prefix, then one JSON object.
RECORD_LINE = re.compile(r"(\[[^\]\n]*\] )?(\{.*\})")
MAX_RECORD_CHARS = 100_000  # a record is a line of the part's own JSON; anything longer is shown as it came


def live_uri(stage_uri: str, index: int) -> str:
    return store.join(stage_uri, LOGS, f"{index:05d}.log")


def chunk_uri(stage_uri: str, index: int, number: int) -> str:
    return store.join(stage_uri, LOGS, f"{index:05d}.{number:05d}.log")


def indexes(stage_uri: str) -> list[int]:
    """The parts that have a log in storage."""
    names = [n for n in store.list_names(store.join(stage_uri, LOGS)) if n.endswith(".log")]
    return sorted({int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()})


def files(stage_uri: str, index: int) -> list[str]:
    """The URIs holding part `index`'s log, in reading order: sealed chunks, then the live tail."""
    names = [
        n
        for n in store.list_names(store.join(stage_uri, LOGS))
        if n.endswith(".log") and n.split(".")[0] == f"{index:05d}"
    ]
    chunks = sorted(n for n in names if n.count(".") == 2)
    live = [n for n in names if n.count(".") == 1]
    return [store.join(stage_uri, LOGS, n) for n in (*chunks, *live)]


def read(stage_uri: str, index: int) -> str:
    return "".join(store.read_text(uri) for uri in files(stage_uri, index))


def failure_line(stage: str, index: int, cause: str, field: str | None) -> str:
    """The one line a part prints last when it fails predictably: what went wrong and the spec field to fix."""
    message = f"{stage} part {index}: {cause}" + (f": check {field}" if field else "")
    return json.dumps(
        {"event": "failed", "stage": stage, "index": index, "cause": cause, "field": field, "message": message}
    )


def failure_message(line: str) -> str | None:
    """The message of a failure line, or None for any other line; bounded, as a pod's output is anyone's text."""
    if len(line) > 4 * MAX_FAILURE_CHARS or not line.startswith(FAILURE_PREFIX):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    message = record.get("message") if isinstance(record, dict) else None
    if not isinstance(message, str):
        return None
    printable = "".join(c if c.isprintable() else " " for c in message)
    return printable[:MAX_FAILURE_CHARS]


def last_failure(text: str) -> str | None:
    """The message of the last failure line in a part's log (tail), or None when the part named none."""
    return next((m for m in map(failure_message, reversed(text.splitlines())) if m), None)


def prefixed(stage: str, part: int, text: str, several: bool) -> list[str]:
    """A part's log lines as `logs` prints them: `[stage/part] ` before each when the stage has several."""
    prefix = f"[{stage}/{part}] " if several else ""
    return [prefix + line for line in text.splitlines()]


def value_text(value: Any) -> str:
    """One field's value in a readable log line: a whole number whole (steps run to hundreds of thousands), other
    numbers to 4 significant digits, the rest as JSON but strings."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)


def readable_record(record: dict[str, Any]) -> str:
    """A part's JSON record as a line a person reads: `step 120/300 loss=6.31 ...` for progress, the failure's
    message, else the event and its fields as key=value."""
    event = record.get("event")
    if event == "progress" and isinstance(record.get("metrics"), dict):
        unit = str(record.get("unit") or "")
        count = f"{unit.removesuffix('s') or 'done'} {value_text(record.get('done'))}/{value_text(record.get('total'))}"
        rate = [f"{unit or 'units'}/s={value_text(record['per_s'])}"] if "per_s" in record else []
        fields = [f"{key}={value_text(value)}" for key, value in record["metrics"].items()]
        return " ".join([count, *fields, *rate])
    if event == "failed" and isinstance(record.get("message"), str):
        return f"failed: {record['message']}"
    fields = [f"{key}={value_text(value)}" for key, value in record.items() if key != "event"]
    return " ".join([value_text(event) if event is not None else "record", *fields])


def readable(line: str) -> str:
    """A `logs` line with its JSON record, if it holds one, made readable (`readable_record`); any other line as
    it came. Either way without control characters."""
    match = RECORD_LINE.fullmatch(line) if len(line) <= MAX_RECORD_CHARS else None
    try:
        record = json.loads(match.group(2)) if match else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return printable(line)
    return printable((match.group(1) or "") + readable_record(record))


def log_lines(output: str) -> Callable[[str], str]:
    """What `logs -o OUTPUT` does to each line: `text` makes records readable, `json` keeps them as written."""
    if output not in LOG_OUTPUTS:
        raise UserError(f"-o/--output: {output!r} is not one of {', '.join(LOG_OUTPUTS)}")
    return readable if output == "text" else printable  # a JSON record holds no control character itself
