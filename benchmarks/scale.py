"""Many experiments at once on one cluster: the test control plane with kwok nodes, Kueue, and secoctl's real backend.

    python -m benchmarks.scale [--experiments 50] [--nodes 1000] [--workers 128] [--poll 2] [--timeout-s 3000]

jobs/localcloud/cluster's control plane (kube-apiserver, etcd, kube-controller-manager, kube-scheduler, kwok;
`many_nodes`: its settings for a thousand nodes) with `--nodes` kwok nodes (every eighth a node of 8 GPUs,
labelled as the example's pretrain
selects), Kueue with the `gpu-queue` of manifests/kueue sized to the nodes' capacity, and
`--experiments` variations of examples/seco-100k.yaml with collect (and so shards) at `--workers`
parts, all queued through Kueue. kwok runs no code: a stage pod completes 300 ms after it runs
(jobs/localcloud/cluster/stages.yaml), so what is measured is the control plane and secoctl's use of it.

Every `secoctl apply` is started at once (one process each, as that many users would), then every
experiment's driver (`python -m secoctl.driver`, one process each under its own ServiceAccount's
token, as its driver pod runs it) until all exit. Measured:
- each `apply`'s wall time;
- the API requests of each phase, from the apiserver's own `apiserver_request_total` (/metrics
  before and after, per verb and resource; every client's: the controllers', kwok's node leases,
  Kueue's and this benchmark's few samples too), and the drivers' own: single-Job GETs and pod
  LISTs in the namespace, which no controller sends, and one Job PATCH per stage started;
- `secoctl status` (all experiments, three times, with its requests; then one, three times) once
  every experiment has completed;
- the apiserver's resident memory (VmRSS from /proc, sampled; the peak is the kernel's VmHWM);
- the 1-minute load average, sampled: the machine may be shared.
Checked, and counted: how many stage Jobs handed to Kueue were seen admitted (a Workload with
Admitted), queued (QuotaReserved False) or neither at once, and whether any was never admitted; that
every driver exited 0 with `experiment_complete`; that every stage Job completed with all its parts.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import yaml

from jobs.localcloud.cluster import controlplane
from jobs.localcloud.cluster import kueue as kueue_build
from jobs.localcloud.cluster.kueue import set_quotas, with_queues
from secoctl import render

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "seco-100k.yaml"
QUEUE = "gpu-queue"
GPU_EVERY, GPUS_PER_NODE = 8, 8
SAMPLE_S = 3.0
METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')
# What, while the drivers run, only a driver sends (the controllers, kwok and Kueue watch, and write
# status): a GET of one Job and a LIST of the namespace's pods; besides these, one PATCH of each stage
# Job it hands to Kueue (Kueue PATCHes Jobs too, so those are counted from the drivers' events).
DRIVER_REQUESTS = {("GET", "jobs", "", "resource"), ("LIST", "pods", "", "namespace")}


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def scale_nodes(count: int, product: str) -> list[dict]:
    """`count` kwok nodes beside the control plane's own four: every GPU_EVERY-th one with GPUs."""
    extra = []
    for index in range(count - len(controlplane.GPU_NODES) - len(controlplane.CPU_NODES)):
        gpus = GPUS_PER_NODE if index % GPU_EVERY == 0 else 0
        node = controlplane.node(f"scale-node-{index}", gpus)
        if gpus:
            node["metadata"]["labels"]["nvidia.com/gpu.product"] = product
        extra.append(node)
    return extra


def experiment_spec(index: int, workers: int, storage: Path) -> dict:
    """The example, varied: its own name and number of locations, collect at `workers` parts,
    storage on the claimed volume, an image of ours, and Kueue's queue."""
    document = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["name"] = f"scale-{index:03d}"
    spec = document["spec"]
    spec.pop("storageSecret")
    spec.update(
        storage=storage.as_uri(),
        storageClaim=controlplane.CLAIM,
        queueName=QUEUE,
        image="registry.example/secoctl:scale",
        driverImage="registry.example/secoctl-collect:scale",
    )
    spec["collect"].update(workers=workers, locations=spec["collect"]["locations"] + 100 * index)
    return document


class Api:
    """The admin's plain HTTPS requests: what the benchmark reads, kept apart from secoctl's client."""

    def __init__(self, plane: controlplane.ControlPlane):
        self.server, self.token = plane.server, plane.token
        self.context = ssl.create_default_context(cafile=str(plane.certificate_authority))

    def get(self, path: str, body: dict | None = None) -> bytes:
        """GET `path`, or POST `body` to it."""
        request = urllib.request.Request(
            self.server + path,
            data=json.dumps(body).encode() if body else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60, context=self.context) as response:
            return response.read()

    def items(self, path: str) -> list[dict]:
        return json.loads(self.get(path))["items"]

    def requests(self) -> Counter:
        """apiserver_request_total by (verb, resource, subresource, scope), summed over codes and groups."""
        totals: Counter = Counter()
        for line in self.get("/metrics").decode().splitlines():
            match = METRIC.match(line)
            if match:
                labels = dict(LABEL.findall(match["labels"]))
                key = (
                    labels.get("verb", ""),
                    labels.get("resource", ""),
                    labels.get("subresource", ""),
                    labels.get("scope", ""),
                )
                totals[key] += float(match["value"])
        return totals


def condition(obj: dict, kind: str) -> str | None:
    return next((c["status"] for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), None)


def workload_state(workload: dict) -> str:
    if condition(workload, "Admitted") == "True":
        return "admitted"
    if condition(workload, "QuotaReserved") == "False":
        return "queued"
    return "neither"


class Sampler(threading.Thread):
    """Every SAMPLE_S: the apiserver's RSS, the load average, and where each Job handed to Kueue stands."""

    def __init__(self, api: Api, apiserver_pid: int):
        super().__init__(daemon=True)
        self.api, self.pid = api, apiserver_pid
        self.stopped = threading.Event()
        self.rss_mib: list[float] = []
        self.load: list[float] = []
        self.peak = Counter()  # the most Jobs seen at once in each state
        self.handed: dict[str, float] = {}  # Job name: when first seen with the queue label
        self.admitted: dict[str, float] = {}  # Job name: when first seen admitted

    def memory(self, field: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} in /proc/{self.pid}/status")

    def sample(self) -> None:
        now = time.monotonic()
        self.rss_mib.append(self.memory("VmRSS"))
        self.load.append(os.getloadavg()[0])
        jobs = self.api.items(
            f"/apis/batch/v1/namespaces/{controlplane.NAMESPACE}/jobs?labelSelector=kueue.x-k8s.io/queue-name%3D{QUEUE}"
        )
        workloads = {
            o["uid"]: w
            for w in self.api.items(f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{controlplane.NAMESPACE}/workloads")
            for o in w["metadata"].get("ownerReferences", [])
        }
        states = Counter()
        for job in jobs:
            name, uid = job["metadata"]["name"], job["metadata"]["uid"]
            state = workload_state(workloads[uid]) if uid in workloads else "neither"
            states[state] += 1
            self.handed.setdefault(name, now)
            if state == "admitted":
                self.admitted.setdefault(name, now)
        for state, count in states.items():
            self.peak[state] = max(self.peak[state], count)

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_S):
            self.sample()

    def stop(self) -> None:
        self.stopped.set()
        self.join()

    def kueue(self) -> dict:
        waits = [self.admitted[name] - self.handed[name] for name in self.admitted]
        return {
            "jobs_handed_to_kueue": len(self.handed),
            "admitted": len(self.admitted),
            "never_admitted": sorted(set(self.handed) - set(self.admitted)),
            "peak_admitted": self.peak["admitted"],
            "peak_queued": self.peak["queued"],
            "peak_neither": self.peak["neither"],
            "wait_to_admission_s": {
                "median": round(statistics.median(waits), 1) if waits else None,
                "max": round(max(waits), 1) if waits else None,
                "resolution": SAMPLE_S,
            },
        }


def secoctl(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "secoctl", *args, "-n", controlplane.NAMESPACE],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def timed(env: dict, *args: str) -> tuple[float, str, dict | None]:
    """Its wall time, stdout, and its failure: a figure too (a saturated apiserver times out), not the end of
    the run."""
    started = time.monotonic()
    process = secoctl(env, *args)
    output, errors = process.communicate(timeout=600)
    failure = (
        None
        if process.returncode == 0
        else {
            "command": " ".join(args),
            "exit_code": process.returncode,
            "last_line": (errors.strip().splitlines() or [""])[-1][:200],
        }
    )
    return time.monotonic() - started, output, failure


def apply_all(env: dict, specs: list[Path]) -> list[float]:
    """Every `secoctl apply` started at once; each one's wall time, in the order of `specs`."""
    started = time.monotonic()
    processes = [secoctl(env, "apply", str(spec)) for spec in specs]
    seconds: dict[int, float] = {}
    while len(seconds) < len(processes):  # their output is a dozen lines each: no pipe fills meanwhile
        for index, process in enumerate(processes):
            if index not in seconds and process.poll() is not None:
                seconds[index] = time.monotonic() - started
        time.sleep(0.05)
    for spec, process in zip(specs, processes):
        _, errors = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"secoctl apply {spec.name} exited {process.returncode}: {errors}")
    return [seconds[index] for index in range(len(processes))]


def start_drivers(plane, names: list[str], specs: list[Path], folder: Path, poll_s: float) -> list[subprocess.Popen]:
    """Each driver as its pod runs it, with a token of its own ServiceAccount; its events to a file."""
    drivers = []
    for name, spec in zip(names, specs):
        config = plane.service_account_kubeconfig(
            controlplane.NAMESPACE, f"{name}-driver", folder / f"{name}.kubeconfig"
        )
        env = dict(os.environ, KUBECONFIG=str(config), PYTHONPATH=str(ROOT), HOME=str(folder))
        with open(folder / f"{name}.events", "wb") as events:
            drivers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "secoctl.driver",
                        "--spec",
                        str(spec),
                        "--namespace",
                        controlplane.NAMESPACE,
                        "--poll",
                        str(poll_s),
                    ],
                    stdout=events,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=ROOT,
                )
            )
    return drivers


def size_queue(plane, nodes: list[dict]) -> None:
    """The ClusterQueue's quotas: everything the nodes hold (manifests/kueue says to size them to the cluster)."""
    cpu = sum(int(n["status"]["allocatable"]["cpu"]) for n in nodes)
    gpus = sum(int(n["status"]["allocatable"].get(render.GPU_RESOURCE, 0)) for n in nodes)
    quota = {
        "cpu": str(cpu),
        "memory": f"{512 * len(nodes)}Gi",
        "ephemeral-storage": f"{len(nodes)}Ti",
        render.GPU_RESOURCE: str(gpus),
    }
    set_quotas(plane, quota)


def phase(before: Counter, after: Counter, seconds: float, calls: int = 1) -> dict:
    """The requests between two scrapes: in all, and per verb and resource; `calls`: per call of what ran."""
    delta = {key: after[key] - before.get(key, 0) for key in after if after[key] > before.get(key, 0)}
    rows = sorted(delta.items(), key=lambda item: -item[1])
    return {
        "seconds": round(seconds, 1),
        "requests": int(sum(delta.values())),
        "per_s": round(sum(delta.values()) / seconds, 1),
        "per_call": round(sum(delta.values()) / calls, 1),
        "by_verb_resource": [
            {
                "verb": v,
                "resource": r + (f"/{s}" if s else ""),
                "scope": sc,
                "count": int(n),
                "per_s": round(n / seconds, 2),
            }
            for (v, r, s, sc), n in rows
        ],
    }


def driver_events(folder: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{name}.events").read_text().splitlines() if line.startswith("{")]


def last_line(folder: Path, name: str) -> str:
    """A failed driver's last line of output (its error, or a traceback's last line), cut to 200 characters."""
    lines = (folder / f"{name}.events").read_text(errors="replace").splitlines()
    return re.sub(r"port=\d+", "port=N", lines[-1])[:200] if lines else ""


def driver_share(requests: dict, folder: Path, names: list[str]) -> dict:
    """The drivers' own requests within the drivers' phase (DRIVER_REQUESTS and their Job PATCHes)."""
    polls = sum(
        r["count"]
        for r in requests["by_verb_resource"]
        if (r["verb"], r["resource"], "", r["scope"]) in DRIVER_REQUESTS
    )
    patches = sum(e["event"] == "stage_started" for name in names for e in driver_events(folder, name))
    total = polls + patches
    return {
        "requests": total,
        "per_s": round(total / requests["seconds"], 1),
        "per_driver_per_s": round(total / requests["seconds"] / len(names), 2),
        "job_patches": patches,
    }


def outcome(api: Api, drivers: list[subprocess.Popen], names: list[str], folder: Path) -> dict:
    """What was checked at the end, as counts."""
    complete = sum(
        driver.returncode == 0 and any(e["event"] == "experiment_complete" for e in driver_events(folder, name))
        for name, driver in zip(names, drivers)
    )
    jobs = [
        j
        for j in api.items(f"/apis/batch/v1/namespaces/{controlplane.NAMESPACE}/jobs")
        if j["metadata"]["labels"].get(render.LABEL_STAGE) not in (None, "driver")
    ]
    whole = [
        j
        for j in jobs
        if condition(j, "Complete") == "True" and j["status"].get("succeeded") == j["spec"]["completions"]
    ]
    failed = Counter(
        last_line(folder, name) for name, driver in zip(names, drivers) if driver.returncode not in (0, None)
    )
    return {
        "experiments_complete": complete,
        "drivers_failed": sum(failed.values()),
        "driver_failures": [{"drivers": n, "last_line": line} for line, n in failed.most_common()],
        "stage_jobs": len(jobs),
        "stage_jobs_complete": len(whole),
        "stage_pods_succeeded": sum(j["status"].get("succeeded", 0) for j in jobs),
        "stage_pods_failed": sum(j["status"].get("failed", 0) for j in jobs),
    }


def run(experiments: int, nodes: int, workers: int, poll_s: float, timeout_s: float, workdir: Path) -> dict:
    bin_folder = kueue_build.control_plane_bin(workdir / "bin")
    plane = controlplane.ControlPlane(workdir / "cluster", bin=bin_folder, many_nodes=True)
    started = time.monotonic()
    plane.start()
    controller = None
    drivers: list[subprocess.Popen] = []
    try:
        plane.prepare(workdir / "storage")
        (workdir / "storage").mkdir(exist_ok=True)
        controller = with_queues(plane)
        product = yaml.safe_load(EXAMPLE.read_text())["spec"]["pretrain"]["resources"]["nodeSelector"][
            "nvidia.com/gpu.product"
        ]
        api = Api(plane)
        for node in scale_nodes(nodes, product):
            api.get("/api/v1/nodes", node)
        plane.processes.wait(
            f"{nodes} Ready nodes",
            lambda: sum(condition(n, "Ready") == "True" for n in api.items("/api/v1/nodes")) == nodes,
            timeout=600,
            interval=2,
        )
        size_queue(plane, api.items("/api/v1/nodes"))
        log(f"scale: {nodes} kwok nodes Ready and Kueue serving, {time.monotonic() - started:.0f} s after start")

        folder = workdir / "experiments"
        folder.mkdir()
        documents = [experiment_spec(i, workers, workdir / "storage") for i in range(experiments)]
        names = [d["metadata"]["name"] for d in documents]
        specs = []
        for document in documents:
            specs.append(folder / f"{document['metadata']['name']}.yaml")
            specs[-1].write_text(yaml.safe_dump(document))
        env = dict(os.environ, KUBECONFIG=str(plane.admin_kubeconfig), PYTHONPATH=str(ROOT), HOME=str(folder))
        env.pop("SECOCTL_STORAGE", None)

        sampler = Sampler(api, plane.processes.running["kube-apiserver"].pid)
        sampler.start()
        before, mark = api.requests(), time.monotonic()
        apply_seconds = apply_all(env, specs)
        applied, applied_at = api.requests(), time.monotonic()
        log(f"scale: {experiments} applied in {applied_at - mark:.1f} s; starting the drivers")
        drivers = start_drivers(plane, names, specs, folder, poll_s)
        deadline = time.monotonic() + timeout_s
        while any(d.poll() is None for d in drivers) and time.monotonic() < deadline:
            time.sleep(SAMPLE_S)
            finished = sum(d.poll() is not None for d in drivers)
            log(
                f"scale: {finished}/{experiments} drivers finished, {time.monotonic() - applied_at:.0f} s, "
                f"apiserver {sampler.rss_mib[-1] if sampler.rss_mib else 0:.0f} MiB, load {os.getloadavg()[0]:.1f}"
            )
        timed_out = any(d.poll() is None for d in drivers)
        done, done_at = api.requests(), time.monotonic()
        sampler.stop()
        sampler.sample()
        peak_mib, end_mib = sampler.memory("VmHWM"), sampler.memory("VmRSS")

        status_all = [timed(env, "status", "-o", "json") for _ in range(3)]
        status_done, status_at = api.requests(), time.monotonic()
        status_one = [timed(env, "status", names[-1]) for _ in range(3)]
        rows = [] if status_all[-1][2] else json.loads(status_all[-1][1])
        result = {
            "experiments": experiments,
            "nodes": nodes,
            "workers": workers,
            "driver_poll_s": poll_s,
            "timed_out": timed_out,
            "apply_s": {
                "min": round(min(apply_seconds), 2),
                "median": round(statistics.median(apply_seconds), 2),
                "max": round(max(apply_seconds), 2),
                "all_applied": round(applied_at - mark, 1),
            },
            "requests_apply": phase(before, applied, applied_at - mark, calls=experiments),
            "requests_drivers": phase(applied, done, done_at - applied_at),
            "requests_status_all": phase(done, status_done, status_at - done_at, calls=len(status_all)),
            "status_all_s": [round(s, 2) for s, *_ in status_all],
            "status_one_s": [round(s, 2) for s, *_ in status_one],
            "status_failures": [f for *_, f in status_all + status_one if f],
            "status_rows": len(rows),
            "status_states": dict(Counter(r["state"] for r in rows)),
            "apiserver_rss_mib": {
                "peak": round(peak_mib),
                "end": round(end_mib),
                "sampled_max": round(max(sampler.rss_mib)),
            },
            "load_average_1m": {
                "min": round(min(sampler.load), 1),
                "mean": round(statistics.mean(sampler.load), 1),
                "max": round(max(sampler.load), 1),
            },
            "kueue": sampler.kueue(),
            **outcome(api, drivers, names, folder),
        }
        result["drivers_own"] = driver_share(result["requests_drivers"], folder, names)
        return result
    finally:
        for driver in drivers:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        if controller:
            controller.stop()
        plane.stop()


def report(result: dict) -> str:
    lines = [f"{result['experiments']} experiments, {result['nodes']} kwok nodes, collect at {result['workers']} parts"]
    lines.append(
        f"apply: min {result['apply_s']['min']} s, median {result['apply_s']['median']} s, "
        f"max {result['apply_s']['max']} s, all "
        f"{result['apply_s']['all_applied']} s"
    )
    for name in ("requests_apply", "requests_drivers", "requests_status_all"):
        p = result[name]
        lines.append(f"{name}: {p['requests']} requests in {p['seconds']} s ({p['per_s']}/s, {p['per_call']} a call)")
        lines += [
            f"  {r['verb']:>6} {r['resource']:<28} {r['scope']:<9} {r['count']:>8} {r['per_s']:>8}/s"
            for r in p["by_verb_resource"][:15]
        ]
    lines.append(f"the drivers' own: {result['drivers_own']}")
    lines.append(
        f"status (all): {result['status_all_s']} s; status (one): {result['status_one_s']} s; "
        f"failed: {result['status_failures']}"
    )
    lines.append(
        f"apiserver RSS: peak {result['apiserver_rss_mib']['peak']} MiB, end {result['apiserver_rss_mib']['end']} MiB"
    )
    lines.append(f"load average (1 min): {result['load_average_1m']}")
    lines.append(f"kueue: {result['kueue']}")
    lines += [f"drivers failed: {f['drivers']}: {f['last_line']}" for f in result["driver_failures"]]
    lines.append(
        f"experiments complete {result['experiments_complete']}/{result['experiments']}, stage Jobs complete "
        f"{result['stage_jobs_complete']}/{result['stage_jobs']}, pods succeeded "
        f"{result['stage_pods_succeeded']}, failed {result['stage_pods_failed']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=1000, help="kwok nodes in all (at least 4: the plane's own)")
    parser.add_argument("--workers", type=int, default=128, help="collect's (and shards') parts per experiment")
    parser.add_argument(
        "--poll", type=float, default=2.0, help="the drivers' seconds between looks (theirs by default)"
    )
    parser.add_argument("--timeout-s", type=float, default=3000, help="how long the drivers may take in all")
    args = parser.parse_args(argv)
    # `timeout` and a CI runner stop it with SIGTERM: exit through the `finally`s that stop the control plane.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="secoctl-scale-") as workdir:
        result = run(args.experiments, args.nodes, args.workers, args.poll, args.timeout_s, Path(workdir))
    print(report(result))
    print(json.dumps(result))
    return 0 if not result["timed_out"] and result["experiments_complete"] == args.experiments else 1


if __name__ == "__main__":
    sys.exit(main())
