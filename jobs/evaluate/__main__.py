"""`python -m jobs.evaluate --spec URI`: one downstream evaluation (completion index) of the spec."""

from jobs.common.part import run
from jobs.evaluate.stage import work

if __name__ == "__main__":
    run("evaluate", work)
