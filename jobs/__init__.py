"""The data plane: one package per stage, each run as `python -m jobs.<stage> --spec URI`."""
