"""SIGTERM (Kueue preemption, a node drain, a spot reclaim) costs a pretrain run no step, and the
pod's grace is computed from sizes that match torchvision's models and the checkpoint really written."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torchvision

from jobs.pretrain import checkpoints
from secoctl import stages, store
from secoctl.tree import StageTree, spec_uri
from tests.conftest import ROOT
from tests.pretrain.made_data import collected_experiment
from tests.pretrain.test_pretrain_stage import SPEC

LONG = (
    SPEC.replace("NODES", "1")
    .replace("maxSteps: 12", "maxSteps: 40")
    .replace("checkpointEverySteps: 5", "checkpointEverySteps: 1000")
)


def _events(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith('{"event"')]


def test_sigterm_to_the_pod_checkpoints_the_step_reached_exits_143_and_the_next_run_resumes_there(storage):
    experiment, root = collected_experiment(storage.as_uri(), LONG, training_shards=True)
    checkpoint_dir = StageTree(root, "pretrain").path("checkpoints")
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=1",
        "-m",
        "jobs.pretrain",
        "--spec",
        spec_uri(root),
    ]
    # torchrun's wait for a stopping worker, as the pod's env sets it (secoctl.stages.pretrain_stop_s) but sized
    # for this shared test machine's CPU, not a pod's.
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", TORCH_ELASTIC_SHUTDOWN_TIMEOUT="300")
    # As in the pod: the log wrapper, then the torchrun agent, then the worker in a session of its own.
    pod = subprocess.Popen(
        [sys.executable, "-m", "jobs.common.logged", "--spec", spec_uri(root), "--stage", "pretrain", "--", *torchrun],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    before_signal = []
    for line in pod.stdout:
        before_signal.append(line)
        if line.startswith('{"event": "progress"') and json.loads(line)["done"] >= 10:
            pod.send_signal(signal.SIGTERM)  # what the kubelet sends; the wrapper passes it to torchrun
            break
    after_signal = pod.stdout.readlines()
    assert pod.wait(timeout=300) == 143, "".join(before_signal + after_signal)[-3000:]

    signalled_at = _events(before_signal)[-1]["done"]
    progress = [e["done"] for e in _events(before_signal + after_signal) if e["event"] == "progress"]
    stopped = next(e for e in _events(after_signal) if e["event"] == "stopped")
    # It finished the window it was in, no further, and checkpointed exactly the last step it reached.
    assert signalled_at < stopped["step"] <= signalled_at + stages.PRETRAIN_WINDOW_STEPS < 40
    assert progress[-1] == stopped["step"] == checkpoints.list_steps(checkpoint_dir)[-1]
    assert not store.exists(StageTree(root, "pretrain").part_done(0)), "a stopped part is not committed"
    fs, path = store.filesystem(store.join(checkpoint_dir, checkpoints.name(stopped["step"])))
    size = fs.size(path)
    # The control plane's estimate behind the pod's grace: the checkpoint it sizes, within 2 %.
    assert size <= stages.pretrain_checkpoint_bytes(experiment.spec.pretrain) <= 1.02 * size

    second = subprocess.run(torchrun, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert {"event": "resumed", "step": stopped["step"]} in _events(second.stdout.splitlines())
    state = checkpoints.latest(checkpoint_dir)
    assert state["step"] == 40
    steps = [m["step"] for m in json.loads(state["metrics"])]
    assert steps == list(range(10, 41, 10)), "every window logged once: none lost, none trained twice"


@pytest.mark.parametrize("backbone", sorted(stages.BACKBONE_TENSOR_ELEMENTS))
def test_the_control_planes_backbone_sizes_are_torchvisions(backbone):
    model = getattr(torchvision.models, backbone)(weights=None)
    elements = sum(t.numel() for t in [*model.parameters(), *model.buffers()])
    assert elements - sum(p.numel() for p in model.fc.parameters()) == stages.BACKBONE_TENSOR_ELEMENTS[backbone]
    assert torchvision.models.get_model_weights(backbone).DEFAULT.meta["_ops"] == stages.BACKBONE_GMACS_224[backbone]
