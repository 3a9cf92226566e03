"""`python -m jobs.publish --spec URI`: the pretrain stage's backbone as versioned weights."""

from jobs.common.part import run
from jobs.publish.stage import work

if __name__ == "__main__":
    run("publish", work)
