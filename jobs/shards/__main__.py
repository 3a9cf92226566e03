"""`python -m jobs.shards --spec URI`: the collected record turned into the pretrain stage's input, once."""

from jobs.common.part import run
from jobs.shards.stage import work

if __name__ == "__main__":
    run("shards", work)
