import sys
from pathlib import Path

from secoctl.plan import Stage

FAKE_STAGE = Path(__file__).with_name("fake_stage.py")


def fake_argv(stage: Stage, spec_location: str) -> list[str]:
    """The fake stage, told which stages the plan says it reads (they must be complete when it runs)."""
    return [sys.executable, str(FAKE_STAGE), stage.name, ",".join(stage.reads), "--spec", spec_location]
