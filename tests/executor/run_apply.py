"""`secoctl apply --local` with the fake stage processes, for tests that kill the executor."""

import os
import sys
from pathlib import Path

from secoctl.backends.local import executor as local
from secoctl.backends.local.executor import LocalExecutor
from secoctl.spec.file import load_files
from tests.executor.fake_stage_argv import fake_argv

if __name__ == "__main__":
    storage, spec_file = sys.argv[1], Path(sys.argv[2])
    local.STOP_GRACE_S = float(os.environ.get("TEST_STOP_GRACE_S", local.STOP_GRACE_S))
    for experiment in load_files([spec_file]):
        LocalExecutor(storage, argv_for=fake_argv, concurrency=2).apply(experiment)
