"""The data plane: one package per stage, each run as `python -m jobs.<stage> --spec URI`."""

from secoctl.process import guard_stage_process

# First thing a stage process runs (`python -m jobs.X` imports this package before its module's torch).
guard_stage_process()
