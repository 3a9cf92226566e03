"""`torchrun ... -m jobs.pretrain --spec URI`: one process per GPU (or one on the CPU)."""

from jobs.common.part import run
from jobs.pretrain.train import work

if __name__ == "__main__":
    run("pretrain", work)
