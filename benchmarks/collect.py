"""Collect throughput against real local servers with 50 ms added to every HTTP request.

    python -m benchmarks.collect [--locations N] [--latency-ms 50] [--in-flight 4] [--bands B02 B03 B04 B08]
                                 [--curve 1 4 16] [--curve-locations 32] [--throttle-rate 100]

Both sides run in this one process against the same synthetic world, served by rustac (STAC API)
and RangeHTTPServer (COGs), each behind the latency proxy:
(a) this stage: `jobs.collect.stage.work` for one worker, over N/2 and then N locations, so the
    peak RSS after each shows whether memory grows with the number of locations;
(b) baseline: per location, the dates searched one after the other, then one
    `stackstac.stack(items, ...).compute()` with stackstac's defaults.
A patch is one location at one date. `bound_patches_per_s` is what latency allows at this
concurrency: in_flight locations, each needing at least three round trips one after the other
(a STAC search, then GDAL's size probe and ranged read of each COG, files read in parallel).
(c) the curve: this stage over `--curve-locations` at each `--curve` locations in flight, with the
    share of the machine's CPU that was busy meanwhile (/proc/stat, every process on it), so it shows
    where the CPU rather than latency becomes the limit;
(d) throttled: the stage at the curve's largest concurrency against a COG server that admits
    `--throttle-rate` requests/s (a token bucket, 429 with Retry-After 1 beyond it), with how often
    the worker was refused, how low it paced itself, and the rate's own bound (the admitted rate
    over the requests one patch took).
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from jobs.collect import sampling, stage
from jobs.collect.pixels import patch_bounds, utm_epsg
from jobs.collect.scenes import choose, open_catalog
from jobs.common.part import Part
from jobs.localcloud.cloud import built_world, serve
from jobs.localcloud.servers import fault_report
from secoctl.spec.file import load_documents
from secoctl.stored import named_stage_tree

ROUND_TRIPS_PER_LOCATION = 3

SPEC = """
apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {{name: collect-benchmark}}
spec:
  storage: "{storage}"
  collect: {{source: stac, stacUrl: "{stac_url}", locations: {locations}, cities: 200, patchSize: 64,
            bands: {bands}, samplesPerShard: 16, workers: 1, inFlight: {in_flight}, referenceDate: "2022-09-01"}}
  pretrain: {{backbone: resnet18, nodes: 1, gpusPerNode: 0, batchSize: 16}}
"""


def experiment(stac_url: str, locations: int, bands: list[str], in_flight: int, storage: str):
    text = SPEC.format(
        stac_url=stac_url, locations=locations, bands=json.dumps(bands), in_flight=in_flight, storage=storage
    )
    return load_documents(text, "benchmark.yaml")[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of every core since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def run_stage(spec) -> tuple[int, float]:
    patches, seconds, _ = run_stage_measured(spec)
    return patches, seconds


def run_stage_measured(spec) -> tuple[int, float, dict]:
    """Patches collected, seconds taken and the summary of one worker of this stage."""
    tree = named_stage_tree(spec, "collect")
    part = Part(spec, "collect", 0, 1, tree)
    started = time.perf_counter()
    summary = stage.work(part)
    seconds = time.perf_counter() - started
    return summary["locations"]["accepted"] * spec.spec.collect.timestamps, seconds, summary


def latency_bound(in_flight: int, timestamps: int, latency_ms: float) -> float:
    return in_flight * timestamps / (ROUND_TRIPS_PER_LOCATION * latency_ms / 1000)


def run_baseline(spec) -> tuple[int, float]:
    """The straightforward way: sequential searches, then stackstac with its defaults per location."""
    import stackstac

    collect = spec.spec.collect
    catalog = open_catalog(collect)
    patches, started = 0, time.perf_counter()
    for index in range(collect.locations):
        location = sampling.candidate(collect, index)
        point = {"type": "Point", "coordinates": [location.lon, location.lat]}
        items = []
        for target in location.dates:
            start, end = sampling.search_window(target, collect.window_days)
            found = list(
                catalog.search(
                    collections=[collect.collection],
                    intersects=point,
                    datetime=f"{start.isoformat()}/{end.isoformat()}",
                ).items()
            )
            items.append(choose(found, target, collect.max_cloud, lambda item: True))
        if any(item is None for item in items):
            continue
        epsg = utm_epsg(items[0])
        cube = stackstac.stack(
            items,
            assets=list(collect.bands),
            epsg=epsg,
            resolution=10,
            bounds=patch_bounds(location, epsg, collect.patch_size),
        ).compute()
        assert np.asarray(cube).shape[-1] == collect.patch_size
        patches += len(items)
    return patches, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.collect")
    parser.add_argument("--locations", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--bands", nargs="+", default=["B02", "B03", "B04", "B08"])
    parser.add_argument("--curve", type=int, nargs="+", default=[1, 4, 16], help="locations in flight")
    parser.add_argument("--curve-locations", type=int, default=32)
    parser.add_argument("--throttle-rate", type=float, default=100.0, help="COG requests/s the throttled server admits")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "secoctl-benchmark-worlds")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="collect-benchmark-") as scratch:
        base = experiment("http://127.0.0.1:1", args.locations, args.bands, args.in_flight, "file:///unused")
        folder = built_world(base.spec.collect, args.cache, missing_every=0, bands=tuple(args.bands))
        with serve(folder, latency_ms=args.latency_ms) as cloud:
            rss_by_locations = {}
            for locations in (args.locations // 2, args.locations):
                spec = experiment(
                    cloud.stac_url, locations, args.bands, args.in_flight, Path(scratch, f"stage-{locations}").as_uri()
                )
                patches, seconds = run_stage(spec)
                rss_by_locations[locations] = round(peak_rss_mb(), 1)
                print(
                    f"stage: {locations} locations, {patches} patches in {seconds:.2f} s "
                    f"({patches / seconds:.1f} patches/s), peak RSS {rss_by_locations[locations]} MB",
                    flush=True,
                )
            stage_rate = patches / seconds
            baseline_spec = experiment(
                cloud.stac_url,
                max(args.locations // 4, 4),
                args.bands,
                args.in_flight,
                Path(scratch, "baseline").as_uri(),
            )
            baseline_patches, baseline_seconds = run_baseline(baseline_spec)
            baseline_rate = baseline_patches / baseline_seconds
            print(
                f"baseline: {baseline_patches} patches in {baseline_seconds:.2f} s ({baseline_rate:.1f} patches/s)",
                flush=True,
            )
            timestamps = base.spec.collect.timestamps
            curve = []
            for in_flight in args.curve:
                spec = experiment(
                    cloud.stac_url,
                    args.curve_locations,
                    args.bands,
                    in_flight,
                    Path(scratch, f"curve-{in_flight}").as_uri(),
                )
                busy_before, total_before = cpu_ticks()
                patches, seconds = run_stage(spec)
                busy_after, total_after = cpu_ticks()
                bound_here = latency_bound(in_flight, timestamps, args.latency_ms)
                point = {
                    "in_flight": in_flight,
                    "patches_per_s": round(patches / seconds, 2),
                    "bound_patches_per_s": round(bound_here, 2),
                    "fraction_of_bound": round(patches / seconds / bound_here, 3),
                    "machine_cpu_busy": round((busy_after - busy_before) / max(total_after - total_before, 1), 3),
                }
                curve.append(point)
                print(f"curve: {point}", flush=True)
        throttle = [
            {
                "path": r"\.tif",
                "action": "throttle",
                "rate_per_s": args.throttle_rate,
                "burst": int(args.throttle_rate // 2),
                "status": 429,
                "retry_after": 1,
            }
        ]
        with serve(folder, latency_ms=args.latency_ms, cog_faults=throttle) as throttled_cloud:
            in_flight = max(args.curve)
            spec = experiment(
                throttled_cloud.stac_url,
                args.curve_locations,
                args.bands,
                in_flight,
                Path(scratch, "throttled").as_uri(),
            )
            patches, seconds, summary = run_stage_measured(spec)
            refused = fault_report(throttled_cloud.cog_proxy)
        admitted_per_patch = (refused["requests"] - refused["rules"][0]["fired"]) / max(patches, 1)
        throttled = {
            "in_flight_ceiling": in_flight,
            "rate_per_s": args.throttle_rate,
            "patches_per_s": round(patches / seconds, 2),
            "failed": summary["locations"]["failed"],
            "rate_bound_patches_per_s": round(args.throttle_rate / admitted_per_patch, 2),
            "cog_requests": refused["requests"],
            "refused_429": refused["rules"][0]["fired"],
            "throttle_signals": summary["pacing"]["throttled"],
            "lowest_in_flight": summary["pacing"]["lowest_in_flight"],
        }
        print(f"throttled: {throttled}", flush=True)
    bound = latency_bound(args.in_flight, timestamps, args.latency_ms)
    print(
        json.dumps(
            {
                "locations": args.locations,
                "bands": args.bands,
                "latency_ms": args.latency_ms,
                "in_flight": args.in_flight,
                "patches_per_s": round(stage_rate, 2),
                "baseline_patches_per_s": round(baseline_rate, 2),
                "speedup": round(stage_rate / baseline_rate, 2),
                "bound_patches_per_s": round(bound, 2),
                "fraction_of_bound": round(stage_rate / bound, 3),
                "peak_rss_mb": rss_by_locations[args.locations],
                "peak_rss_mb_by_locations": rss_by_locations,
                "cores": len(os.sched_getaffinity(0)),
                "curve": curve,
                "throttled": throttled,
            }
        )
    )


if __name__ == "__main__":
    main()
