"""Does SeCo pre-training on the synthetic seasonal world give a better EuroSAT linear probe than random init?

    python -m benchmarks.learning [--seeds 0 1] [--steps 1200] [--locations 256] [--parcels 5]
                                  [--probe-epochs 30 100 300] [--labels-per-class 10 100] [--bands rgb,all]

The learning check, measured rather than asserted. Pretraining locations and the made
EuroSAT images come from one synthetic ground (jobs/localcloud/landscape.py): a land cover keeps
its structure while its colour follows the season, and a location is a layout of `--parcels`
land-cover parcels. Per seed: SeCo (ResNet-18, three sub-spaces; the stage's model, views, batched
augmentation and SGD, built by jobs.pretrain.build from a spec with its defaults) on `--locations`
in-memory locations, then the evaluate stage's linear probe (standardised features, Adam, lr × 0.1
at 60%/80%) on single-cover images, for each label budget and probe length, for the same encoder and
for seeded random weights. Each seed prints one JSON line; a seed repeats itself on the same machine
and thread count.

`--bands rgb,all` compares input band sets instead: per seed one 12-band world of locations, from
which each set is stretched as the shards stage stretches it (`rgb` B04, B03, B02; `all` every
collected band), then SeCo with the same seed, steps and batch draws for each, probed on the made
EuroSAT's own bands (13, B10 left out as the evaluate stage's recipe multispectral does).
Each seed prints every set's probe and the difference from the first set; a last line gives the
mean difference over seeds with its standard error (paired, n - 1)."""

from __future__ import annotations

import argparse
import json
import time
from datetime import date, timedelta

import numpy as np
import torch

from jobs.common.backbone import ReflectanceInput
from jobs.evaluate.backbones import baseline
from jobs.evaluate.classification import score, train_linear
from jobs.evaluate.reference_inputs import own_input, transform_for
from jobs.localcloud import eurosat, landscape
from jobs.pretrain.build import build
from jobs.pretrain.step import train_step
from jobs.pretrain.views import AUGMENTED, draw_slots, input_uint8
from secoctl.model_card import RGB_BANDS, input_description
from secoctl.spec import SENTINEL2_BANDS, Pretrain

SIZE, TIMESTAMPS, BANDS = 64, 5, ["B04", "B03", "B02"]
RELEASE_RGB = [3, 2, 1]  # B04, B03, B02 in the EuroSAT release's band order
BAND_SETS = {"rgb": RGB_BANDS, "all": SENTINEL2_BANDS}


def days_of(rng: np.random.Generator) -> list[date]:
    """TIMESTAMPS dates 84 days apart, the latest in a random year before June 2023."""
    latest = date(2023, 6, 1) - timedelta(days=int(rng.integers(0, 365)))
    return [latest - timedelta(days=84 * t) for t in range(TIMESTAMPS)]


def locations(rng: np.random.Generator, count: int, parcel_count: int) -> np.ndarray:
    """(locations, dates, 3, H, W) uint8 in the stage's stretch, 84 days apart in a random year."""
    cubes = []
    for _ in range(count):
        cubes.append(
            input_uint8(landscape.location_series(rng, days_of(rng), SIZE, tuple(BANDS), parcel_count)[1], BANDS)
        )
    return np.stack(cubes)


def every_band_locations(rng: np.random.Generator, count: int, parcel_count: int) -> np.ndarray:
    """(locations, dates, 12, H, W) uint16 DN of every collected band: one world every band set is cut from."""
    return np.stack(
        [landscape.location_series(rng, days_of(rng), SIZE, SENTINEL2_BANDS, parcel_count)[1] for _ in range(count)]
    )


def pretrain(
    seed: int, steps: int, count: int, parcel_count: int, batch: int, queue: int, method: str
) -> tuple[torch.nn.Module, float]:
    """The encoder after `steps`, and the mean loss of the last tenth of them."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rgb = locations(rng, count, parcel_count)
    return train(rgb, rng, steps, batch, queue, method, BANDS)


def train(
    stack: np.ndarray,
    rng: np.random.Generator,
    steps: int,
    batch: int,
    queue: int,
    method: str,
    bands: tuple[str, ...] | list[str],
) -> tuple[torch.nn.Module, float]:
    """SeCo over `bands` on uint8 (locations, dates, bands, H, W), batches drawn with `rng`: the encoder after
    `steps`, and the mean loss of the last tenth of them."""
    spec = Pretrain(
        method=method, backbone="resnet18", batch_size=batch, queue_size=queue, input_size=SIZE, gpus_per_node=0
    )
    setup = build(spec, bands, torch.device("cpu"))
    losses = []
    for _ in range(steps):
        chosen = rng.choice(len(stack), batch, replace=False)
        slots = torch.from_numpy(np.stack([stack[i][draw_slots(method, TIMESTAMPS, rng)] for i in chosen]))
        loss, _, _ = train_step(setup.model, setup.optimizer, setup.augment, slots, setup.autocast)
        losses.append(loss.item())
    return setup.model.encoder_q.eval(), float(np.mean(losses[-max(steps // 10, 1) :]))


def made_eurosat(
    train_per_class: int, test_per_class: int, channels: list[int] | None = RELEASE_RGB
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train and test images of every land cover, class by class, each on a random day and latitude: the release's
    `channels` (every band when None)."""
    rng = np.random.default_rng(1234)
    split = {}
    for name, count in (("train", train_per_class), ("test", test_per_class)):
        images, labels = [], []
        for label, cover in enumerate(landscape.LAND_COVERS):
            for _ in range(count):
                image = eurosat.image(cover, rng)
                images.append((image if channels is None else image[channels]).astype(np.float32))
                labels.append(label)
        split[name] = (torch.from_numpy(np.stack(images)), torch.tensor(labels))
    return split


def first_per_class(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the first `count` samples of every class: a smaller label budget, nested in the larger."""
    return torch.cat([torch.nonzero(labels == c).flatten()[:count] for c in labels.unique()])


@torch.no_grad()
def features(model: torch.nn.Module, images: torch.Tensor, transform: ReflectanceInput) -> torch.Tensor:
    return torch.cat([model(transform(chunk)) for chunk in images.split(256)])


def probe_accuracies(
    model: torch.nn.Module, data: dict, transform: ReflectanceInput, budgets: list[int], epochs: list[int]
) -> dict[str, float]:
    """Test accuracy per "labels per class/probe epochs"."""
    train = features(model, data["train"][0], transform)
    test = features(model, data["test"][0], transform)
    accuracies = {}
    for budget in budgets:
        chosen = first_per_class(data["train"][1], budget)
        for length in epochs:
            probe = train_linear((train[chosen], data["train"][1][chosen]), len(landscape.LAND_COVERS), length, False)
            accuracy = score(probe.logits(test), data["test"][1], False)["accuracy"]
            accuracies[f"{budget}/{length}"] = round(accuracy, 4)
    return accuracies


def random_init(in_chans: int = 3) -> torch.nn.Module:
    """The evaluate stage's own `random` baseline (seeded) for a ResNet-18 over `in_chans` bands."""
    return baseline("random", "resnet18", storage="", in_chans=in_chans).eval()


def band_sets(text: str) -> list[str]:
    """`rgb,all`: at least two distinct sets of BAND_SETS; the first is the one the others are compared with."""
    names = text.split(",")
    if len(names) < 2 or len(set(names)) != len(names) or not set(names) <= set(BAND_SETS):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give two or more distinct of {', '.join(BAND_SETS)}, comma-separated (e.g. rgb,all)"
        )
    return names


def mean_and_standard_error(values: list[float]) -> tuple[float, float | None]:
    """The mean of paired differences over seeds and its standard error (sample deviation / sqrt n)."""
    mean = float(np.mean(values))
    return mean, float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


def compare_bands(args: argparse.Namespace) -> None:
    """Per seed, SeCo on each band set of one made world, probed on the made EuroSAT's own bands; then the
    mean difference of each set from the first, with its standard error over seeds."""
    data = made_eurosat(max(args.labels_per_class), args.test_per_class, channels=None)
    inputs = {
        name: own_input("eurosat", input_description(SIZE, BAND_SETS[name]), torch.device("cpu")) for name in args.bands
    }
    random = {
        name: probe_accuracies(
            random_init(len(BAND_SETS[name])), data, inputs[name], args.labels_per_class, args.probe_epochs
        )
        for name in args.bands
    }
    differences: dict[str, dict[str, list[float]]] = {name: {} for name in args.bands[1:]}
    for seed in args.seeds:
        world = every_band_locations(np.random.default_rng(seed), args.locations, args.parcels)
        runs = {}
        for name in args.bands:
            torch.manual_seed(seed)
            started = time.perf_counter()
            encoder, final_loss = train(
                input_uint8(world.reshape(-1, *world.shape[2:]), list(SENTINEL2_BANDS), BAND_SETS[name]).reshape(
                    *world.shape[:2], -1, SIZE, SIZE
                ),
                np.random.default_rng((seed, 1)),
                args.steps,
                args.batch,
                args.queue,
                args.method,
                BAND_SETS[name],
            )
            seconds = time.perf_counter() - started
            probe = probe_accuracies(encoder, data, inputs[name], args.labels_per_class, args.probe_epochs)
            runs[name] = {
                "bands": len(BAND_SETS[name]),
                "final_loss": round(final_loss, 3),
                "pretrain_s": round(seconds, 1),
                "probe": probe,
                "random": random[name],
            }
        first = args.bands[0]
        for name in args.bands[1:]:
            for key, value in runs[name]["probe"].items():
                differences[name].setdefault(key, []).append(value - runs[first]["probe"][key])
        print(
            json.dumps(
                {
                    "seed": seed,
                    "method": args.method,
                    "steps": args.steps,
                    "locations": args.locations,
                    "parcels": args.parcels,
                    "batch": args.batch,
                    "queue": args.queue,
                    "threads": torch.get_num_threads(),
                    "runs": runs,
                    "difference": {
                        f"{name} - {first}": {key: round(values[-1], 4) for key, values in differences[name].items()}
                        for name in args.bands[1:]
                    },
                }
            ),
            flush=True,
        )
    summary = {}
    for name, by_key in differences.items():
        for key, values in by_key.items():
            mean, error = mean_and_standard_error(values)
            summary.setdefault(f"{name} - {args.bands[0]}", {})[key] = {
                "mean": round(mean, 4),
                "standard_error": None if error is None else round(error, 4),
            }
    print(json.dumps({"seeds": args.seeds, "difference": summary}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--locations", type=int, default=256)
    parser.add_argument("--parcels", type=int, default=5, help="land-cover parcels per location")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--queue", type=int, default=1024)
    parser.add_argument("--method", default="seco", choices=sorted(AUGMENTED))
    parser.add_argument("--probe-epochs", type=int, nargs="+", default=[30, 100, 300])
    parser.add_argument(
        "--labels-per-class",
        type=int,
        nargs="+",
        default=[10, 100],
        help="label budgets of the probe (train images per class)",
    )
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument(
        "--bands",
        type=band_sets,
        default=None,
        help="compare SeCo on these input band sets (rgb, all), e.g. rgb,all, instead of with random",
    )
    args = parser.parse_args()
    if args.bands:
        compare_bands(args)
        return
    transform = transform_for("eurosat", "modern", SIZE, torch.device("cpu"))
    data = made_eurosat(max(args.labels_per_class), args.test_per_class)
    random = probe_accuracies(random_init(), data, transform, args.labels_per_class, args.probe_epochs)
    for seed in args.seeds:
        started = time.perf_counter()
        encoder, final_loss = pretrain(
            seed, args.steps, args.locations, args.parcels, args.batch, args.queue, args.method
        )
        seconds = time.perf_counter() - started
        pretrained = probe_accuracies(encoder, data, transform, args.labels_per_class, args.probe_epochs)
        print(
            json.dumps(
                {
                    "seed": seed,
                    "method": args.method,
                    "steps": args.steps,
                    "locations": args.locations,
                    "parcels": args.parcels,
                    "batch": args.batch,
                    "queue": args.queue,
                    "final_loss": round(final_loss, 3),
                    "pretrain_s": round(seconds, 1),
                    "threads": torch.get_num_threads(),
                    "probe": {
                        key: {"pretrained": value, "random": random[key], "gain": round(value - random[key], 4)}
                        for key, value in pretrained.items()
                    },
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
