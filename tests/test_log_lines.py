"""`secoctl logs` shows a part's JSON records as readable lines (`-o json`: the records themselves)."""

from __future__ import annotations

import json

import pytest

from secoctl.errors import UserError
from secoctl.partlog import log_lines, readable

PROGRESS = {
    "event": "progress",
    "stage": "pretrain",
    "index": 0,
    "done": 120,
    "total": 300,
    "unit": "steps",
    "metrics": {"loss": 6.31234, "lr": 0.03, "queue_filled": 0.5},
    "summed": {"counts": [], "rates": []},
    "updated_at": 1765000000.0,
    "per_s": 2.5,
}


@pytest.mark.parametrize(
    "line, shown",
    [
        (json.dumps(PROGRESS), "step 120/300 loss=6.312 lr=0.03 queue_filled=0.5 steps/s=2.5"),
        (
            "[pretrain/1] " + json.dumps(PROGRESS),
            "[pretrain/1] step 120/300 loss=6.312 lr=0.03 queue_filled=0.5 steps/s=2.5",
        ),
        (json.dumps({"event": "resumed", "step": 40}), "resumed step=40"),
        (
            json.dumps({**PROGRESS, "done": 123456.0, "total": 200000, "metrics": {"loss": 6.0}}),
            "step 123456/200000 loss=6 steps/s=2.5",
        ),
        (json.dumps({"event": "stopped", "signal": "SIGTERM", "step": 41}), "stopped signal=SIGTERM step=41"),
        (
            json.dumps({"event": "failed", "message": "pretrain part 0: no shards: check spec.shards"}),
            "failed: pretrain part 0: no shards: check spec.shards",
        ),
        (json.dumps({"event": "x\u001b[2Jy", "note": "a\nb"}), "x [2Jy note=a b"),
        ("Traceback (most recent call last):", "Traceback (most recent call last):"),
        ("{not json", "{not json"),
        ("[1, 2]", "[1, 2]"),
        ("\u001b]0;title\u0007plain", " ]0;title plain"),
    ],
)
def test_records_read_as_lines_and_other_lines_pass_without_control_characters(line: str, shown: str):
    assert readable(line) == shown


def test_json_output_keeps_each_record_as_written_and_an_unknown_output_is_one_line():
    line = "[pretrain/1] " + json.dumps(PROGRESS)
    assert log_lines("json")(line) == line
    with pytest.raises(UserError, match="'yaml' is not one of text, json"):
        log_lines("yaml")
