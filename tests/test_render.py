import json

import kubernetes_validate
import pytest
import yaml

from secoctl.plan import RENDEZVOUS_PORT
from secoctl.render import LABEL_EXPERIMENT, LABEL_STAGE, render
from secoctl.spec.file import load_files
from tests.conftest import EXAMPLES, run_cli

# The oldest and newest Kubernetes minor versions we support: podFailurePolicy is GA from 1.31.
SUPPORTED_KUBERNETES = ("1.31.0", "1.37.0")


def _experiment(path):
    return load_files([path])[0]


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_rendered_objects_validate_strictly_against_kubernetes_schemas(example, version):
    result = run_cli("render", str(example))
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_rendering_is_deterministic_and_json_matches_yaml(example):
    first, second = run_cli("render", str(example)), run_cli("render", str(example))
    assert first.stdout == second.stdout
    as_json = json.loads(run_cli("render", str(example), "-o", "json").stdout)["items"]
    assert as_json == list(yaml.safe_load_all(first.stdout))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_object_is_labelled_and_every_pod_is_restricted(example):
    experiment = _experiment(example)
    for obj in render(experiment, "seco"):
        assert obj["metadata"]["labels"][LABEL_EXPERIMENT] == experiment.name
        assert obj["metadata"]["namespace"] == "seco"
        if obj["kind"] != "Job":
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["restartPolicy"] == "Never"
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert container["imagePullPolicy"] == "Always"
        assert {"secretRef"} >= {key for source in pod["containers"][0].get("envFrom", []) for key in source}


def test_pretrain_is_an_indexed_job_with_c10d_rendezvous_on_pod_zero():
    from secoctl.spec import parse_experiment

    document = _experiment(next(p for p in EXAMPLES if p.name == "seco-1m.yaml")).to_yaml_dict()
    document["spec"]["pretrain"].update(nodes=4, gpusPerNode=8)
    document["spec"]["pretrain"]["resources"]["memory"] = "400Gi"
    experiment = parse_experiment(document)
    objects = {(o["kind"], o["metadata"]["name"]): o for o in render(experiment, "seco")}
    job = objects[("Job", "seco-rn50-1m-pretrain")]
    service = objects[("Service", "seco-rn50-1m-pretrain")]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {LABEL_EXPERIMENT: "seco-rn50-1m", LABEL_STAGE: "pretrain"}
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    wrapped = pod["containers"][0]["command"]
    # The part runs under the wrapper that keeps its log in storage and its failure line where status reads it.
    assert wrapped[: wrapped.index("--")] == [
        "python",
        "-m",
        "jobs.common.logged",
        "--spec",
        "/etc/secoctl/spec.yaml",
        "--stage",
        "pretrain",
        "--termination-log",
        "/dev/termination-log",
    ]
    assert pod["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
    command = wrapped[wrapped.index("--") + 1 :]
    assert command[0] == "torchrun" and "--nnodes=4" in command and "--nproc-per-node=8" in command
    assert f"--rdzv-endpoint=seco-rn50-1m-pretrain-0.seco-rn50-1m-pretrain:{RENDEZVOUS_PORT}" in command
    assert command[-4:] == ["-m", "jobs.pretrain", "--spec", "/etc/secoctl/spec.yaml"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "400Gi"}} in pod["volumes"]
    # The node's training-shard cache: on its /tmp volume, 80% of ephemeralStorage (300Gi).
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["SECOCTL_SHARD_CACHE"] == "/tmp/training-shards"
    assert env["SECOCTL_SHARD_CACHE_BYTES"] == str(int(0.8 * 300 * 2**30))
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    # Kueue's preemption suspends the Job and the Job controller deletes its pods: no DisruptionTarget, and
    # each part stops on SIGTERM with 143, which must not be charged to backoffLimit (3 preemptions failed it).
    assert {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [143]}} in rules
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # Created suspended by apply; with queueName the driver adds Kueue's label in the stage's turn.
    assert job["spec"]["suspend"] is True
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]


def test_collect_is_an_indexed_job_with_one_pod_per_worker_and_retries_per_index():
    experiment = _experiment(next(p for p in EXAMPLES if p.name == "seco-100k.yaml"))
    job = next(o for o in render(experiment) if o["metadata"]["name"] == "seco-rn50-100k-collect")
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 16
    assert job["spec"]["backoffLimitPerIndex"] == 3 and "backoffLimit" not in job["spec"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "-m",
        "jobs.common.logged",
        "--spec",
        "/etc/secoctl/spec.yaml",
        "--stage",
        "collect",
        "--termination-log",
        "/dev/termination-log",
        "--",
        "python",
        "-m",
        "jobs.collect",
        "--spec",
        "/etc/secoctl/spec.yaml",
    ]


def test_the_configmap_carries_the_spec_that_parses_back_to_the_same_experiment():
    experiment = _experiment(next(p for p in EXAMPLES if p.name == "seco-archive.yaml"))
    config_map = next(o for o in render(experiment) if o["kind"] == "ConfigMap")
    from secoctl.spec.file import load_documents

    assert load_documents(config_map["data"]["spec.yaml"], "cm")[0] == experiment


def test_file_storage_on_a_cluster_is_shared_through_the_named_claim():
    experiment = _experiment(next(p for p in EXAMPLES if p.name == "seco-archive.yaml"))
    job = next(o for o in render(experiment) if o["metadata"]["name"].endswith("-collect"))
    pod = job["spec"]["template"]["spec"]
    assert {"name": "storage", "persistentVolumeClaim": {"claimName": "seco-data"}} in pod["volumes"]
    assert {"name": "storage", "mountPath": "/data/seco"} in pod["containers"][0]["volumeMounts"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_driver_may_only_read_and_start_its_own_stage_jobs_and_list_pods(example):
    experiment = _experiment(example)
    objects = render(experiment, "seco")
    stage_jobs = [
        o["metadata"]["name"] for o in objects if o["kind"] == "Job" and not o["metadata"]["name"].endswith("-driver")
    ]
    role = next(o for o in objects if o["kind"] == "Role")
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": stage_jobs, "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    # Every stage Job exists from apply on, suspended, and is sent before the driver that starts it.
    assert all(
        o["spec"]["suspend"] is True for o in objects if o["kind"] == "Job" and o["metadata"]["name"] in stage_jobs
    )
    assert objects[-1]["metadata"]["name"] == f"{experiment.name}-driver"


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_admin_manifests_validate_and_let_a_user_grant_the_driver_its_rules(version):
    from tests.conftest import ROOT

    manifests = [
        o
        for p in sorted((ROOT / "manifests").glob("*.yaml"))
        if p.name != "kustomization.yaml"
        for o in yaml.safe_load_all(p.read_text())
    ]
    for obj in manifests:
        kubernetes_validate.validate(obj, version, strict=True)
    user = next(o for o in manifests if o["kind"] == "Role")
    assert user["metadata"]["name"] == "secoctl-user"
    assert not any(o["kind"] in ("ServiceAccount", "RoleBinding") for o in manifests)
    driver = next(o for o in render(_experiment(EXAMPLES[0]), "seco") if o["kind"] == "Role")
    # RBAC lets a user grant only what the user holds.
    for rule in driver["rules"]:
        for resource in rule["resources"]:
            held = {
                v
                for r in user["rules"]
                if resource in r["resources"] and rule["apiGroups"] == r["apiGroups"]
                for v in r["verbs"]
            }
            assert set(rule["verbs"]) <= held, (resource, rule["verbs"], held)
    listed = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in (ROOT / "manifests").glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_only_pretrain_pods_accept_connections_and_only_from_each_other():
    experiment = _experiment(next(p for p in EXAMPLES if p.name == "seco-1m.yaml"))
    policies = {o["metadata"]["name"]: o["spec"] for o in render(experiment, "seco") if o["kind"] == "NetworkPolicy"}
    pretrain = {LABEL_EXPERIMENT: "seco-rn50-1m", LABEL_STAGE: "pretrain"}
    assert policies == {
        # Every pod of the experiment: no ingress (policies add up, so this denies all but the next).
        "seco-rn50-1m-isolated": {
            "podSelector": {"matchLabels": {LABEL_EXPERIMENT: "seco-rn50-1m"}},
            "policyTypes": ["Ingress"],
        },
        # Pretrain ranks, from each other only, on every port: c10d on RENDEZVOUS_PORT, NCCL and gloo on ephemeral ones.
        "seco-rn50-1m-pretrain": {
            "podSelector": {"matchLabels": pretrain},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": pretrain}}]}],
        },
    }


def test_every_pod_requests_local_disk_and_its_tmp_is_bounded_by_it():
    experiment = _experiment(next(p for p in EXAMPLES if p.name == "seco-1m.yaml"))
    expected = {
        "driver": "1Gi",
        "collect": "20Gi",
        "shards": "20Gi",
        "pretrain": "300Gi",
        "evaluate": "200Gi",
        "publish": "20Gi",
    }
    for job in (o for o in render(experiment, "seco") if o["kind"] == "Job"):
        stage = job["metadata"]["labels"][LABEL_STAGE]
        pod = job["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["requests"]["ephemeral-storage"] == expected[stage]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": expected[stage]}} in pod["volumes"]


def test_no_label_render_sets_can_be_given_and_no_experiment_is_named_like_an_admin_object():
    from unittest.mock import patch

    from secoctl.backends.kubernetes.jobstate import KUEUE_QUEUE_LABEL
    from secoctl.errors import SpecError
    from secoctl.spec import ADMIN_OBJECT_NAMES, derived_name_suffixes, parse_experiment
    from tests.conftest import ROOT

    def experiment(name: str, labels: dict[str, str]):
        return parse_experiment(
            {
                "apiVersion": "seco.dev/v1alpha1",
                "kind": "Experiment",
                "metadata": {"name": name, "labels": labels},
                "spec": {"queueName": "q"},
            }
        )

    objects = render(experiment("x", {"team": "a"}))
    metadata = [o["metadata"] for o in objects] + [
        o["spec"]["template"]["metadata"] for o in objects if o["kind"] == "Job"
    ]
    # what render sets, and the queue label the driver adds in a stage's turn
    ours = {key for m in metadata for key in m["labels"]} - {"team"} | {KUEUE_QUEUE_LABEL}
    assert LABEL_EXPERIMENT in ours
    for key in ours:
        with pytest.raises(SpecError, match="secoctl sets this label"):
            experiment("x", {key: "v"})
    full = _experiment(next(p for p in EXAMPLES if p.name == "seco-1m.yaml"))
    suffixes = {o["metadata"]["name"].removeprefix(full.name) for o in render(full)}
    assert suffixes == set(derived_name_suffixes())
    admin_names = {
        o["metadata"]["name"]
        for p in sorted((ROOT / "manifests").rglob("*.yaml"))
        if p.name != "kustomization.yaml"
        for o in yaml.safe_load_all(p.read_text())
    }
    assert admin_names == set(ADMIN_OBJECT_NAMES)
    # An admin name ending in a derived suffix ("team-driver") would make "team" refused; the names
    # manifests/ holds today collide with none, so the made one stands in for them.
    taken = [
        name.removesuffix(suffix)
        for name in {*admin_names, "team-driver"}
        for suffix in suffixes
        if name.endswith(suffix)
    ]
    assert taken == ["team"]
    for name in taken:
        with pytest.raises(SpecError, match="the name of objects an admin installs"):
            with patch("secoctl.spec.ADMIN_OBJECT_NAMES", (*ADMIN_OBJECT_NAMES, "team-driver")):
                experiment(name, {})


def test_a_storage_claim_is_kept_off_every_path_the_pods_mount():
    from secoctl.spec import POD_PATHS

    experiment = _experiment(next(p for p in EXAMPLES if p.name == "seco-archive.yaml"))
    mounts = {
        m["mountPath"]
        for o in render(experiment)
        if o["kind"] == "Job"
        for m in o["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        if m["name"] != "storage"
    }
    assert mounts and mounts <= set(POD_PATHS)


@pytest.mark.parametrize("policy", ["IfNotPresent", "Never"])
def test_the_specs_image_pull_policy_reaches_every_container_of_the_driver_and_every_stage(policy):
    from secoctl.spec import parse_experiment

    document = _experiment(next(p for p in EXAMPLES if p.name == "seco-1m.yaml")).to_yaml_dict()
    document["spec"]["imagePullPolicy"] = policy
    jobs = [o for o in render(parse_experiment(document), "seco") if o["kind"] == "Job"]
    assert {job["metadata"]["labels"][LABEL_STAGE] for job in jobs} == {
        "driver",
        "collect",
        "shards",
        "pretrain",
        "evaluate",
        "publish",
    }
    for job in jobs:
        for container in job["spec"]["template"]["spec"]["containers"]:
            assert container["imagePullPolicy"] == policy, job["metadata"]["name"]


def test_an_image_pull_policy_kubernetes_does_not_know_is_refused_naming_the_field(tmp_path):
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(
        "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: demo}\nspec: {imagePullPolicy: Sometimes}\n"
    )
    result = run_cli("render", str(spec_file))
    assert result.returncode == 2, result.stderr
    assert (
        "spec.imagePullPolicy: Input should be 'Always', 'IfNotPresent' or 'Never'; got 'Sometimes'" in result.stderr
    ), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_only_the_collect_pods_get_the_subscription_key_and_only_that_key_of_its_secret():
    from secoctl import plan
    from secoctl.spec import parse_experiment

    document = _experiment(next(p for p in EXAMPLES if p.name == "seco-1m.yaml")).to_yaml_dict()
    assert document["spec"]["collect"].get("source", "planetary-computer") == "planetary-computer"
    before = [stage.fingerprint for stage in plan.stages(parse_experiment(document))]
    document["spec"]["collect"]["subscriptionKeySecret"] = {"secretName": "pc-key"}
    experiment = parse_experiment(document)
    for job in (o for o in render(experiment, "seco") if o["kind"] == "Job"):
        container = job["spec"]["template"]["spec"]["containers"][0]
        keyed = [e for e in container["env"] if e["name"] == "PC_SDK_SUBSCRIPTION_KEY"]
        if job["metadata"]["labels"][LABEL_STAGE] == "collect":
            assert keyed == [
                {
                    "name": "PC_SDK_SUBSCRIPTION_KEY",
                    "valueFrom": {"secretKeyRef": {"name": "pc-key", "key": "PC_SDK_SUBSCRIPTION_KEY"}},
                }
            ]
        else:
            assert keyed == [] and "pc-key" not in json.dumps(job), job["metadata"]["name"]
    # a credential is not part of what a stage computes: adding one re-runs nothing
    assert [stage.fingerprint for stage in plan.stages(experiment)] == before


def test_only_the_pods_that_log_to_mlflow_get_its_token_and_only_that_key_of_its_secret():
    from secoctl import plan
    from secoctl.spec import parse_experiment

    document = _experiment(next(p for p in EXAMPLES if p.name == "seco-1m.yaml")).to_yaml_dict()
    before = [stage.fingerprint for stage in plan.stages(parse_experiment(document))]
    document["spec"]["tracking"] = {
        "mlflow": {"uri": "https://mlflow.example.org", "tokenSecret": {"secretName": "mlflow-token"}}
    }
    experiment = parse_experiment(document)
    jobs = [o for o in render(experiment, "seco") if o["kind"] == "Job"]
    logging = set()
    for job in jobs:
        container = job["spec"]["template"]["spec"]["containers"][0]
        keyed = [e for e in container["env"] if e["name"] == "MLFLOW_TRACKING_TOKEN"]
        if keyed:
            logging.add(job["metadata"]["labels"][LABEL_STAGE])
            assert keyed == [
                {
                    "name": "MLFLOW_TRACKING_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": "mlflow-token", "key": "MLFLOW_TRACKING_TOKEN"}},
                }
            ]
        else:
            assert "mlflow-token" not in json.dumps(job), job["metadata"]["name"]
    assert logging == {"pretrain", "evaluate", "publish"}
    assert [stage.fingerprint for stage in plan.stages(experiment)] == before  # tracking re-runs nothing


@pytest.mark.parametrize(
    ("mlflow", "problem"),
    [
        ("{uri: 'https://user:secret@mlflow.example.org'}", "name a Secret (tokenSecret) instead"),
        ("{uri: 'ftp://mlflow.example.org'}", "is not an http:// or https:// address of an MLflow tracking server"),
        (
            "{uri: 'https://mlflow.example.org', tokenSecret: {token: abc}}",
            "credentials must not be written into the spec",
        ),
    ],
)
def test_a_tracking_server_is_named_by_its_address_and_its_token_by_a_secret(tmp_path, mlflow, problem):
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(
        "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: demo}\n"
        f"spec: {{tracking: {{mlflow: {mlflow}}}}}\n"
    )
    result = run_cli("validate", str(spec_file))
    assert result.returncode == 2 and "spec.tracking.mlflow" in result.stderr and problem in result.stderr, (
        result.stderr
    )
    assert "Traceback" not in result.stderr and "secret@" not in result.stderr and "abc" not in result.stderr


def test_a_subscription_key_for_another_source_than_planetary_computer_is_refused(tmp_path):
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(
        "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: demo}\n"
        "spec: {collect: {source: stac, stacUrl: 'http://127.0.0.1:8081', "
        "subscriptionKeySecret: {secretName: pc-key}}}\n"
    )
    result = run_cli("validate", str(spec_file))
    assert result.returncode == 2 and "spec.collect" in result.stderr, result.stderr
    assert "subscriptionKeySecret signs Planetary Computer's assets" in result.stderr
    assert "Traceback" not in result.stderr


def test_only_pretrain_pods_get_the_grace_to_checkpoint_and_it_grows_with_the_model_and_the_step():
    from secoctl import stages
    from secoctl.spec import parse_experiment

    def stopping(**pretrain):
        document = _experiment(next(p for p in EXAMPLES if p.name == "seco-1m.yaml")).to_yaml_dict()
        document["spec"]["pretrain"].update(pretrain)
        experiment = parse_experiment(document)
        pods = {
            o["metadata"]["labels"][LABEL_STAGE]: o["spec"]["template"]["spec"]
            for o in render(experiment, "seco")
            if o["kind"] == "Job"
        }
        assert all("terminationGracePeriodSeconds" not in pod for stage, pod in pods.items() if stage != "pretrain")
        env = {e["name"]: e.get("value") for e in pods["pretrain"]["containers"][0]["env"]}
        # torchrun waits for its stopping workers as long as they may take, then the pod has EXIT_S more.
        shutdown = int(env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"])
        assert shutdown == stages.pretrain_stop_s(experiment.spec)
        assert pods["pretrain"]["terminationGracePeriodSeconds"] == shutdown + stages.EXIT_S
        return shutdown

    resnet50 = stopping()
    # seco-1m: 10 steps of 128 samples at 5 TFLOP/s (12.6 s), a 468 MB checkpoint at 50 MB/s (9.4 s), 20 s slack.
    assert resnet50 == 22 + 20
    assert stopping(backbone="resnet18") < resnet50  # a smaller checkpoint and a shorter step
    assert stopping(queueSize=65536) > resnet50  # the queues are in the checkpoint
    assert stopping(gpusPerNode=1, batchSize=128) == resnet50  # the same samples per rank
    assert stopping(gpusPerNode=0) > resnet50  # a CPU pod's step
