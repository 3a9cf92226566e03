from secoctl import plan, stages
from secoctl.spec import parse_experiment
from secoctl.tree import StageFacts


def experiment(**spec):
    return parse_experiment(
        {"apiVersion": "seco.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "demo"}, "spec": spec}
    )


FULL = {
    "evaluate": [{"task": "eurosat"}],
    "publish": {"name": "demo-weights"},
    "pretrain": {"nodes": 2, "gpusPerNode": 8},
}
# FULL's fingerprints since fields at their defaults were left out of them (2026-11-30), and since the
# training-shards stage came between collect and pretrain (2026-12-02, issue 26): collect's is unchanged,
# every stage after it reads the training shards now, so theirs moved.
PINNED = {
    "collect": "f9d6d7632cb836f9",
    "shards": "935565a429e02ea0",
    "pretrain": "1b491c05284b27d8",
    "evaluate": "8d4e83c9f76c0ab6",
    "publish": "ab5b29d425f4d194",
}


def test_stages_run_in_the_papers_order_and_only_those_asked_for():
    assert [s.name for s in plan.stages(experiment(**FULL))] == ["collect", "shards", "pretrain", "evaluate", "publish"]
    assert [s.name for s in plan.stages(experiment())] == ["collect", "shards", "pretrain"]
    stages = {s.name: s for s in plan.stages(experiment(**FULL))}
    assert stages["evaluate"].reads == ("collect", "shards", "pretrain")
    assert stages["shards"].parts == 32 and not stages["shards"].distributed  # one part per collect worker
    assert stages["pretrain"].parts == 2 and stages["pretrain"].distributed
    assert plan.stage(experiment(**FULL), "pretrain", single_machine=True).parts == 1


def test_a_change_invalidates_its_stage_and_everything_downstream_but_not_upstream():
    before = experiment(**FULL)
    after = experiment(**{**FULL, "pretrain": {"nodes": 2, "gpusPerNode": 8, "epochs": 100}})
    assert plan.changed_stages(before, after) == ["pretrain", "evaluate", "publish"]
    resources_only = experiment(**{**FULL, "pretrain": {"nodes": 2, "gpusPerNode": 8, "resources": {"cpu": "8"}}})
    assert plan.changed_stages(before, resources_only) == []


def test_a_field_at_its_default_is_not_part_of_the_fingerprint():
    """A release adding a field whose default keeps the old behaviour must leave finished stages finished."""
    written_out = experiment(
        **{
            **FULL,
            "pretrain": {"nodes": 2, "gpusPerNode": 8, "augmentOrder": "reference", "method": "seco"},
            "evaluate": [{"task": "eurosat", "recipe": "paper"}],
        }
    )
    assert plan.changed_stages(experiment(**FULL), written_out) == []
    assert stages.named("pretrain").inputs(written_out.spec) == {"nodes": 2}  # 8 GPUs a node is the default
    assert stages.named("evaluate").inputs(written_out.spec) == [{"task": "eurosat"}]


def test_input_bands_move_the_training_shards_and_later_stages_and_rgb_written_out_moves_nothing():
    rgb = experiment(**{**FULL, "pretrain": {"nodes": 2, "gpusPerNode": 8, "inputBands": ["B04", "B03", "B02"]}})
    assert plan.changed_stages(experiment(**FULL), rgb) == []
    multispectral = {**FULL, "evaluate": [{"task": "eurosat", "recipe": "multispectral"}]}  # paper's recipe is RGB
    every_band = experiment(**{**multispectral, "pretrain": {"nodes": 2, "gpusPerNode": 8, "inputBands": "all"}})
    assert plan.changed_stages(experiment(**multispectral), every_band) == ["shards", "pretrain", "evaluate", "publish"]
    assert stages.named("shards").inputs(every_band.spec)["bands"] == list(every_band.spec.collect.bands)


def test_the_fingerprints_of_a_fixed_spec_do_not_move():
    """Each finished stage of every experiment holds its fingerprint: a change to how they are computed
    makes every user's finished stages "changed". Change these only with a reason in the release notes."""
    assert {s.name: s.fingerprint for s in plan.stages(experiment(**FULL))} == PINNED


def _facts(exp, complete=(), **extra):
    facts = {s.name: StageFacts() for s in plan.stages(exp)}
    for stage in plan.stages(exp):
        if stage.name in complete:
            facts[stage.name].success = {"fingerprint": stage.fingerprint}
    for name, fact in extra.items():
        facts[name] = fact
    return facts


def test_assess_skips_complete_stages_and_names_the_next_one():
    exp = experiment(**FULL)
    states = [s.state for s in plan.assess(exp, _facts(exp, complete=("collect",)))]
    assert states == ["complete", "ready", "waiting", "waiting", "waiting"]


def test_assess_tells_running_from_interrupted_by_the_executors_pid():
    exp = experiment(**FULL)
    facts = _facts(exp, complete=("collect", "shards"), pretrain=StageFacts(running={"pid": 4242}, parts_done={0}))
    assert plan.assess(exp, facts, alive={4242})[2].state == "running"
    interrupted = plan.assess(exp, facts, alive=set())[2]
    assert (interrupted.state, interrupted.parts_done) == ("interrupted", 1)


def test_assess_reports_a_failure_and_a_stage_completed_under_another_spec():
    exp = experiment(**FULL)
    facts = _facts(
        exp, complete=("collect", "shards"), pretrain=StageFacts(failed={"reason": "part 1 exited with code 3"})
    )
    failed = plan.assess(exp, facts)[2]
    assert (failed.state, failed.detail) == ("failed", "part 1 exited with code 3")
    stale = _facts(exp, collect=StageFacts(success={"fingerprint": "from-another-spec"}))
    assert [s.state for s in plan.assess(exp, stale)] == ["changed", "waiting", "waiting", "waiting", "waiting"]
