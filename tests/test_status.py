"""The METRIC column of `secoctl status` speaks for the whole stage, not for whichever part wrote last."""

from jobs.common.part import Part
from secoctl import store
from secoctl.backends.kubernetes.jobstate import JobFacts
from secoctl.plan import Stage, StageStatus
from secoctl.spec.file import load_documents
from secoctl.status import cluster_rows, rows
from secoctl.tree import StageFacts, StageTree, experiment_uri, read_facts

COLLECT_SUMS = {"counts": ["accepted", "dropped", "failed"], "rates": ["patches_per_s"]}


def collect_record(accepted: int, patches_per_s: float, updated_at: float) -> dict:
    return {
        "done": accepted,
        "total": 200,
        "unit": "locations",
        "updated_at": updated_at,
        "summed": COLLECT_SUMS,
        "metrics": {"accepted": accepted, "dropped": 2, "failed": 1, "patches_per_s": patches_per_s},
    }


def pretrain_record(loss: float, samples_per_s: float, updated_at: float) -> dict:
    return {
        "done": 10,
        "total": 100,
        "unit": "steps",
        "updated_at": updated_at,
        "summed": {"counts": [], "rates": []},
        "metrics": {"loss": loss, "samples_per_s": samples_per_s},
    }


def metric(stage: str, parts: int, state: str, facts: StageFacts) -> str:
    status = StageStatus(Stage(stage, parts, (), "fingerprint"), state, len(facts.parts_done))
    return rows("demo", [status], {stage: facts}, now=1000.0)[0].metric


def test_counts_and_rates_of_two_running_collect_parts_add_up():
    facts = StageFacts(
        running={"pid": 1}, progress={0: collect_record(110, 20.0, 100.0), 1: collect_record(110, 30.0, 101.0)}
    )
    assert metric("collect", 2, "running", facts) == "accepted=220 dropped=4 failed=2 patches_per_s=50"


def test_a_finished_parts_rate_leaves_the_live_rate_but_its_counts_stay():
    facts = StageFacts(
        running={"pid": 1},
        parts_done={0},
        progress={0: collect_record(110, 20.0, 100.0), 1: collect_record(60, 30.0, 101.0)},
    )
    assert metric("collect", 2, "running", facts) == "accepted=170 dropped=4 failed=2 patches_per_s=30"


def test_once_no_part_runs_every_parts_rate_adds_up():
    facts = StageFacts(
        success={"completed_at": 200.0},
        parts_done={0, 1},
        progress={0: collect_record(110, 20.0, 100.0), 1: collect_record(110, 30.0, 101.0)},
    )
    assert metric("collect", 2, "complete", facts) == "accepted=220 dropped=4 failed=2 patches_per_s=50"


def test_a_running_stage_says_how_many_of_its_parts_are_reporting():
    facts = StageFacts(running={"pid": 1}, progress={1: collect_record(110, 30.0, 101.0)})
    assert metric("collect", 2, "running", facts) == (
        "accepted=110 dropped=2 failed=1 patches_per_s=30 (1 of 2 parts reporting)"
    )
    stopped = StageFacts(failed={"reason": "x"}, progress=facts.progress)
    assert "reporting" not in metric("collect", 2, "failed", stopped)


def test_a_global_rate_every_pretrain_node_reports_is_not_doubled():
    facts = StageFacts(
        running={"pid": 1}, progress={0: pretrain_record(4.5, 800.0, 100.0), 1: pretrain_record(4.25, 800.0, 101.0)}
    )
    assert metric("pretrain", 2, "running", facts) == "loss=4.25 samples_per_s=800"


def test_a_distributed_stages_steps_are_its_nodes_shared_steps_not_their_sum():
    facts = StageFacts(
        running={"pid": 1}, progress={0: pretrain_record(4.5, 800.0, 100.0), 1: pretrain_record(4.25, 800.0, 101.0)}
    )
    status = StageStatus(Stage("pretrain", 2, (), "fingerprint", distributed=True), "running", 0)
    assert rows("demo", [status], {"pretrain": facts}, now=1000.0)[0].progress == "10/100 steps (10%), 0/2 parts"
    collect = StageFacts(
        running={"pid": 1}, progress={0: collect_record(110, 20.0, 100.0), 1: collect_record(60, 30.0, 101.0)}
    )
    status = StageStatus(Stage("collect", 2, (), "fingerprint"), "running", 0)
    assert rows("demo", [status], {"collect": collect}, now=1000.0)[0].progress == "170/400 locations (42%), 0/2 parts"


def test_the_progress_bar_of_apply_counts_a_distributed_stage_as_status_does():
    from secoctl.console import RichObserver

    facts = StageFacts(
        running={"pid": 1}, progress={0: pretrain_record(4.5, 800.0, 100.0), 1: pretrain_record(4.25, 800.0, 101.0)}
    )
    stage = Stage("pretrain", 2, (), "fingerprint", distributed=True)
    observer = RichObserver()
    observer.stage_started(stage, 0)
    observer.stage_progress(stage, facts)
    task = observer.progress.tasks[0]
    assert (task.completed, task.total) == (10, 100)
    assert task.fields["detail"].startswith("10/100 steps")


def test_both_executors_speak_one_state_vocabulary_and_every_state_has_a_colour():
    from typing import get_args

    from secoctl.backends.kubernetes.jobstate import job_facts
    from secoctl.plan import assess
    from secoctl.states import STYLE, State

    assert set(STYLE) == set(get_args(State))
    job = {"metadata": {"uid": "u", "labels": {}}, "spec": {"suspend": True}, "status": {}}
    experiment = load_documents(
        "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: demo}\n", "demo.yaml"
    )[0]
    seen = {job_facts(None, []).state, job_facts(job, []).state, *(s.state for s in assess(experiment, {}))}
    assert seen <= set(STYLE)


def test_records_written_before_parts_declared_sums_show_the_latest_part():
    old = [
        {key: value for key, value in collect_record(accepted, 10.0, at).items() if key != "summed"}
        for accepted, at in ((110, 100.0), (90, 101.0))
    ]
    facts = StageFacts(running={"pid": 1}, progress=dict(enumerate(old)))
    assert metric("collect", 2, "running", facts) == "accepted=90 dropped=2 failed=1 patches_per_s=10"


def test_the_cluster_table_adds_up_a_running_jobs_parts_too():
    facts = StageFacts(progress={0: collect_record(110, 20.0, 100.0), 1: collect_record(110, 30.0, 101.0)})
    status = StageStatus(Stage("collect", 3, (), "fingerprint"), "ready", 0)
    row = cluster_rows("demo", {"collect": JobFacts("running")}, [status], {"collect": facts})[0]
    assert row.metric == "accepted=220 dropped=4 failed=2 patches_per_s=50 (2 of 3 parts reporting)"


def test_the_sums_a_part_declares_are_what_status_reads(tmp_path):
    experiment = load_documents(
        "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: demo}\n", "demo.yaml"
    )[0]
    tree = StageTree(experiment_uri(tmp_path.as_uri(), "demo"), "collect")
    for index in (0, 1):
        Part(experiment, "collect", index, 2, tree).progress(
            110, 200, "locations", force=True, accepted=110, loss=0.5, counts=("accepted",)
        )
    assert metric("collect", 2, "running", read_facts(tree)) == "accepted=220 loss=0.5"


def test_a_storage_named_but_absent_is_an_error_and_an_empty_one_lists_nothing(tmp_path, storage):
    from tests.conftest import run_cli

    missing = run_cli("status", "--storage", (tmp_path / "typo").as_uri())
    assert (missing.returncode, missing.stdout) == (2, "")
    assert (
        missing.stderr
        == f"error: storage {(tmp_path / 'typo').as_uri()} does not exist; check --storage or $SECOCTL_STORAGE\n"
    )
    empty = run_cli("status", "--storage", storage.as_uri())
    assert (empty.returncode, empty.stdout) == (0, f"no experiments in {storage.as_uri()}\n")
    first_run = run_cli("status")  # the embedded default is absent until a first apply makes it
    assert first_run.returncode == 0 and first_run.stdout.startswith("no experiments in file://")


def test_an_absent_bucket_is_an_error_and_wrong_credentials_are_one_line(monkeypatch, tmp_path):
    import s3fs

    from jobs.localcloud.servers import s3_server
    from tests.conftest import run_cli

    (tmp_path / "weed").mkdir()
    with s3_server(tmp_path / "weed") as endpoint:
        for key, value in endpoint.environment().items():
            monkeypatch.setenv(key, value)
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir("present")
        empty = run_cli("status", "--local", "--storage", "s3://present/seco")
        assert (empty.returncode, empty.stdout) == (0, "no experiments in s3://present/seco\n"), empty.stderr
        missing = run_cli("status", "--local", "--storage", "s3://absent/seco")
        assert (missing.returncode, missing.stdout) == (2, ""), missing.stderr
        assert missing.stderr == "error: storage s3://absent/seco does not exist; check --storage or $SECOCTL_STORAGE\n"
        weights = run_cli("weights", "list", "--storage", "s3://absent/seco")
        assert (weights.returncode, weights.stdout) == (2, ""), weights.stdout
        assert weights.stderr == "error: storage s3://absent/seco does not exist; check --storage or $SECOCTL_STORAGE\n"
        assert run_cli("weights", "list", "--storage", "s3://present/seco").returncode == 0
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        denied = run_cli("status", "--local", "--storage", "s3://present/seco")
        assert (denied.returncode, denied.stdout) == (2, ""), denied.stderr
        assert denied.stderr.startswith("error: storage s3://present/seco: access denied (")
        assert len(denied.stderr.splitlines()) == 1


def _workload(name: str, priority: int, created: str, reserved: bool = False, queue: str = "gpu-queue") -> dict:
    conditions = [
        {
            "type": "QuotaReserved",
            "status": "True" if reserved else "False",
            "reason": "Pending",
            "message": "couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu",
        }
    ]
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"queueName": queue, "priority": priority},
        "status": {"conditions": conditions},
    }


def test_the_place_in_line_follows_kueues_order_priority_then_arrival():
    from secoctl.backends.kubernetes.jobstate import pending_in_queue

    early, late, urgent = (
        _workload("early", 1000, "2026-11-25T10:00:00Z"),
        _workload("late", 1000, "2026-11-25T11:00:00Z"),
        _workload("urgent", 2000, "2026-11-25T12:00:00Z"),
    )
    running, elsewhere = (
        _workload("running", 5000, "2026-11-25T09:00:00Z", reserved=True),
        _workload("other", 5000, "2026-11-25T09:00:00Z", queue="cpu-queue"),
    )
    every = [late, running, early, elsewhere, urgent]
    assert [pending_in_queue(w, every) for w in (urgent, early, late)] == [(1, 3), (2, 3), (3, 3)]
    assert pending_in_queue(running, every) is None  # holding quota: no longer in line


def test_a_queued_job_says_where_it_waits_and_kueues_reason():
    from secoctl.backends.kubernetes.jobstate import job_facts

    job = {"metadata": {"uid": "u1", "labels": {"kueue.x-k8s.io/queue-name": "gpu-queue"}}, "spec": {"suspend": True}}
    workload = _workload("job-x", 1000, "2026-11-25T10:00:00Z")
    facts = job_facts(job, [], workload, (2, 3))
    assert facts.state == "queued"
    assert facts.reasons == (
        "queued in LocalQueue gpu-queue, position 2 of 3: couldn't assign flavors to pod set main: "
        "insufficient quota for nvidia.com/gpu",
    )
    # The driver cannot read Workloads: it says what it knows, not that Kueue is missing.
    assert job_facts(job, []).reasons == ("queued for LocalQueue gpu-queue: waiting for Kueue to admit the Job",)
    assert "no Workload" in job_facts(job, [], None).reasons[0]


def test_one_unreadable_stored_spec_is_its_own_row_and_every_other_experiment_shows(storage):
    import json

    from secoctl.stored import prepare_storage
    from tests.conftest import run_cli

    good = load_documents("apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: good}\n", "good.yaml")[
        0
    ].with_storage(storage.as_uri())
    prepare_storage(experiment_uri(storage.as_uri(), "good"), good)
    corrupt = storage / "experiments" / "corrupt" / "spec.yaml"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text("apiVersion: [\n")
    result = run_cli("status", "--local", "-o", "json", storage=storage)
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert [(r["experiment"], r["state"]) for r in table if r["experiment"] == "good"][0] == ("good", "ready")
    unreadable = [r for r in table if r["experiment"] == "corrupt"]
    assert [(r["stage"], r["state"]) for r in unreadable] == [("-", "unreadable")]
    assert "invalid YAML" in unreadable[0]["detail"]
    drawn = run_cli("status", "--local", storage=storage)
    assert drawn.returncode == 0 and "unreadable" in drawn.stdout and "good" in drawn.stdout, drawn.stderr


QUICKSTART_COLLECT = {"accepted": 220, "dropped": 36, "failed": 0, "patches_per_s": 41.5, "in_flight": 16}


def running_pretrain(done: int, per_s: float | None, updated_at: float, **metrics) -> dict:
    record = {
        "done": done,
        "total": 300,
        "unit": "steps",
        "updated_at": updated_at,
        "summed": {"counts": [], "rates": []},
        "metrics": {"loss": 6.3, "samples_per_s": 105.2, "shard_fetches": 32, **metrics},
    }
    return record if per_s is None else {**record, "per_s": per_s}


def test_a_running_stage_has_an_eta_from_its_steps_left_and_recent_rate():
    status = StageStatus(Stage("pretrain", 1, (), "fingerprint"), "running", 0)
    facts = StageFacts(running={"pid": 1}, progress={0: running_pretrain(100, 2.0, 990.0)})
    row = rows("demo", [status], {"pretrain": facts}, now=1000.0)[0]
    assert (row.eta_s, row.eta) == (90.0, "1m")  # 200 steps at 2 a second, 10 s of them gone since the report
    assert (
        rows(
            "demo",
            [status],
            {"pretrain": StageFacts(running={"pid": 1}, progress={0: running_pretrain(100, None, 990.0)})},
            now=1000.0,
        )[0].eta_s
        is None
    ), "no rate yet: no ETA rather than a guess"
    done = StageStatus(Stage("pretrain", 1, (), "fingerprint"), "complete", 1)
    assert rows("demo", [done], {"pretrain": facts}, now=1000.0)[0].eta == ""


def test_summed_parts_add_their_rates_and_the_nodes_of_a_distributed_stage_go_at_the_slowest():
    collect = StageFacts(
        running={"pid": 1},
        progress={
            0: {**collect_record(100, 1.0, 1000.0), "per_s": 1.0},
            1: {**collect_record(100, 1.0, 1000.0), "per_s": 3.0},
        },
    )
    status = StageStatus(Stage("collect", 2, (), "fingerprint"), "running", 0)
    assert rows("demo", [status], {"collect": collect}, now=1000.0)[0].eta_s == 50.0  # 200 left at 4 a second
    nodes = StageFacts(
        running={"pid": 1}, progress={0: running_pretrain(100, 2.0, 1000.0), 1: running_pretrain(100, 4.0, 1000.0)}
    )
    status = StageStatus(Stage("pretrain", 2, (), "fingerprint", distributed=True), "running", 0)
    assert rows("demo", [status], {"pretrain": nodes}, now=1000.0)[0].eta_s == 100.0


def test_a_part_reports_its_recent_rate_once_it_has_two_reports(tmp_path, monkeypatch):
    import jobs.common.part as part_module

    experiment = load_documents(
        "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: demo}\n", "demo.yaml"
    )[0]
    tree = StageTree(experiment_uri(tmp_path.as_uri(), "demo"), "pretrain")
    clock = iter([100.0, 110.0])
    monkeypatch.setattr(part_module.time, "monotonic", lambda: next(clock))
    part = Part(experiment, "pretrain", 0, 1, tree)
    part.progress(10, 300, "steps", force=True)
    assert "per_s" not in read_facts(tree).progress[0]
    part.progress(30, 300, "steps", force=True)
    assert read_facts(tree).progress[0]["per_s"] == 2.0


def test_a_stage_whose_embeddings_stay_collapsed_is_marked_with_the_figure():
    from secoctl import collapse

    status = StageStatus(Stage("pretrain", 1, (), "fingerprint"), "running", 0)
    low = running_pretrain(100, 2.0, 1000.0, embed_std=0.00012, embed_std_low_logs=collapse.ALARM_LOGS)
    row = rows("demo", [status], {"pretrain": StageFacts(running={"pid": 1}, progress={0: low})}, now=1000.0)[0]
    assert row.alert == row.summary == "collapsing? embed_std=0.00012"
    brief = running_pretrain(100, 2.0, 1000.0, embed_std=0.00012, embed_std_low_logs=collapse.ALARM_LOGS - 1)
    row = rows("demo", [status], {"pretrain": StageFacts(running={"pid": 1}, progress={0: brief})}, now=1000.0)[0]
    assert row.alert == "" and row.summary == "loss=6.3 embed_std=0.00012"


def test_at_80_columns_every_stage_is_one_line_and_wide_carries_the_rest():
    from rich.console import Console

    from secoctl.console import status_table

    stages = [
        StageStatus(Stage("collect", 2, (), "f"), "complete", 2),
        StageStatus(Stage("shards", 1, (), "f"), "complete", 1),
        StageStatus(Stage("pretrain", 1, (), "f"), "running", 0),
        StageStatus(Stage("evaluate", 1, (), "f"), "ready", 0),
    ]
    collect = {
        "done": 256,
        "total": 256,
        "unit": "locations",
        "updated_at": 900.0,
        "summed": COLLECT_SUMS,
        "metrics": QUICKSTART_COLLECT,
    }
    facts = {
        "collect": StageFacts(success={"completed_at": 900.0}, parts_done={0, 1}, progress={0: collect, 1: collect}),
        "pretrain": StageFacts(
            running={"pid": 1, "started_at": 950.0}, progress={0: running_pretrain(150, 2.0, 1000.0)}
        ),
    }
    table = rows("quickstart", stages, facts, now=1000.0)
    console = Console(width=80, record=True, color_system=None)
    console.print(status_table(table))
    lines = [line.strip() for line in console.export_text().splitlines()]
    assert len(lines) == 1 + len(stages) and max(map(len, lines)) <= 80, lines
    assert "in_flight" not in "".join(lines) and "EXPERIMENT" not in lines[0]
    pretrain = next(line for line in lines if line.startswith("pretrain"))
    assert "150/300 steps 50%" in pretrain and "1m" in pretrain  # 150 steps left at 2 a second
    assert "accepted=440 dropped=72" in next(line for line in lines if line.startswith("collect"))
    wide = Console(width=200, record=True, color_system=None)
    wide.print(status_table(table, wide=True))
    drawn = wide.export_text()
    assert "in_flight=16" in drawn and "patches_per_s" in drawn and "150/300 steps (50%), 0/1 parts" in drawn


def test_status_of_a_finished_quickstart_at_80_columns_is_one_line_a_stage(storage):
    import json
    import time

    from secoctl import plan
    from secoctl.spec.file import read_spec
    from secoctl.stored import prepare_storage
    from tests.conftest import ROOT, run_cli

    experiment = load_documents(read_spec(str(ROOT / "examples/quickstart.yaml")), "quickstart.yaml")[0]
    experiment = experiment.with_storage(storage.as_uri())
    root = experiment_uri(storage.as_uri(), "quickstart")
    prepare_storage(root, experiment)
    reports = {
        "collect": (256, 256, "locations", QUICKSTART_COLLECT),
        "shards": (1, 1, "shards", {"shards": 1}),
        "pretrain": (
            300,
            300,
            "steps",
            {"loss": 6.31, "samples_per_s": 105.2, "shard_fetches": 32, "embed_std": 0.061, "embed_std_low_logs": 0},
        ),
        "evaluate": (1, 2, "models", {}),
    }
    for stage in plan.stages(experiment, single_machine=True):
        tree = StageTree(root, stage.name)
        if stage.name in reports:
            done, total, unit, metrics = reports[stage.name]
            Part(experiment, stage.name, 0, 1, tree).progress(done, total, unit, force=True, **metrics)
        if stage.name == "evaluate":  # an apply stopped half way through
            store.write_json(tree.running, {"pid": 2**22 + 1, "host": "elsewhere", "started_at": time.time()})
        elif stage.name != "publish":
            store.write_json(tree.success, {"fingerprint": stage.fingerprint, "completed_at": time.time(), "parts": 1})
    drawn = run_cli("status", "quickstart", storage=storage, environment={"COLUMNS": "80"})
    assert drawn.returncode == 0, drawn.stderr
    lines = drawn.stdout.splitlines()
    assert len(lines) == 1 + len(plan.stages(experiment, single_machine=True)), drawn.stdout
    assert max(map(len, lines)) <= 80 and "in_flight" not in drawn.stdout, drawn.stdout
    assert "accepted=220 dropped=36" in drawn.stdout and "loss=6.31 embed_std=0.061" in drawn.stdout
    assert "interrupted" in drawn.stdout
    table = json.loads(run_cli("status", "quickstart", "-o", "json", storage=storage).stdout)
    evaluate = next(row for row in table if row["stage"] == "evaluate")
    assert evaluate["progress"] == "1/2 models (50%), 0/1 parts" and evaluate["eta_s"] is None
    collect = next(row for row in table if row["stage"] == "collect")
    assert collect["metrics"]["in_flight"] == 16 and collect["alert"] == ""
    wide = run_cli("status", "quickstart", "-o", "wide", storage=storage, environment={"COLUMNS": "80"})
    assert "in_flight=16" in wide.stdout and "patches_per_s=41.5" in wide.stdout
    wrong = run_cli("status", "-o", "yaml", storage=storage)
    assert (wrong.returncode, wrong.stderr) == (2, "error: -o/--output: 'yaml' is not one of table, wide, json\n")
