"""`secoctl validate` against the real API server: generated specs, one field changed at a time.

Every spec is judged twice. `validate` reads its YAML as a user's file; the server gets, with
`dryRun=All` and server-side apply as `apply` sends them, the objects rendered from the same spec
with that one field set past validation (pydantic's model_copy), so a value validate refuses still
reaches the server. A disagreement is a spec validate accepts whose objects the server refuses, or
one the server refuses that validate does not refuse with exit 2 and the changed field's path.
Validate may refuse more than the server: the kubelet's image rule, secoctl's own bounds.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from secoctl import render, stages
from secoctl.backends.kubernetes.client import FIELD_MANAGER, ApiError, Cluster
from secoctl.backends.kubernetes.jobstate import KUEUE_QUEUE_LABEL
from secoctl.cli import app
from secoctl.spec import Experiment, Toleration, k8s_rules, parse_experiment, quantity

NAMESPACE = "validation-parity"  # of its own: no quota or limit of manifests/ judges a request
SPECS = 600
MIN_SPECS = 500
BASE = {
    "apiVersion": "seco.dev/v1alpha1",
    "kind": "Experiment",
    "metadata": {"name": "parity"},
    "spec": {
        "storage": "file:///data/seco",
        "storageClaim": "secoctl-storage",
        "image": "registry.example/secoctl:test",
        "storageSecret": {"secretName": "s3-credentials"},
        "collect": {"source": "stac", "stacUrl": "http://stac.example", "locations": 8, "workers": 2},
        "pretrain": {
            "backbone": "resnet18",
            "nodes": 2,
            "gpusPerNode": 1,
            "batchSize": 16,
            "queueSize": 64,
            "maxSteps": 10,
        },
        "evaluate": [{"task": "eurosat", "protocol": "linear", "baselines": ["random"]}],
        "publish": {"name": "parity-weights", "version": "1"},
    },
}
RESOURCES = ("spec.collect.resources", "spec.pretrain.resources", "spec.evaluateResources")

# Values on both sides of each rule's edges: the rule's own language (twice as likely) and its
# alphabet with the characters users get wrong (upper case, '_', '.', '/', ':', spaces, a newline).
NAME_CHARS = "abz09-._A/ :\n"


def near(pattern: re.Pattern[str], alphabet: str = NAME_CHARS, max_size: int = 70) -> st.SearchStrategy[str]:
    valid = st.from_regex(pattern, fullmatch=True).filter(lambda value: len(value) <= max_size)
    return st.one_of(valid, valid, st.text(alphabet, max_size=max_size))


names = near(k8s_rules.DNS1123_SUBDOMAIN)
label_keys = st.builds(
    lambda prefix, name: prefix + name,
    st.sampled_from(["", "", "example.com/", "k8s.io/", "Example.com/", "a_b/", "/"]),
    near(k8s_rules.LABEL_NAME),
)
label_values = near(k8s_rules.LABEL_NAME)
quantities = near(k8s_rules.QUANTITY, "0123456789.+-eEkKMGTPimnu ", 24)
digests = st.sampled_from(
    [
        "",
        "",
        "",
        f"@sha256:{'a' * 64}",
        f"@sha256:{'a' * 63}",
        f"@sha256:{'A' * 64}",
        f"@sha512:{'0' * 128}",
        f"@md5:{'0' * 32}",
        "@sha256:",
    ]
)
images = st.one_of(
    st.builds(
        lambda host, path, tag, digest: host + path + tag + digest,
        st.sampled_from(
            [
                "",
                "localhost:5000/",
                "registry.example/",
                "Registry.Example:5000/",
                "[::1]/",
                "127.0.0.1:80/",
                "a_b/",
                "http://",
            ]
        ),
        near(re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)?"), "abzAZ09._-/", 20),
        st.just("") | near(re.compile(r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,130}"), ":abz09._-", 132),
        digests,
    ),
    st.text("abAZ09._-/:@ \n", max_size=30),
)
tolerations = st.lists(
    st.fixed_dictionaries(
        {
            "key": st.none() | label_keys,
            "operator": st.sampled_from(["Exists", "Equal", "Exists", "Equal", "Lt", ""]),
            "value": st.none() | st.none() | label_values,
            "effect": st.sampled_from([None, "NoSchedule", "PreferNoSchedule", "NoExecute", "Never"]),
        }
    ),
    max_size=2,
)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _resources_field(field: str, values: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(st.sampled_from([f"{where}.{field}" for where in RESOURCES]), values)


# One strategy per spec field that becomes a Kubernetes field: (the field's path, a value for it).
FIELDS = st.one_of(
    st.tuples(st.just("metadata.name"), near(k8s_rules.DNS1035_LABEL) | near(k8s_rules.DNS1123_LABEL) | names),
    st.tuples(st.just("metadata.labels"), st.dictionaries(label_keys, label_values, min_size=1, max_size=2)),
    st.tuples(st.sampled_from(["spec.image", "spec.driverImage"]), images),
    st.tuples(
        st.sampled_from(
            ["spec.priorityClassName", "spec.storageClaim", "spec.storageSecret.secretName", "spec.queueName"]
        ),
        names,
    ),
    st.tuples(
        st.just("spec.storage"),
        st.builds(
            "file://{}".format,
            near(re.compile(r"(/[a-z0-9._:-]{1,8}){1,3}"), "/abz.:_ -", 24)
            | st.sampled_from(["/tmp", "/etc/secoctl", "/dev/shm", "/"]),
        ),
    ),
    _resources_field("cpu", quantities),
    _resources_field("memory", quantities),
    _resources_field("ephemeral_storage", quantities),
    _resources_field("node_selector", st.dictionaries(label_keys, label_values, min_size=1, max_size=2)),
    _resources_field("tolerations", tolerations),
    st.tuples(st.just("spec.collect.workers"), st.integers(-3, 120_000)),
    st.tuples(st.just("spec.pretrain.gpus_per_node"), st.integers(-2, 20)),
    st.tuples(st.just("spec.evaluateResources.gpus"), st.integers(-2, 20)),
)


def _document(path: str, value: Any) -> dict[str, Any]:
    """BASE with the field at `path` (snake or camel case) set to `value`, as a user would write it."""
    document = yaml.safe_load(yaml.safe_dump(BASE))
    *parents, leaf = [_camel(part) for part in path.split(".")]
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = [{k: v for k, v in t.items() if v is not None} for t in value] if leaf == "tolerations" else value
    return document


def _unvalidated(experiment: Experiment, path: str, value: Any) -> Experiment:
    """`experiment` with the field at `path` set to `value` past validation, for the server to judge."""
    *parents, leaf = [part if "_" in part else _snake(part) for part in path.split(".")]
    if leaf == "tolerations":
        value = [Toleration.model_construct(**t) for t in value]
    chain = [experiment]
    for part in parents:
        chain.append(getattr(chain[-1], part))
    for model, part in zip(reversed(chain), [leaf, *reversed(parents)]):
        value = model.model_copy(update={part: value})
    return value


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


def _any_cache_budget(ephemeral_storage: str) -> int:
    """render's shard-cache size, also for a quantity validate refuses: the server judges the request and
    the /tmp sizeLimit that carry the quantity itself, not this number derived from it."""
    try:
        return quantity.cache_budget(ephemeral_storage)
    except ValueError:
        return 0


def _as_sent(experiment: Experiment) -> list[dict[str, Any]]:
    """What the server gets of an experiment: the rendered objects, each stage Job with the queue label
    the driver adds in its turn (secoctl.driver) when the spec names a Kueue queue."""
    objects, stage_jobs = render.render(experiment, NAMESPACE), render.stage_job_names(experiment)
    for obj in objects:
        if experiment.spec.queue_name and obj["kind"] == "Job" and obj["metadata"]["name"] in stage_jobs:
            obj["metadata"]["labels"][KUEUE_QUEUE_LABEL] = experiment.spec.queue_name
    return objects


def _server_refusals(cluster: Cluster, objects: list[dict[str, Any]]) -> list[str]:
    refusals = []
    for obj in objects:
        path = cluster.path(obj["kind"]) + "/" + quote(obj["metadata"]["name"], safe="")
        try:
            cluster.request(
                "PATCH",
                path,
                body=obj,
                content_type="application/apply-patch+yaml",
                query=[("fieldManager", FIELD_MANAGER), ("force", "true"), ("dryRun", "All")],
            )
        except ApiError as error:  # server-side apply answers 500 for a quantity it cannot parse
            refusals.append(f"{obj['kind']} {obj['metadata']['name']!r}: {error}")
    return refusals


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_validate_refuses_first_whatever_the_server_refuses(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(cluster.admin_kubeconfig))
    monkeypatch.setattr(stages, "cache_budget", _any_cache_budget)
    cluster.kubectl("create", "namespace", NAMESPACE)
    server = Cluster(namespace=NAMESPACE)
    base = parse_experiment(BASE)
    assert _server_refusals(server, _as_sent(base)) == []
    spec_file, runner = tmp_path / "spec.yaml", CliRunner()
    judged: Counter[str] = Counter()
    disagreements: list[str] = []

    @settings(
        max_examples=SPECS,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(FIELDS)
    def judge(change: tuple[str, Any]) -> None:
        path, value = change
        spec_file.write_text(yaml.safe_dump(_document(path, value)))
        result = runner.invoke(app, ["validate", str(spec_file)])
        accepted = result.exit_code == 0
        experiment = parse_experiment(_document(path, value)) if accepted else _unvalidated(base, path, value)
        refusals = _server_refusals(server, _as_sent(experiment))
        field = ".".join(_camel(part) for part in path.split("."))
        judged[
            f"{field} {'accepted' if accepted else 'refused'} by validate, "
            f"{'refused' if refusals else 'accepted'} by the server"
        ] += 1
        if refusals and (result.exit_code != 2 or f": {field}" not in result.stderr):
            disagreements.append(
                f"{field} = {value!r}: validate exit {result.exit_code} {result.stderr.strip()!r}; "
                f"server: {refusals[0]}"
            )

    judge()
    for line in sorted(judged.items()):
        print(f"{line[1]:5d}  {line[0]}", file=sys.stderr)
    print(
        f"validation parity: {sum(judged.values())} generated specs, {len(disagreements)} disagreements",
        file=sys.stderr,
    )
    for line in disagreements:
        print(f"  {line}", file=sys.stderr)
    assert sum(judged.values()) >= MIN_SPECS
    assert disagreements == []
