"""The README's spec reference is generated from the schema; it must match the code it describes."""

import json
import re
from pathlib import Path

from secoctl.spec import API_VERSION, KIND, Experiment, Toleration, json_schema
from secoctl.spec import reference as spec_reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_spec_reference_is_the_generated_one():
    text = README.read_text()
    assert spec_reference.replace_section(text) == text, "run: python -m secoctl.spec.reference --write README.md"


def test_the_reference_lists_nested_fields_with_defaults():
    table = spec_reference.markdown()
    assert "| `spec.collect.locations` | integer | 200000 |" in table
    assert "| `spec.evaluate[].task` |" in table and "`spec.pretrain.resources.tolerations[].effect`" in table


def _at(document, path: str):
    """The value at a reference path; `[]` is a list's first item."""
    for name in path.replace("[]", ".[]").split("."):
        document = document[0] if name == "[]" else document[name]
    return document


def test_every_documented_default_is_the_experiments_own():
    """Against the model, not the schema: the schema has no default_factory defaults (collect.resources).

    Fields inside an empty list or an absent object by default (evaluate[], publish, tracking) are checked in
    an experiment that gives those with only their required fields."""
    minimal = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "defaults"}}
    plain = Experiment.model_validate(minimal).model_dump(mode="json", by_alias=True)
    filled = Experiment.model_validate(
        {
            **minimal,
            "spec": {
                "evaluate": [{"task": "eurosat"}],
                "evaluateResources": {"tolerations": [{"key": "k"}]},
                "publish": {"name": "defaults"},
                "collect": {"resources": {"tolerations": [{"key": "k"}]}},
                "pretrain": {"resources": {"tolerations": [{"key": "k"}]}},  # an empty key needs operator Exists
                "tracking": {},
            },
        }
    ).model_dump(mode="json", by_alias=True)
    # An object inside an object that is absent by default (tracking.mlflow): given in a third experiment.
    tracked = Experiment.model_validate(
        {**minimal, "spec": {"tracking": {"mlflow": {"uri": "https://mlflow.example.org"}}}}
    ).model_dump(mode="json", by_alias=True)
    documented = {path: default for path, _, default, _ in spec_reference.rows(json_schema())}
    for path, default in documented.items():
        if default == "required":
            continue
        if default == "":  # an object whose fields' rows follow
            assert any(other.startswith(f"{path}.") for other in documented), path
            continue
        try:
            actual = _at(plain, path)
        except (TypeError, IndexError):
            try:
                actual = (
                    Toleration.model_fields["key"].default if path.endswith("tolerations[].key") else _at(filled, path)
                )
            except TypeError:
                actual = _at(tracked, path)
        assert json.loads(default) == actual, path
    assert json.loads(documented["spec.collect.resources.cpu"]) == "2"
    assert json.loads(documented["spec.evaluateResources.gpus"]) == 1
    assert json.loads(documented["spec.pretrain.lrMilestones"]) == [120, 160]


def test_the_readme_opens_with_what_secoctl_is_its_two_commands_and_one_measured_quickstart_figure():
    text = README.read_text()
    assert text.startswith("# secoctl\n\nsecoctl pre-trains")
    opening = text[: text.index("\n## ")]
    commands = opening.split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in commands.splitlines()] == ["make quickstart", "make test"]
    figures = set(re.findall(r"\*\*(0\.\d{3})\*\*", opening))
    assert figures == {"0.645", "0.573"}  # SeCo and random init, once
    results = (README.parent / "benchmarks" / "RESULTS.md").read_text()
    assert "**0.645** against **0.573**" in results
    assert "## Status" in text and text.index("## Status") > text.index("## Running on a cluster")
