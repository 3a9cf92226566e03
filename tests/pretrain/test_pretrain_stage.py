import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from jobs.pretrain import checkpoints
from secoctl import collapse
from secoctl.backends.local.executor import LocalExecutor
from secoctl.tree import StageTree, spec_uri
from tests.conftest import ROOT
from tests.pretrain.made_data import collected_experiment
from tests.tensorboard_events import scalars

SPEC = """apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {name: tiny}
spec:
  collect: {source: stac, workers: 1, bands: [B04, B03, B02]}
  pretrain: {backbone: resnet18, maxSteps: 12, batchSize: 8, queueSize: 16, inputSize: 32, lrMilestones: [],
             loaderWorkers: 0, checkpointEverySteps: 5, bf16: false, nodes: NODES, gpusPerNode: 0}
"""


def test_the_stage_trains_through_torchrun_and_commits_metrics_and_a_checkpoint(storage):
    experiment, root = collected_experiment(storage.as_uri(), SPEC.replace("NODES", "1"))
    LocalExecutor(storage.as_uri()).apply(experiment)
    tree = StageTree(root, "pretrain")
    metrics = [
        json.loads(line) for line in (storage / "experiments/tiny/pretrain/metrics.jsonl").read_text().splitlines()
    ]
    assert [m["step"] for m in metrics] == [10, 12]
    assert all(m["loss"] > 0 and {"loss_0", "loss_1", "loss_2", "lr", "samples_per_s"} <= m.keys() for m in metrics)
    for m in metrics:  # the collapse figures (secoctl.collapse): a std per sub-space, cosines in [-1, 1]
        assert all(0 < m[f"embed_std_{i}"] <= 1 for i in range(3)) and -1 <= m["neg_cos"] < m["pos_cos"] <= 1, m
    progress = json.loads((storage / "experiments/tiny/pretrain/progress/00000.json").read_text())
    assert progress["metrics"]["embed_std"] == min(metrics[-1][f"embed_std_{i}"] for i in range(3))
    assert progress["metrics"]["embed_std_low_logs"] == collapse.low_logs(metrics, 128) and progress["per_s"] > 0
    print("tiny run's embedding stds:", [[m[f"embed_std_{i}"] for i in range(3)] for m in metrics])
    assert checkpoints.list_steps(tree.path("checkpoints")) == [10, 12]
    state = checkpoints.latest(tree.path("checkpoints"))
    assert state["step"] == 12 and "encoder_q.0.weight" in state["model"]
    assert (storage / "experiments/tiny/pretrain/_SUCCESS").exists()
    logged = scalars(storage / "experiments/tiny/pretrain/tensorboard")
    assert set(logged) == set(metrics[0]) - {"step"}, "every numeric field of a record, whatever it holds"
    assert all(logged[tag] == [(m["step"], pytest.approx(m[tag])) for m in metrics] for tag in logged)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_torchrun_agents_meet_by_c10d_rendezvous_as_two_nodes(storage):
    _, root = collected_experiment(storage.as_uri(), SPEC.replace("NODES", "2"), training_shards=True)
    endpoint = f"127.0.0.1:{_free_port()}"
    agents = []
    for node in range(2):
        # gloo on the CPU wherever it runs: on a one-GPU machine two NCCL ranks would share a device.
        env = dict(os.environ, JOB_COMPLETION_INDEX=str(node), PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
        agents.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--nnodes=2",
                    "--nproc-per-node=1",
                    "--rdzv-backend=c10d",
                    f"--rdzv-endpoint={endpoint}",
                    "--rdzv-id=tiny",
                    "-m",
                    "jobs.pretrain",
                    "--spec",
                    spec_uri(root),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [agent.communicate(timeout=300)[0] for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], outputs
    parts = sorted(p.name for p in (storage / "experiments/tiny/pretrain/parts").iterdir())
    assert parts == ["00000.json", "00001.json"]
    metrics = (storage / "experiments/tiny/pretrain/metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[-1])["step"] == 12


def test_a_killed_worker_resumes_from_its_last_checkpoint_and_completes(storage):
    experiment, root = collected_experiment(
        storage.as_uri(), SPEC.replace("NODES", "1").replace("maxSteps: 12", "maxSteps: 30"), training_shards=True
    )
    checkpoint_dir = StageTree(root, "pretrain").path("checkpoints")
    argv = [
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
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    first = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 240
    while not checkpoints.list_steps(checkpoint_dir) or checkpoints.list_steps(checkpoint_dir)[-1] < 10:
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # the agent; its worker dies with it
    first.wait()
    time.sleep(1)
    killed_at = checkpoints.list_steps(checkpoint_dir)[-1]
    assert 10 <= killed_at < 30
    second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert f'{{"event": "resumed", "step": {killed_at}}}' in second.stdout
    state = checkpoints.latest(checkpoint_dir)
    assert state["step"] == 30
    steps = [m["step"] for m in json.loads(state["metrics"])]
    assert steps == sorted(set(steps)) and steps[-1] == 30, "metrics continue from the checkpoint, once each"
    folder = storage / "experiments/tiny/pretrain/tensorboard"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2  # one file per process
    assert [step for step, _ in scalars(folder)["loss"]] == steps, "TensorBoard hides the steps the kill lost"


def test_status_shows_the_last_loss_and_plot_draws_the_curves(storage, tmp_path):
    from tests.conftest import run_cli

    experiment, _ = collected_experiment(storage.as_uri(), SPEC.replace("NODES", "1"))
    LocalExecutor(storage.as_uri()).apply(experiment)
    status = json.loads(run_cli("status", "tiny", "-o", "json", storage=storage).stdout)
    pretrain = next(row for row in status if row["stage"] == "pretrain")
    assert pretrain["state"] == "complete" and "loss=" in pretrain["metric"]
    png = tmp_path / "curves.png"
    result = run_cli("plot", "tiny", "-o", str(png), storage=storage)
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (storage / "experiments/tiny/pretrain/metrics.jsonl").unlink()
    missing = run_cli("plot", "tiny", storage=storage)
    assert missing.returncode == 2 and "has no pretrain metrics yet" in missing.stderr
