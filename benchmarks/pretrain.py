"""The pretrain stage's input path and step, timed on the path the default spec takes.

    python -m benchmarks.pretrain [--device cuda] [--batch N ...] [--steps N] [--backbones resnet18 resnet50]
                                  [--locations 32] [--loader-samples 2048] [--input 224]

One run measures, on shards shaped like seco-1m.yaml's (5 dates x 12 bands x 264 px uint16 in the
record; the training shards the real stage derives from them, 5 x 3 x 264 px uint8):
- the loader alone, in samples per CPU-second of this process (every thread counted) and bytes per
  sample: the path before training shards (the collected record streamed out of its tar, `np.load`,
  the RGB stretch, the views picked) beside the stage's (jobs.pretrain.loader: drawn timestamps
  copied out of a memory-mapped training shard);
- the encodings considered for training shards: raw uint8 (the format) and JPEG q95 4:4:4, its bytes,
  CPU decode cost and pixel error;
- the stage's real path (training shards on local disk -> loader thread -> side-stream copy ->
  BatchAugment -> train_step, exactly what jobs/pretrain/train.py runs) against the model-only
  ceiling (train_step's model part on views already on the device), eager and, with --compile,
  compiled; on CUDA also peak memory and the GPU's idle time between steps.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import torch

from jobs.common.shards import Sample, encode_shard, read_shard
from jobs.common.training_shards import TrainingShard, encode
from jobs.localcloud import landscape
from jobs.pretrain.build import Setup, build
from jobs.pretrain.feed import DeviceFeed
from jobs.pretrain.loader import SeasonalBatches, ShardRef
from jobs.pretrain.shard_cache import ShardCache
from jobs.pretrain.step import train_step
from jobs.pretrain.views import AUGMENTED, VIEW_SLOTS, draw_slots, input_uint8
from jobs.shards.stage import training_location
from secoctl.model_card import RGB_BANDS
from secoctl.spec import SENTINEL2_BANDS, Pretrain

PATCH, DATES = 264, 5
METHOD, INPUT = Pretrain().method, Pretrain().input_size  # the default spec's


def made_record(locations: int, seed: int = 0) -> list[Sample]:
    """Collected samples shaped like seco-1m's: every band, uint16 reflectance x 10000, from the made
    world's landscape (parcels of land cover through the seasons), so an encoding's size and error are
    those of scene-like images, not of noise."""
    rng = np.random.default_rng(seed)
    days = [date(2020, 1, 1) + timedelta(days=84 * t) for t in range(DATES)]
    return [
        Sample(
            f"{i:06d}",
            landscape.location_series(rng, days, PATCH, tuple(SENTINEL2_BANDS))[1],
            {"bands": list(SENTINEL2_BANDS), "dates": [d.isoformat() for d in days]},
        )
        for i in range(locations)
    ]


def record_loader(path: Path, locations: int, samples: int) -> dict:
    """Before training shards: each sample streams its location's whole record and stretches it."""
    rng = np.random.default_rng(0)
    started, done = time.process_time(), 0
    while done < samples:
        for sample in read_shard(str(path)):
            rgb = input_uint8(sample.pixels, sample.metadata["bands"])
            np.ascontiguousarray(rgb[draw_slots(METHOD, rgb.shape[0], rng)])
            done += 1
            if done == samples:
                break
    seconds = time.process_time() - started
    return {"samples_per_cpu_s": round(samples / seconds, 1), "bytes_read_per_sample": path.stat().st_size // locations}


def stage_loader(refs: list[ShardRef], samples: int, batch: int) -> dict:
    """The stage's loader: drawn timestamps copied from memory-mapped training shards into a batch."""
    cache = ShardCache(Path(tempfile.gettempdir()), 10**12, in_place=True)
    batches = SeasonalBatches(refs, METHOD, batch, seed=0, rank=0, world_size=1, cache=cache)
    out = np.empty(batches.batch_shape, np.uint8)
    locations, rng = iter(batches), batches.rng()
    batches.fill(out, locations, rng)  # the first shards mapped
    started = time.process_time()
    for _ in range(samples // batch):
        batches.fill(out, locations, rng)
    seconds = time.process_time() - started
    stored = sum(Path(r.uri.removeprefix("file://")).stat().st_size for r in refs) / sum(r.samples for r in refs)
    return {
        "samples_per_cpu_s": round(samples // batch * batch / seconds, 1),
        "bytes_read_per_sample": int(np.prod(out.shape[1:])),
        "bytes_stored_per_location": int(stored),
    }


def jpeg_encoding(shard: TrainingShard, locations: int) -> dict:
    """JPEG q95 4:4:4 of every timestamp: bytes, CPU decode time, pixel error against raw uint8."""
    from PIL import Image
    from torchvision.io import decode_jpeg

    encoded, errors, originals = [], [], []
    for location in range(min(locations, len(shard))):
        for t in range(shard.timestamps(location)):
            pixels = shard.timestamp(location, t)
            buffer = io.BytesIO()
            Image.fromarray(pixels.transpose(1, 2, 0)).save(buffer, format="JPEG", quality=95, subsampling=0)
            encoded.append(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8))
            originals.append(pixels)
    started = time.process_time()
    decoded = [decode_jpeg(data) for data in encoded]
    seconds = time.process_time() - started
    for original, image in zip(originals, decoded):
        errors.append(np.abs(image.numpy().astype(np.int16) - original.astype(np.int16)))
    error = np.stack(errors)
    mse = float((error.astype(np.float64) ** 2).mean())
    per_location = DATES * sum(len(e) for e in encoded) / len(encoded)
    return {
        "bytes_per_location": int(per_location),
        "cpu_decode_ms_per_timestamp": round(1000 * seconds / len(encoded), 3),
        "samples_per_cpu_s_decode_only": round(len(encoded) / seconds / (max(VIEW_SLOTS[METHOD]) + 1), 1),
        "max_abs_error": int(error.max()),
        "mean_abs_error": round(float(error.mean()), 3),
        "psnr_db": round(10 * np.log10(255**2 / mse), 2) if mse else None,
    }


def _setup(backbone: str, device: torch.device, batch: int, compiled: bool, size: int = INPUT) -> Setup:
    """The stage's setup for the default spec at this backbone, batch and input size, in one process."""
    spec = Pretrain(
        backbone=backbone,
        batch_size=batch,
        queue_size=batch * 8,
        compile=compiled,
        gpus_per_node=int(device.type == "cuda"),
        input_size=size,
    )
    return build(spec, RGB_BANDS, device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Views(torch.nn.Module):
    """The model-only ceiling's 'augmentation': the same normalised views every step, already on the device."""

    def __init__(self, views: list[torch.Tensor]):
        super().__init__()
        self.views = views

    def forward(self, slots: torch.Tensor) -> list[torch.Tensor]:
        return self.views


def _timed(step, steps: int, warmup: int, device: torch.device) -> dict:
    """samples/s over `steps` after `warmup`; on CUDA the stream's idle time between steps (events)."""
    cuda = device.type == "cuda"
    marks = []
    for number in range(warmup + steps):
        if number == warmup:
            _sync(device)
            started = time.perf_counter()
        begin = torch.cuda.Event(enable_timing=True) if cuda else None
        end = torch.cuda.Event(enable_timing=True) if cuda else None
        samples = step(begin)
        if cuda:
            end.record()
            if number >= warmup:
                marks.append((begin, end))
    _sync(device)
    seconds = time.perf_counter() - started
    result = {"samples_per_s": round(samples * steps / seconds, 2)}
    if cuda:
        idle = sum(marks[i - 1][1].elapsed_time(marks[i][0]) for i in range(1, len(marks)))  # ms: end -> next begin
        result["gpu_idle_fraction"] = round(idle / 1000 / seconds, 4)
    return result


def model_only(
    backbone: str, device: torch.device, batch: int, steps: int, warmup: int, compiled: bool, size: int = INPUT
) -> dict:
    setup = _setup(backbone, device, batch, compiled, size)
    views = [
        torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
        for _ in AUGMENTED[METHOD]
    ]
    ready = Views(views)

    def step(begin):
        if begin is not None:
            begin.record()
        train_step(setup.model, setup.optimizer, ready, views[0], setup.autocast)
        return batch

    return _timed(step, steps, warmup, device)


def real_path(
    backbone: str,
    device: torch.device,
    refs: list[ShardRef],
    batch: int,
    steps: int,
    warmup: int,
    compiled: bool,
    size: int = INPUT,
) -> dict:
    """What jobs/pretrain/train.py runs per step, from training shards on local disk."""
    setup = _setup(backbone, device, batch, compiled, size)
    cache = ShardCache(Path(tempfile.gettempdir()), 10**12, in_place=True)
    batches = SeasonalBatches(refs, METHOD, batch, seed=0, rank=0, world_size=1, cache=cache)
    feed = DeviceFeed(batches, device)

    def step(begin):
        slots = feed.next()
        if begin is not None:
            begin.record()
        train_step(setup.model, setup.optimizer, setup.augment, slots, setup.autocast)
        return batch

    try:
        return _timed(step, steps, warmup, device)
    finally:
        feed.close()


def made_shards(folder: Path, locations: int, shards: int) -> tuple[Path, list[ShardRef]]:
    """A collected shard of `locations`, and `shards` training shards derived by the real stage's conversion."""
    record = made_record(locations)
    record_path = folder / "record.tar"
    record_path.write_bytes(encode_shard(record))
    converted = [training_location(sample, list(RGB_BANDS)) for sample in read_shard(str(record_path))]
    refs = []
    for number in range(shards):
        part = converted[number::shards]
        path = folder / f"train-{number:03d}.tar"
        path.write_bytes(encode(part))
        refs.append(ShardRef(path.as_uri(), len(part)))
    return record_path, refs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pretrain")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=None, help="per step; default 128 256 on CUDA, 4 on CPU"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps; default 30 on CUDA, 2 on CPU")
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--locations", type=int, default=32, help="locations in the made shards")
    parser.add_argument("--loader-samples", type=int, default=2048)
    parser.add_argument("--input", type=int, default=INPUT, help="side of the model's input views, px")
    parser.add_argument("--compile", action="store_true", help="also time the compiled step (default on CUDA)")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batches = args.batch or ([128, 256] if cuda else [4])
    steps, warmup = args.steps or (30 if cuda else 2), 5 if cuda else 1
    result: dict = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "input": args.input,
        "steps": steps,
        "shape": f"{DATES} dates x {len(SENTINEL2_BANDS)} bands x {PATCH} px",
    }
    with tempfile.TemporaryDirectory() as folder:
        record_path, refs = made_shards(Path(folder), args.locations, max(args.locations // 8, 1))
        record_samples = min(args.loader_samples, 4 * args.locations)
        result["loader"] = {
            "record (before)": record_loader(record_path, args.locations, record_samples),
            "training shards (stage)": stage_loader(refs, args.loader_samples, 64),
        }
        first_shard = TrainingShard(Path(refs[0].uri.removeprefix("file://")))
        result["encodings"] = {"jpeg q95 4:4:4": jpeg_encoding(first_shard, 8)}
        print(json.dumps(result["loader"]), json.dumps(result["encodings"]), flush=True)
        for backbone in args.backbones:
            for batch in batches:
                torch.manual_seed(0)
                entry = {"model only, eager": model_only(backbone, device, batch, steps, warmup, False, args.input)}
                if args.compile or cuda:
                    entry["model only, compiled"] = model_only(backbone, device, batch, steps, warmup, True, args.input)
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                entry["stage path"] = real_path(
                    backbone, device, refs, batch, steps, warmup, args.compile or cuda, args.input
                )
                if cuda:
                    peak = torch.cuda.max_memory_allocated(device)
                    entry["stage path"]["peak_gpu_memory_gib"] = round(peak / 2**30, 2)
                ceiling = entry.get("model only, compiled", entry["model only, eager"])["samples_per_s"]
                entry["stage / model-only"] = round(entry["stage path"]["samples_per_s"] / ceiling, 3)
                result[f"{backbone} batch {batch}"] = entry
                print(f"{backbone} batch {batch}: {json.dumps(entry)}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
