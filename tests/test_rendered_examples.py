"""Every example renders to exactly the objects it rendered when these files were made.

A refactoring of render must leave what reaches a cluster byte for byte as it was. A deliberate
change regenerates the files: `python -m tests.test_rendered_examples`.
"""

import pytest

from secoctl.render import render, to_yaml
from secoctl.spec.file import load_files
from tests.conftest import EXAMPLES, ROOT

RENDERED = ROOT / "tests" / "rendered"


def rendered(example) -> str:
    """Every object of every experiment in the file: a Study's variants in the order it lists them."""
    return to_yaml([obj for experiment in load_files([example]) for obj in render(experiment, "seco")])


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_renders_byte_for_byte_as_pinned(example):
    assert rendered(example) == (RENDERED / example.name).read_text()


if __name__ == "__main__":
    for path in EXAMPLES:
        (RENDERED / path.name).write_text(rendered(path))
