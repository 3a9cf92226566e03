import re

import pytest

from secoctl.errors import SpecError
from secoctl.spec import MAX_NAME_LENGTH, SENTINEL2_BANDS, Experiment, json_schema, k8s_rules, parse_experiment
from secoctl.spec.file import load_documents
from tests.conftest import EXAMPLES, run_cli

MINIMAL = "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: demo}\n"


def test_defaults_reproduce_the_papers_run():
    spec = parse_experiment(
        {"apiVersion": "seco.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "demo"}}
    ).spec
    assert (spec.collect.timestamps, spec.collect.interval_days, spec.collect.max_cloud) == (5, 84, 10.0)
    assert (spec.collect.sigma_km, spec.collect.cities, spec.collect.patch_size) == (50.0, 10_000, 264)
    assert tuple(spec.collect.bands) == SENTINEL2_BANDS and "B10" not in spec.collect.bands
    pretrain = spec.pretrain
    assert (pretrain.lr, pretrain.momentum, pretrain.weight_decay, pretrain.batch_size) == (0.03, 0.9, 1e-4, 256)
    assert (pretrain.epochs, pretrain.lr_milestones, pretrain.queue_size) == (200, [120, 160], 16_384)
    assert (pretrain.temperature, pretrain.encoder_momentum, pretrain.embedding_dim) == (0.07, 0.999, 128)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(example):
    result = run_cli("validate", str(example))
    assert result.returncode == 0, result.stderr


BAD_SPECS = {
    "unknown field": (MINIMAL + "spec: {pretrain: {batchSzie: 64}}\n", "spec.pretrain.batchSzie: unknown field"),
    "wrong type": (
        MINIMAL + "spec: {collect: {locations: many}}\n",
        "spec.collect.locations: Input should be a valid integer",
    ),
    "out of range": (
        MINIMAL + "spec: {collect: {maxCloud: 150}}\n",
        "spec.collect.maxCloud: Input should be less than or equal to 100",
    ),
    "not DNS-1123": (
        MINIMAL.replace("demo", "My_Experiment"),
        "metadata.name: 'My_Experiment' is not a DNS-1123 label",
    ),
    "batch not divisible": (
        MINIMAL + "spec: {pretrain: {batchSize: 100, nodes: 4, gpusPerNode: 8}}\n",
        "spec.pretrain: batchSize 100 must be divisible by nodes × gpusPerNode (4 × 8 = 32)",
    ),
    "secret inlined": (
        MINIMAL + "spec: {storageSecret: {accessKeyId: AKIA, secretAccessKey: abc}}\n",
        "spec.storageSecret: credentials must not be written into the spec",
    ),
    "credentials in URI": (
        MINIMAL + "spec: {storage: 's3://AKIA:abc@bucket/x'}\n",
        "spec.storage: credentials must not be written into the URI",
    ),
    "bad band": (MINIMAL + "spec: {collect: {bands: [B02, B10]}}\n", "spec.collect.bands[1]:"),
    "input band not collected": (
        MINIMAL + "spec: {collect: {bands: [B02, B03, B04]}, pretrain: {inputBands: [B04, B08]}}\n",
        "spec.pretrain.inputBands: B08 is not collected (collect.bands: B02, B03, B04)",
    ),
    "input band twice": (
        MINIMAL + "spec: {pretrain: {inputBands: [B08, B08]}}\n",
        "spec.pretrain.inputBands: inputBands must not repeat",
    ),
    "bad YAML": (MINIMAL + "spec: {collect: [\n", "invalid YAML: line"),
    "wrong kind": (MINIMAL.replace("kind: Experiment", "kind: Pod"), "kind: Input should be 'Experiment'"),
    "our label": (
        MINIMAL.replace("{name: demo}", "{name: demo, labels: {seco.dev/experiment: victim}}"),
        "metadata.labels.seco.dev/experiment: secoctl sets this label on every object it makes",
    ),
    "credential label": (
        MINIMAL.replace("{name: demo}", "{name: demo, labels: {api_key: abc}}"),
        "metadata.labels.api_key: this key names a credential",
    ),
    "credentials in stacUrl": (
        MINIMAL + "spec: {collect: {stacUrl: 'https://user:pass@stac.example/v1'}}\n",
        "spec.collect.stacUrl: credentials must not be written into the URI",
    ),
    "signed stacUrl": (
        MINIMAL + "spec: {collect: {stacUrl: 'https://stac.example/v1?se=2030&sig=abc'}}\n",
        "spec.collect.stacUrl: the query parameter 'sig' is a credential",
    ),
    "credentials in dataPath": (
        MINIMAL + "spec: {evaluate: [{task: eurosat, dataPath: 's3://AKIA:abc@b/eurosat'}]}\n",
        "spec.evaluate[0].dataPath: credentials must not be written into the URI",
    ),
    "relative storage": (
        MINIMAL + "spec: {storage: 'file://data/seco'}\n",
        "spec.storage: 'file://data/seco' is not an absolute, normalised path; write it as file:///data/seco",
    ),
    "'..' in storage": (
        MINIMAL + "spec: {storage: 's3://bucket/seco/../other'}\n",
        "climbs out of its folder with '..'",
    ),
    "claim over /etc": (
        MINIMAL + "spec: {storage: 'file:///etc', storageClaim: data}\n",
        "spec.storage: 'file:///etc' would be mounted at, over or inside /etc/secoctl, which the pods use",
    ),
    "claim at /tmp": (
        MINIMAL + "spec: {storage: 'file:///tmp', storageClaim: data}\n",
        "would be mounted at, over or inside /tmp",
    ),
    "claim without a path": (
        MINIMAL + "spec: {storage: 's3://bucket/seco', storageClaim: data}\n",
        "spec: storageClaim is mounted at a file:// storage path",
    ),
    # What the API server, the kubelet or a later stage refuses (issue 28): refused by validate first.
    "no image reference": (
        MINIMAL + "spec: {image: 'registry.example/Team/secoctl:1'}\n",
        "spec.image: 'registry.example/Team/secoctl:1' repository name 'Team/secoctl' must be lower case",
    ),
    "image tag too long": (
        MINIMAL + f"spec: {{image: 'registry.example/secoctl:{'1' * 129}'}}\n",
        "spec.image: 'registry.example/secoctl:1111",
    ),
    "Exists with a value": (
        MINIMAL + "spec: {collect: {resources: {tolerations: [{key: gpu, operator: Exists, value: a}]}}}\n",
        "spec.collect.resources.tolerations[0].value: must be empty when operator is Exists",
    ),
    "toleration without key": (
        MINIMAL + "spec: {evaluateResources: {tolerations: [{effect: NoSchedule}]}}\n",
        "spec.evaluateResources.tolerations[0].operator: must be Exists when key is empty",
    ),
    "node selector key": (
        MINIMAL + "spec: {pretrain: {resources: {nodeSelector: {'gpu type': a100}}}}\n",
        "spec.pretrain.resources.nodeSelector.gpu type: label key name part must consist of",
    ),
    "node selector value": (
        MINIMAL + "spec: {pretrain: {resources: {nodeSelector: {gpu: 'a100 80g'}}}}\n",
        "spec.pretrain.resources.nodeSelector.gpu: label value 'a100 80g' must be empty or",
    ),
    "baseline no weights name": (
        MINIMAL + "spec: {evaluate: [{task: eurosat, baselines: [random, 'My Weights:1']}]}\n",
        "spec.evaluate[0].baselines[1]: weights name 'My Weights' is invalid",
    ),
    "publish version publish refuses": (
        MINIMAL + "spec: {publish: {name: w, version: '1..2'}}\n",
        "spec.publish.version: weights version '1..2' is invalid",
    ),
    "negative quantity": (
        MINIMAL + "spec: {collect: {resources: {memory: '-8Gi'}}}\n",
        "spec.collect.resources.memory: '-8Gi' must not be negative",
    ),
    "name no Service takes": (MINIMAL.replace("demo", "0demo"), "metadata.name: '0demo' must start with a letter"),
    "label key with a newline": (
        MINIMAL.replace("{name: demo}", '{name: demo, labels: {"team\\n": a}}'),
        "not a Kubernetes label key",
    ),
    "queue name no label value": (MINIMAL + f"spec: {{queueName: {'q' * 64}}}\n", "spec.queueName: 'qqqq"),
}


@pytest.mark.parametrize("name", BAD_SPECS)
def test_bad_spec_names_the_field_exits_2_without_traceback(name, tmp_path, storage):
    text, expected = BAD_SPECS[name]
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(text)
    for command in ("validate", "render", "apply"):
        result = run_cli(command, str(spec_file), storage=storage)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert result.stdout == ""
    assert list(storage.iterdir()) == [], "nothing may be written for a bad spec"


def test_every_problem_is_reported_one_line_each():
    text = MINIMAL + "spec: {collect: {maxCloud: -1, workers: 0}, pretrain: {backbone: vit}}\n"
    with pytest.raises(SpecError) as error:
        load_documents(text, "x.yaml")
    paths = sorted(p.path for p in error.value.problems)
    assert paths == ["spec.collect.maxCloud", "spec.collect.workers", "spec.pretrain.backbone"]


def test_a_multi_document_file_is_validated_whole_before_anything_runs(tmp_path, storage):
    spec_file = tmp_path / "two.yaml"
    spec_file.write_text(MINIMAL + "---\n" + MINIMAL.replace("demo", "second") + "spec: {collect: {seed: x}}\n")
    result = run_cli("apply", str(spec_file), storage=storage)
    assert result.returncode == 2
    assert "two.yaml[document 2]: spec.collect.seed" in result.stderr
    assert list(storage.iterdir()) == []


def test_a_key_written_twice_is_refused_with_both_lines_and_nothing_is_written(tmp_path, storage):
    spec_file = tmp_path / "x.yaml"
    spec_file.write_text(MINIMAL + "spec:\n  pretrain:\n    epochs: 10\n    batchSize: 64\n    epochs: 20\n")
    for command in (["validate"], ["render"], ["apply", "--local"]):
        result = run_cli(*command, str(spec_file), storage=storage)
        assert (result.returncode, result.stdout) == (2, ""), (command, result.stderr)
        assert result.stderr == (
            f"{spec_file}: spec.pretrain.epochs: duplicate key 'epochs' (line 6 and line 8); keep one\n"
        )
    assert list(storage.iterdir()) == [], "nothing may be written for a bad spec"


def test_repeated_keys_are_found_in_every_document_at_any_depth():
    text = (
        MINIMAL
        + "metadata: {name: again}\n---\n"
        + MINIMAL.replace("demo", "second")
        + "spec:\n  evaluate:\n    - task: eurosat\n      epochs: 1\n      epochs: 2\n"
    )
    with pytest.raises(SpecError) as error:
        load_documents(text, "two.yaml")
    assert [str(p) for p in error.value.problems] == [
        "two.yaml[document 1]: metadata: duplicate key 'metadata' (line 3 and line 4); keep one",
        "two.yaml[document 2]: spec.evaluate[0].epochs: duplicate key 'epochs' (line 12 and line 13); keep one",
    ]


def test_a_key_a_merge_provides_may_be_given_again_as_an_override():
    text = MINIMAL + (
        "spec:\n  evaluate:\n    - &probe {task: eurosat, epochs: 5, baselines: [random]}\n"
        "    - {<<: *probe, labelFraction: 0.1, epochs: 50}\n"
    )
    evaluations = load_documents(text, "x.yaml")[0].spec.evaluate
    assert [(e.epochs, e.label_fraction, e.baselines) for e in evaluations] == [
        (5, 1.0, ["random"]),
        (50, 0.1, ["random"]),
    ]


def test_a_stage_reads_its_stored_spec_as_secoctl_does(tmp_path):
    from secoctl.spec.file import read_experiment as load_spec

    stored = tmp_path / "spec.yaml"
    stored.write_text(MINIMAL + "metadata: {name: again}\n")
    with pytest.raises(SpecError, match="metadata: duplicate key 'metadata'"):
        load_spec(str(stored))


def test_duplicate_names_across_files_are_refused(tmp_path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(MINIMAL)
    result = run_cli("validate", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))
    assert result.returncode == 2 and "metadata.name: two experiments share this name" in result.stderr


def test_oscd_refuses_a_linear_probe_but_defaults_to_finetuning():
    base = {"apiVersion": "seco.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "x"}}
    experiment = parse_experiment({**base, "spec": {"evaluate": [{"task": "oscd"}]}})
    assert experiment.spec.evaluate[0].finetunes
    with pytest.raises(SpecError, match=r"spec.evaluate\[0\]: oscd trains a U-Net"):
        parse_experiment({**base, "spec": {"evaluate": [{"task": "oscd", "protocol": "linear"}]}})


def test_schema_comes_from_the_model_and_uses_yaml_field_names():
    result = run_cli("schema")
    assert result.returncode == 0
    assert '"batchSize"' in result.stdout and '"storageSecret"' in result.stdout
    assert json_schema()["title"] == "secoctl Experiment"
    assert Experiment.model_json_schema(by_alias=True)["additionalProperties"] is False


def _nested_anchors(levels: int = 9) -> str:
    """The classic "billion laughs": each level lists the one before nine times (9^9 values)."""
    lines = ['  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    return MINIMAL + "spec:\n" + "\n".join(lines) + "\n"


UNBOUNDED_SPECS = {
    "alias bomb": (
        _nested_anchors().encode(),
        "spec.l5[0]: line 10: more than 100000 values, an alias counting its anchor's again",
    ),
    "too many aliases": (
        (MINIMAL + "spec:\n  x: &x 1\n  y: [" + ", ".join(["*x"] * 101) + "]\n").encode(),
        "spec.y[100]: line 6: more than 100 aliases; write the values out instead",
    ),
    "recursive alias": (
        (MINIMAL + "spec: &self {collect: *self}\n").encode(),
        "spec.collect: line 4: alias *self repeats a node that contains it",
    ),
    "deep nesting": (
        (MINIMAL + "spec: {collect: " + "[" * 200_000 + "]" * 200_000 + "}\n").encode(),
        "nested deeper than 32 levels; a spec needs at most six",
    ),
    "not UTF-8": (
        MINIMAL.replace("demo", "d\xe9mo").encode("latin-1"),
        "not UTF-8 text: byte 0xe9 on line 3; save the file as UTF-8",
    ),
    "over 1 MiB": (
        (MINIMAL + "# " + "x" * 2**20 + "\n").encode(),
        "larger than 1 MiB, the most a Kubernetes ConfigMap",
    ),
}


@pytest.mark.parametrize("name", UNBOUNDED_SPECS)
def test_a_spec_beyond_the_bounds_is_refused_before_it_is_built(name, tmp_path):
    content, expected = UNBOUNDED_SPECS[name]
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_bytes(content)
    # The timeout only keeps a regression from hanging the suite; the refusal is what is asserted.
    for argument in (str(spec_file), "-"):
        with spec_file.open("rb") as stdin:
            result = run_cli("validate", argument, stdin=stdin, timeout=20)
        assert (result.returncode, result.stdout) == (2, ""), result.stderr[-500:]
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 1 and len(result.stderr) < 400
    with pytest.raises(SpecError, match=re.escape(expected.split(": ")[-1])):
        load_documents(content, "bad.yaml")


def test_stages_the_driver_and_status_read_a_stored_spec_within_the_same_bounds(tmp_path, storage):
    from secoctl.driver import main as driver_main
    from secoctl.spec.file import read_experiment as load_spec

    stored = storage / "experiments" / "demo" / "spec.yaml"
    stored.parent.mkdir(parents=True)
    stored.write_text(_nested_anchors())
    result = run_cli("status", "--local", storage=storage, timeout=20)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr[-500:]
    assert "more than 100000 values" in result.stderr and "Traceback" not in result.stderr
    for location in (str(stored), stored.as_uri()):
        with pytest.raises(SpecError, match="more than 100000 values"):
            load_spec(location)
    assert driver_main(["--spec", str(stored)]) == 2


def test_status_refuses_a_stored_spec_that_is_not_utf8_in_one_line(storage):
    stored = storage / "experiments" / "demo" / "spec.yaml"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(MINIMAL.encode() + b"# \xff\xfe\n")
    result = run_cli("status", "--local", storage=storage, timeout=20)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr[-500:]
    assert "UTF-8" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_an_error_line_quotes_a_long_value_cut_short():
    with pytest.raises(SpecError) as error:
        load_documents(
            MINIMAL + f"spec:\n  collect: {{source: {'x' * 100_000}}}\n  ? {'y' * 100_000}\n  : 1\n", "x.yaml"
        )
    lines = [str(p) for p in error.value.problems]
    assert len(lines) == 2 and all(len(line) < 400 for line in lines), lines
    assert any("(100000 characters)" in line for line in lines)


def test_storage_from_the_command_line_is_validated_as_spec_storage_is(tmp_path, storage):
    spec_file = tmp_path / "x.yaml"
    spec_file.write_text(MINIMAL)
    result = run_cli("apply", "--local", str(spec_file), "--storage", "s3://AKIA:abc@bucket/seco", storage=storage)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert (
        result.stderr == "--storage: spec.storage: credentials must not be written into the URI (user:password@); "
        "name a Secret (storageSecret) instead\n"
    )
    assert list(storage.iterdir()) == []


def test_a_specs_own_storage_wins_over_the_environment_and_a_different_storage_option_is_refused(monkeypatch, capsys):
    import typer

    from secoctl.errors import UserError
    from secoctl.loading import on_storage as _on_storage

    own = load_documents(MINIMAL + "spec: {storage: 's3://team/seco'}\n", "x.yaml")[0]
    bare = load_documents(MINIMAL, "x.yaml")[0]
    monkeypatch.setenv("SECOCTL_STORAGE", "s3://elsewhere/seco")
    assert _on_storage(own, None).spec.storage == "s3://team/seco"
    assert _on_storage(own, "s3://team/seco").spec.storage == "s3://team/seco"
    assert _on_storage(bare, None).spec.storage == "s3://elsewhere/seco"
    assert _on_storage(bare, "file:///data/seco").spec.storage == "file:///data/seco"
    with pytest.raises(UserError, match="--storage 's3://other/x' differs from demo's spec.storage 's3://team/seco'"):
        _on_storage(own, "s3://other/x")
    monkeypatch.setenv("SECOCTL_STORAGE", "file://relative")
    with pytest.raises(typer.Exit):
        _on_storage(bare, None)
    assert capsys.readouterr().err.startswith("$SECOCTL_STORAGE: spec.storage: 'file://relative' is not an absolute")


def test_input_bands_all_are_the_collected_ones_in_sentinel2_order_and_rgb_is_the_default():
    document = {
        "apiVersion": "seco.dev/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "demo"},
        "spec": {"collect": {"bands": ["B08", "B04", "B02", "B03"]}, "pretrain": {"inputBands": "all"}},
    }
    assert parse_experiment(document).spec.input_bands() == ["B02", "B03", "B04", "B08"]
    document["spec"]["pretrain"] = {"inputBands": ["B04", "B03", "B02"]}
    written_out = parse_experiment(document)
    assert written_out.spec.pretrain.input_bands is None and written_out.spec.input_bands() == ["B04", "B03", "B02"]
    assert "inputBands" not in written_out.to_yaml_dict()["spec"]["pretrain"]


def test_a_pretrain_node_whose_disk_cannot_cache_an_epoch_is_warned_about_not_refused(tmp_path):
    """The shard cache lives on the pod's /tmp (ephemeralStorage); too small, every epoch reads storage again."""
    from tests.conftest import run_cli

    spec = tmp_path / "small-disk.yaml"
    spec.write_text(
        "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: small-disk}\nspec:\n"
        "  collect: {locations: 100000}\n  pretrain: {resources: {ephemeralStorage: 50Gi}}\n"
    )
    result = run_cli("validate", str(spec))
    assert result.returncode == 0 and result.stdout == "small-disk: valid\n"
    assert (
        result.stderr.count("\n") == 1
        and "spec.pretrain.resources.ephemeralStorage: 50Gi leaves 40.0 GiB" in result.stderr
    )
    assert "a node reads 98.0 GiB an epoch" in result.stderr and "at least 123Gi" in result.stderr
    spec.write_text(spec.read_text().replace("50Gi", "123Gi"))
    assert run_cli("validate", str(spec)).stderr == ""


def test_a_spec_that_renders_past_what_the_api_server_stores_is_refused_by_validate(tmp_path, storage):
    labels = "".join(f"    k{i:05d}: {'v' * 40}\n" for i in range(10_000))
    spec_file = tmp_path / "labelled.yaml"
    spec_file.write_text(
        "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata:\n  name: demo\n  labels:\n" + labels
    )
    assert spec_file.stat().st_size < 2**20  # within the spec's own limit
    for command in ("validate", "render", "apply"):
        result = run_cli(command, str(spec_file), storage=storage)
        assert (result.returncode, result.stdout) == (2, ""), (command, result.stderr[-500:])
        assert (
            result.stderr.startswith("demo: metadata: renders ConfigMap demo-spec of ")
            and "more than the 1048576 bytes one Kubernetes object may hold" in result.stderr
        ), result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert list(storage.iterdir()) == []


# Cases from the sources k8s_rules ports: apimachinery's content/*_test.go, distribution/reference's
# reference_test.go and normalize_test.go, resource's quantity_test.go.
RULE_CASES = {
    k8s_rules.label_key: (
        ["a", "A.b_c-9", "example.com/MyName", "k8s.io/a", "a" * 63, f"{'a' * 253}/b"],
        ["", "/a", "a/", "a/b/c", "-a", "a_", "a" * 64, "Example.com/a", f"{'a' * 254}/b", "a\n"],
    ),
    k8s_rules.label_value: (["", "a", "a-b_c.d", "0" * 63], ["-", "a b", "a" * 64, "a\n", "é"]),
    k8s_rules.dns1123_subdomain: (["a", "a.b-c", "1.2.3", "a" * 253], ["", "A", "a.", ".a", "a_b", "a" * 254, "a\n"]),
    k8s_rules.dns1035_label: (["a", "a-1"], ["1a", "a.b", "-a", "a" * 64]),
    k8s_rules.request_quantity: (
        ["0", "4", "500m", "16Gi", "1.5Gi", ".5", "1.", "1e3", "1E-3", "1k", "1M", "+1", "-0"],
        ["", "1K", "1 Gi", " 1", "1Gb", "Gi", "1e", "0x10", "-1", "-1m", "1e400", "1.2.3"],
    ),
    k8s_rules.image_reference: (
        [
            "ubuntu",
            "ubuntu:22.04",
            "library/ubuntu",
            "docker.io/library/ubuntu:latest",
            "localhost:5000/a/b:c",
            "registry.example/secoctl:0.1.0",
            "REGISTRY.example/a",
            "[::1]:5000/a",
            "a__b/c--d",
            f"a@sha256:{'0' * 64}",
            f"a:b@sha512:{'f' * 128}",
            "a:" + "t" * 128,
        ],
        [
            "",
            "Ubuntu",
            "a/B",
            "registry.example/A",
            "a:",
            "a:-b",
            "a:" + "t" * 129,
            ":a",
            "a//b",
            "a/",
            "-a",
            "a b",
            " a",
            "a\n",
            f"a@sha256:{'0' * 63}",
            f"a@sha256:{'A' * 64}",
            f"a@md5:{'0' * 32}",
            "0" * 64,
            "a/" + "b" * 255,
            "http://registry.example/a",
        ],
    ),
}


@pytest.mark.parametrize("rule", RULE_CASES, ids=lambda rule: rule.__name__)
def test_the_servers_rules_as_ported_take_and_refuse_what_the_server_does(rule):
    valid, invalid = RULE_CASES[rule]
    assert {value: rule(value) for value in valid} == {value: [] for value in valid}
    assert [value for value in invalid if not rule(value)] == []


def test_a_toleration_is_checked_field_by_field_as_the_server_does():
    assert k8s_rules.toleration(None, "Exists", None) == []  # tolerates every taint
    assert k8s_rules.toleration("gpu", "Equal", "") == []
    assert [field for field, _ in k8s_rules.toleration("gpu", "Exists", "a")] == ["value"]
    assert [field for field, _ in k8s_rules.toleration("", "Equal", "a")] == ["operator"]
    assert [field for field, _ in k8s_rules.toleration("a b", "Equal", "c d")] == ["key", "value"]


def test_what_the_server_takes_is_no_longer_refused_and_renders():
    from secoctl import render

    experiment = parse_experiment(
        {
            "apiVersion": "seco.dev/v1alpha1",
            "kind": "Experiment",
            "metadata": {"name": "demo"},
            "spec": {
                "image": f"localhost:5000/seco/secoctl@sha256:{'a' * 64}",
                "storageSecret": {"secretName": "s3.credentials"},
                "priorityClassName": "batch.low",
                "collect": {
                    "resources": {
                        "cpu": "1.5e3",
                        "memory": "0.5Ti",
                        "nodeSelector": {"kubernetes.io/hostname": "n-1"},
                        "tolerations": [{"operator": "Exists"}],
                    }
                },
                "evaluate": [{"task": "eurosat", "baselines": ["imagenet", "seco.r18_v2:1"]}],
                "pretrain": {"resources": {"ephemeralStorage": "2.5e11"}},
                "publish": {"name": "seco_resnet18.v2", "version": "2026.12.rc1"},
            },
        }
    )
    pretrain = next(
        o for o in render.render(experiment) if (o["kind"], o["metadata"]["name"]) == ("Job", "demo-pretrain")
    )
    env = {e["name"]: e.get("value") for e in pretrain["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SECOCTL_SHARD_CACHE_BYTES"] == str(int(0.8 * 2.5e11))


def test_every_derived_name_of_the_longest_name_and_the_most_parts_is_one_the_server_takes():
    """Names render derives (NAME-SUFFIX, Indexed Job pods NAME-STAGE-INDEX, label values) stay within the
    server's limits whatever the spec, since metadata.name has at most MAX_NAME_LENGTH characters."""
    from secoctl import render

    name = "a" * MAX_NAME_LENGTH
    experiment = parse_experiment(
        {
            "apiVersion": "seco.dev/v1alpha1",
            "kind": "Experiment",
            "metadata": {"name": name},
            "spec": {
                "collect": {"workers": 10_000, "locations": 10_000},
                "pretrain": {"nodes": 1024, "gpusPerNode": 16, "batchSize": 16384, "queueSize": 16384},
                "evaluate": [{"task": "eurosat"}, {"task": "oscd"}],
                "publish": {"name": "w"},
            },
        }
    )
    for obj in render.render(experiment, namespace="n" * 63):
        metadata, spec = obj["metadata"], obj.get("spec", {})
        rule = k8s_rules.dns1035_label if obj["kind"] == "Service" else k8s_rules.dns1123_subdomain
        assert rule(metadata["name"]) == [], metadata["name"]
        assert [v for v in metadata["labels"].values() if k8s_rules.label_value(v)] == []
        if spec.get("completionMode") == "Indexed":
            hostname = f"{metadata['name']}-{spec['completions'] - 1}"
            assert k8s_rules.dns1123_label(hostname) == [], hostname
            assert k8s_rules.dns1123_label(spec["template"]["spec"].get("subdomain", "a")) == []
