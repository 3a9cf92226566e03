"""`kind: Study`: a base experiment and its variants, read into the experiments that run them."""

from __future__ import annotations

import json

import pytest
import yaml

from secoctl import plan
from secoctl.errors import SpecError
from secoctl.render import render
from secoctl.spec import LABEL_STUDY, LABEL_VARIANT, parse_experiment
from secoctl.spec.file import load_documents, load_files
from tests.conftest import ROOT, run_cli

QUICKSTART_STUDY = ROOT / "examples" / "quickstart-study.yaml"
PAPER_TABLE = ROOT / "examples" / "seco-paper-table.yaml"


def study(spec: dict, name: str = "paper-table", labels: dict | None = None) -> str:
    metadata = {"name": name, **({"labels": labels} if labels else {})}
    return yaml.safe_dump(
        {"apiVersion": "seco.dev/v1alpha1", "kind": "Study", "metadata": metadata, "spec": spec}, sort_keys=False
    )


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as error:
        load_documents(text, "study.yaml")
    return [str(problem) for problem in error.value.problems]


def test_a_matrix_times_seeds_names_each_experiment_from_its_values_and_seed():
    experiments = load_documents(
        study(
            {
                "base": {"pretrain": {"epochs": 5}},
                "matrix": {"pretrain.method": ["seco", "moco-tp"], "pretrain.backbone": ["resnet18", "resnet50"]},
                "seeds": [0, 7],
            }
        ),
        "study.yaml",
    )
    assert [e.name for e in experiments] == [
        f"paper-table-{method}-{backbone}-s{seed}"
        for method in ("seco", "moco-tp")
        for backbone in ("resnet18", "resnet50")
        for seed in (0, 7)
    ]
    chosen = {e.name: e.spec.pretrain for e in experiments}["paper-table-moco-tp-resnet50-s7"]
    assert (chosen.method, chosen.backbone, chosen.seed, chosen.epochs) == ("moco-tp", "resnet50", 7, 5)


def test_overrides_deep_merge_into_the_base_and_null_removes_an_optional_section():
    base = {
        "collect": {"locations": 512, "patchSize": 64},
        "pretrain": {"epochs": 3, "resources": {"cpu": "2", "memory": "4Gi"}},
        "publish": {"name": "shared-weights"},
    }
    experiments = load_documents(
        study(
            {
                "base": base,
                "variants": [
                    {
                        "name": "small-lr",
                        "overrides": {
                            "pretrain": {"lr": 0.01, "resources": {"cpu": "3"}},
                            "publish": {"name": "small-lr-weights"},
                        },
                    },
                    {"name": "unpublished", "overrides": {"collect": {"patchSize": 128}, "publish": None}},
                ],
            }
        ),
        "study.yaml",
    )
    small, unpublished = experiments
    assert (small.spec.pretrain.lr, small.spec.pretrain.epochs) == (0.01, 3)
    assert (small.spec.pretrain.resources.cpu, small.spec.pretrain.resources.memory) == ("3", "4Gi")
    assert small.spec.collect.patch_size == 64 and small.spec.publish.name == "small-lr-weights"
    assert (unpublished.spec.collect.patch_size, unpublished.spec.collect.locations) == (128, 512)
    assert unpublished.spec.publish is None and unpublished.spec.pretrain.lr == 0.03


def test_variants_cross_the_matrix_when_both_are_given():
    experiments = load_documents(
        study(
            {
                "variants": [
                    {"name": "short", "overrides": {"pretrain": {"epochs": 2}}},
                    {"name": "long", "overrides": {"pretrain": {"epochs": 9}}},
                ],
                "matrix": {"pretrain.method": ["seco", "moco"]},
            }
        ),
        "study.yaml",
    )
    assert {e.name: e.spec.pretrain.epochs for e in experiments} == {
        "paper-table-short-seco": 2,
        "paper-table-short-moco": 2,
        "paper-table-long-seco": 9,
        "paper-table-long-moco": 9,
    }


def test_each_experiment_carries_the_study_labels_on_every_object_and_through_its_stored_spec():
    moco = {"name": "moco", "overrides": {"pretrain": {"method": "moco"}}}
    (experiment,) = load_documents(study({"variants": [moco]}, labels={"team": "eo"}), "study.yaml")
    assert experiment.metadata.labels == {"team": "eo", LABEL_STUDY: "paper-table", LABEL_VARIANT: "moco"}
    for obj in render(experiment, "seco"):
        assert {LABEL_STUDY: "paper-table", LABEL_VARIANT: "moco", "team": "eo"}.items() <= obj["metadata"][
            "labels"
        ].items()
    stored = experiment.to_yaml_dict()
    assert stored["metadata"] == {
        "name": "paper-table-moco",
        "labels": {"team": "eo"},
        "study": {"name": "paper-table", "variant": "moco"},
    }
    assert parse_experiment(stored) == experiment


def test_the_study_labels_stay_reserved_in_an_experiments_own_labels():
    document = {
        "apiVersion": "seco.dev/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "demo", "labels": {LABEL_STUDY: "paper-table"}},
    }
    with pytest.raises(SpecError, match="secoctl sets this label"):
        parse_experiment(document)


def test_seed_zero_and_no_seeds_leave_the_stage_fingerprints_of_the_plain_experiment():
    plain = load_files([ROOT / "examples" / "quickstart.yaml"])[0]
    seco = next(e for e in load_files([QUICKSTART_STUDY]) if e.spec.pretrain.method == "seco")
    base = seco.to_yaml_dict()["spec"]
    del base["pretrain"]["seed"]  # spec.seeds gives it
    seeded = load_documents(study({"base": base, "variants": [{"name": "seco"}], "seeds": [0, 1]}), "study.yaml")
    fingerprints = [{s.name: s.fingerprint for s in plan.stages(e)} for e in (plain, seco, *seeded)]
    assert fingerprints[0]["pretrain"] == fingerprints[1]["pretrain"] == fingerprints[2]["pretrain"]
    assert fingerprints[3]["pretrain"] != fingerprints[2]["pretrain"]
    assert fingerprints[3]["collect"] == fingerprints[0]["collect"]


def test_a_problem_names_the_variant_and_the_field_path():
    lines = problems(
        study(
            {
                "variants": [
                    {"name": "moco", "overrides": {"pretrain": {"method": "mocov2"}}},
                    {"name": "seco", "overrides": {}},
                ]
            }
        )
    )
    assert lines == [
        "study.yaml: paper-table variant moco: spec.pretrain.method: "
        "Input should be 'seco', 'moco' or 'moco-tp'; got 'mocov2'"
    ]


def test_a_problem_of_the_base_is_named_once_for_every_variant():
    lines = problems(study({"base": {"collect": {"maxCloud": 150}}, "matrix": {"pretrain.method": ["seco", "moco"]}}))
    assert lines == [
        "study.yaml: paper-table every variant: spec.collect.maxCloud: Input should be less than or equal to 100"
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"pretrain": {"methd": "moco"}}, "spec.pretrain.methd: unknown field; did you mean 'method'?"),
        ({"colect": {"locations": 5}}, "spec.colect: unknown field; did you mean 'collect'?"),
        ({"pretrain": {"resources": {"gpuz": 1}}}, "spec.pretrain.resources.gpuz: unknown field; did you mean 'gpus'?"),
        ({"pretrain": {"zzz": 1}}, "spec.pretrain.zzz: unknown field; remove it or check its spelling"),
        ({"pretrain": {"batch_size": 64}}, "spec.pretrain.batch_size: unknown field; did you mean 'batchSize'?"),
    ],
)
def test_an_unknown_field_in_an_override_is_refused_with_a_did_you_mean(overrides, expected):
    (line,) = problems(study({"variants": [{"name": "moco", "overrides": overrides}]}))
    assert line.startswith(f"study.yaml: paper-table variant moco: {expected}")


def test_an_unknown_matrix_path_is_refused_with_a_did_you_mean():
    lines = problems(study({"matrix": {"pretrain.metod": ["seco"], "evaluate.task": ["oscd"]}}))
    assert lines == [
        "study.yaml: paper-table matrix: spec.pretrain.metod: unknown field; did you mean 'method'?",
        "study.yaml: paper-table matrix: spec.evaluate: holds no named fields; a matrix path names "
        "fields of mappings, such as pretrain.method",
    ]


def test_a_derived_name_that_breaks_the_name_rules_is_refused_naming_the_variant():
    long_variant = "a-very-long-variant-name-for-the-study"
    lines = problems(study({"variants": [{"name": long_variant}, {"name": "seco"}]}))
    assert lines == [
        f"study.yaml: paper-table variant {long_variant}: metadata.name: "
        f"'paper-table-{long_variant}' is not a DNS-1123 label of at most 40 characters "
        "(lower-case letters, digits and '-', starting and ending with a letter or digit)"
    ]


def test_a_variant_name_a_name_cannot_hold_is_refused():
    (line,) = problems(study({"variants": [{"name": "MoCo v2"}]}))
    assert line.startswith("study.yaml: spec.variants[0].name: 'MoCo v2' is not a variant name")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"base": {}}, "study.yaml: paper-table: spec: a Study needs variants, a matrix or both"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "study.yaml: spec.variants: two variants are named 'a'"),
        (
            {"variants": [{"name": "a", "overrides": {"pretrain": {"seed": 3}}}], "seeds": [0, 1]},
            "study.yaml: paper-table variant a: spec.pretrain.seed: spec.seeds sets each variant's seed",
        ),
        (
            {"base": {"pretrain": {"seed": 3}}, "variants": [{"name": "a"}], "seeds": [0, 1]},
            "study.yaml: paper-table: spec.base.pretrain.seed: spec.seeds sets each variant's seed",
        ),
        (
            {
                "variants": [{"name": "a", "overrides": {"pretrain": {"method": "moco"}}}],
                "matrix": {"pretrain.method": ["seco"]},
            },
            "study.yaml: paper-table variant a: spec.pretrain.method: the matrix varies this field",
        ),
        (
            {"matrix": {"pretrain.lr": [0.5, "0-5"]}},
            "study.yaml: paper-table matrix: two combinations are both named '0-5'",
        ),
        (
            {"base": {"publish": {"name": "weights"}}, "matrix": {"pretrain.method": ["seco", "moco"]}},
            "study.yaml: paper-table: spec.publish: paper-table-seco, paper-table-moco would all publish weights:1",
        ),
    ],
)
def test_study_level_mistakes_are_refused(spec, expected):
    lines = problems(study(spec))
    assert any(line.startswith(expected) for line in lines), lines


def test_a_study_and_an_experiment_whose_names_meet_are_refused_together(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text(
        study({"variants": [{"name": "moco"}]}) + "---\n"
        "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: paper-table-moco}\n"
    )
    with pytest.raises(SpecError, match="two experiments share this name"):
        load_files([path])


def test_the_cli_exits_2_with_one_line_per_problem_and_no_traceback(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        study(
            {
                "variants": [
                    {"name": "moco", "overrides": {"pretrain": {"methd": "moco"}}},
                    {"name": "seco", "overrides": {"colect": {}}},
                ]
            }
        )
    )
    result = run_cli("validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{path}: paper-table variant moco: spec.pretrain.methd: unknown field; did you mean 'method'?",
        f"{path}: paper-table variant seco: spec.colect: unknown field; did you mean 'collect'?",
    ]


@pytest.mark.parametrize(
    ("example", "names"),
    [
        (QUICKSTART_STUDY, ["quickstart-study-seco", "quickstart-study-moco"]),
        (PAPER_TABLE, ["seco-paper-table-seco", "seco-paper-table-moco", "seco-paper-table-moco-tp"]),
    ],
)
def test_the_examples_validate_and_render_every_variant_through_the_cli(example, names):
    validated = run_cli("validate", str(example))
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.splitlines() == [f"{name}: valid" for name in names]
    rendered = run_cli("render", str(example), "-o", "json")
    assert rendered.returncode == 0, rendered.stderr
    drivers = [
        o["metadata"]["name"]
        for o in json.loads(rendered.stdout)["items"]
        if o["kind"] == "Job" and o["metadata"]["name"].endswith("-driver")
    ]
    assert drivers == [f"{name}-driver" for name in names]


def test_the_paper_table_is_the_seco_100k_run_with_each_of_the_papers_methods():
    single = load_files([ROOT / "examples" / "seco-100k.yaml"])[0]
    variants = load_files([PAPER_TABLE])
    assert [e.spec.pretrain.method for e in variants] == ["seco", "moco", "moco-tp"]
    for experiment in variants:
        assert experiment.spec.model_copy(update={"publish": None}) == single.spec.model_copy(
            update={"publish": None, "pretrain": experiment.spec.pretrain}
        )
        assert experiment.spec.pretrain == single.spec.pretrain.model_copy(
            update={"method": experiment.spec.pretrain.method}
        )
        assert all(e.baselines == ["random", "imagenet"] for e in experiment.spec.evaluate)


def test_the_quickstart_study_is_the_quickstart_with_seco_and_moco():
    quickstart = load_files([ROOT / "examples" / "quickstart.yaml"])[0]
    variants = load_files([QUICKSTART_STUDY])
    assert [e.spec.pretrain.method for e in variants] == ["seco", "moco"]
    for experiment in variants:
        assert experiment.spec.collect == quickstart.spec.collect
        assert experiment.spec.evaluate == quickstart.spec.evaluate
        assert experiment.spec.pretrain == quickstart.spec.pretrain.model_copy(
            update={"method": experiment.spec.pretrain.method}
        )


def test_the_experiment_schema_has_no_study_field():
    result = run_cli("schema")
    assert result.returncode == 0 and '"study"' not in result.stdout and "Study" not in result.stdout
