"""Every name rule matches the whole string: a trailing newline, tab or NUL makes a look-alike, not a name."""

import pytest

from secoctl import store, weights
from secoctl.errors import SpecError, UserError
from secoctl.spec import parse_experiment

ENDINGS = ["\n", "\t", "\x00"]


def experiment(name: str = "mini", labels: dict | None = None, spec: dict | None = None) -> dict:
    return {
        "apiVersion": "seco.dev/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec or {},
    }


def refused_by_the_spec(document: dict) -> bool:
    try:
        parse_experiment(document)
    except SpecError:
        return True
    return False


def test_the_well_formed_names_pass():
    assert not refused_by_the_spec(
        experiment(
            "mini", {"team": "vision"}, {"storage": "file:///data/seco", "publish": {"name": "w", "version": "1"}}
        )
    )
    assert weights.check_name("seco-resnet18") and weights.check_version("1.0")


@pytest.mark.parametrize("ending", ENDINGS, ids=repr)
@pytest.mark.parametrize("rule", ["experiment", "label key", "label value", "publish name", "publish version"])
def test_a_spec_name_with_a_trailing_control_character_is_refused(rule, ending):
    document = {
        "experiment": experiment(f"mini{ending}"),
        "label key": experiment(labels={f"team{ending}": "vision"}),
        "label value": experiment(labels={"team": f"vision{ending}"}),
        "publish name": experiment(spec={"publish": {"name": f"w{ending}"}}),
        "publish version": experiment(spec={"publish": {"name": "w", "version": f"1{ending}"}}),
    }[rule]
    assert refused_by_the_spec(document)


@pytest.mark.parametrize("ending", ENDINGS, ids=repr)
def test_a_weights_name_or_version_with_a_trailing_control_character_is_refused(ending):
    with pytest.raises(UserError, match="weights name"):
        weights.check_name(f"fake{ending}")
    with pytest.raises(UserError, match="weights version"):
        weights.check_version(f"1{ending}")
    with pytest.raises(UserError, match="weights name"):
        weights.WeightsRef.parse(f"fake{ending}:1")


@pytest.mark.parametrize("ending", ENDINGS, ids=repr)
def test_a_storage_uri_with_a_trailing_control_character_is_refused(ending):
    assert refused_by_the_spec(experiment(spec={"storage": f"file:///x{ending}"}))
    with pytest.raises(UserError, match="--storage: .* holds a control character"):
        store.storage(f"s3://bucket/seco{ending}")


@pytest.mark.parametrize(
    ("name", "valid"),
    [("w" * 64, True), ("seco.resnet18-v2", True), ("w" * 65, False), ("w..v2", False), ("w.", False), ("W", False)],
)
def test_publish_and_pull_share_one_weights_name_rule(name, valid):
    """spec.publish.name is the name pull resolves: the spec takes exactly what secoctl.weights.NAME takes."""
    try:
        weights.WeightsRef.parse(f"{name}:1")
        pullable = True
    except UserError:
        pullable = False
    assert pullable is valid
    assert refused_by_the_spec(experiment(spec={"publish": {"name": name}})) is not valid
