"""`secoctl apply --local` with the fake stage processes, for tests that kill the executor."""

import sys
from pathlib import Path

from secoctl.backends.local.executor import LocalExecutor
from secoctl.spec.file import load_files
from tests.executor.fake_stage_argv import fake_argv

if __name__ == "__main__":
    storage, spec_file = sys.argv[1], Path(sys.argv[2])
    for experiment in load_files([spec_file]):
        LocalExecutor(storage, argv_for=fake_argv, concurrency=2).apply(experiment)
