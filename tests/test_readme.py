"""The README's spec reference is generated from the schema; it must match the code it describes."""

from pathlib import Path

from secoctl import spec_reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_spec_reference_is_the_generated_one():
    text = README.read_text()
    assert spec_reference.replace_section(text) == text, "run: python -m secoctl.spec_reference --write README.md"


def test_the_reference_lists_nested_fields_with_defaults():
    table = spec_reference.markdown()
    assert "| `spec.collect.locations` | integer | 200000 |" in table
    assert "| `spec.evaluate[].task` |" in table and "`spec.pretrain.resources.tolerations[].effect`" in table
