"""`.ci/phases`: where a CI log's time went, as `.ci/cold` prints it at the end of a cold run."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOG = """\
Resolved 212 packages
phase install: 47 s
cluster binaries: kwok built in 61 s (61 s so far)
phase cluster-binaries: 740 s
============================= slowest 30 durations =============================
12.01s call     tests/test_quickstart.py::test_quickstart
3.20s setup    tests/cluster/test_kueue.py::test_admitted

==== 523 passed in 928.00s ====
phase default suite: 928 s
phase slow suite: 2373 s
"""


def test_the_phase_table_lists_each_phase_in_order_with_the_total_and_the_slowest_tests(tmp_path: Path):
    log = tmp_path / "ci.log"
    log.write_text(LOG)
    printed = subprocess.run(
        [ROOT / ".ci" / "phases", log, "4101"], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert "12.01s call     tests/test_quickstart.py::test_quickstart" in printed
    assert "3.20s setup    tests/cluster/test_kueue.py::test_admitted" in printed
    table = [line.split() for line in printed[printed.index(next(p for p in printed if p.startswith("phase "))) :]]
    assert table == [
        ["phase", "seconds"],
        ["install", "47"],
        ["cluster-binaries", "740"],
        ["default", "suite", "928"],
        ["slow", "suite", "2373"],
        ["in", "all", "4101"],
    ]
