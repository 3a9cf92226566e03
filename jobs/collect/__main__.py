"""`python -m jobs.collect --spec URI`: one worker (completion index) of the collect stage."""

from jobs.collect.stage import work
from jobs.common.part import run

if __name__ == "__main__":
    run("collect", work)
