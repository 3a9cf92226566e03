"""`secoctl weights ...`: list, show, pull, push, import and export published backbones."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from secoctl import store

app = typer.Typer(
    help="Published weights: list, show, pull (verified, cached), push, import, export.", no_args_is_help=True
)

# Typer reads help as rich markup: the backslash keeps "[/PREFIX]" text, not a closing tag.
Storage = Annotated[
    Optional[str],
    typer.Option(
        "--storage",
        show_default=False,
        help=f"Storage tree: file:///ABSOLUTE/PATH or s3://BUCKET\\[/PREFIX]; default: ${store.ENV_STORAGE}, "
        "else a folder under ~/.local/share/secoctl.",
    ),
]
Ref = Annotated[str, typer.Argument(help="NAME or NAME:VERSION (newest version when omitted).")]
Name = Annotated[str, typer.Option("--name", help="Weights name, e.g. seco-resnet50-1m.")]
Version = Annotated[str, typer.Option("--version", help="Version; published versions are immutable.")]
Force = Annotated[bool, typer.Option("--force", help="Replace a version that is already published.")]
Bands = Annotated[
    Optional[str],
    typer.Option(
        "--bands",
        show_default=False,
        help="Input bands in the stem's channel order, comma-separated (e.g. B02,B03,B04,B08); as many as conv1's "
        "input channels; default B04,B03,B02.",
    ),
]


@app.command("list")
def list_weights(storage: Storage = None) -> None:
    """Every published name with its versions."""
    from rich.console import Console
    from rich.table import Table

    from secoctl import weights
    from secoctl.errors import UserError
    from secoctl.text import cell

    root = store.storage(storage)
    table = Table("name", "versions", "latest", title=cell(f"weights in {root}"))
    with store.reported(root):
        found_names = weights.names(root)
        # The embedded default is absent until a first publish; a storage someone named is a mistake.
        if not found_names and root != store.home_storage() and store.is_missing(root):
            raise UserError(f"storage {root} does not exist; check --storage or ${store.ENV_STORAGE}")
        for name in found_names:
            found = weights.versions(root, name)
            if found:
                table.add_row(name, ", ".join(found), found[-1])
    Console().print(table)


@app.command()
def show(ref: Ref, storage: Storage = None) -> None:
    """The STAC item (MLM) describing a version: architecture, bands, normalisation, training spec."""
    from secoctl import weights

    root = store.storage(storage)
    with store.reported(root):
        item = weights.show(root, ref)
    typer.echo(json.dumps(item, indent=2))


@app.command()
def pull(
    ref: Ref,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Also copy the files here.")] = None,
    storage: Storage = None,
) -> None:
    """Download a version into the local cache, checksums verified; resumes an interrupted pull."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from secoctl import weights

    root = store.storage(storage)
    with (
        store.reported(root),
        Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), transient=True) as bar,
    ):
        task = bar.add_task("pulling", total=None)
        resolved, folder = weights.pull(root, ref, output, on_bytes=lambda n: bar.advance(task, n))
    typer.echo(f"{resolved}: verified, in {folder}")


@app.command()
def push(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A safetensors backbone.")],
    name: Name,
    version: Version,
    input_size: Annotated[int, typer.Option("--input-size")] = 224,
    bands: Bands = None,
    force: Force = False,
    storage: Storage = None,
) -> None:
    """Publish a backbone trained elsewhere (safetensors, torchvision ResNet-18/50 key names) over its bands."""
    from secoctl import weights

    chosen = None if bands is None else weights.parse_bands(bands)
    root = store.storage(storage)
    with store.reported(root):
        uri = weights.push(root, file, name, version, input_size, force=force, bands=chosen)
    typer.echo(f"{name}:{version} published to {uri}")


@app.command("import")
def import_weights(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    format: Annotated[str, typer.Option("--format", help="seco-ckpt or torchgeo")],  # noqa: A002
    name: Name,
    version: Version,
    bands: Bands = None,
    force: Force = False,
    storage: Storage = None,
) -> None:
    """Convert the reference's SeCo .ckpt (a release, checked by its MD5 sum) or torchgeo's SeCo weights and
    publish them over their bands (needs torch)."""
    from secoctl import weights

    chosen = None if bands is None else weights.parse_bands(bands)
    root = store.storage(storage)
    with store.reported(root):
        uri = weights.import_checkpoint(root, file, format, name, version, force=force, bands=chosen)
        release = weights.show(root, f"{name}:{version}")["properties"]["secoctl:provenance"].get("release")
    source = f"{file.name} (SeCo release {release}, md5 verified)" if release else file.name
    typer.echo(f"{name}:{version} imported from {source} and published to {uri}")


@app.command()
def export(
    ref: Ref,
    format: Annotated[
        str,
        typer.Option(  # noqa: A002
            "--format", help="timm, torchgeo or hf (a Hugging Face Hub folder)"
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="A new (or empty) folder to write.")],
    bands: Annotated[
        Optional[str],
        typer.Option(
            "--bands",
            show_default=False,
            help="Your input's bands in its channel order, comma-separated, by name or alias (B8A, B8a, nir08, "
            "B1, SR_B5): the stem is adapted to them by name and wavelength and item.json describes the "
            "result; default the weights' own bands.",
        ),
    ] = None,
    storage: Storage = None,
) -> None:
    """Write a version as timm (state dict + pretrained_cfg), torchgeo (state dict + meta and transform) or a
    Hugging Face Hub folder (config.json, model.safetensors, model card) loads it (needs torch and timm)."""
    from secoctl import weights

    chosen = None if bands is None else [band.strip() for band in bands.split(",")]
    root = store.storage(storage)
    with store.reported(root):
        resolved = weights.export(root, ref, format, output, chosen)
    typer.echo(f"{resolved} exported for {format} to {output}" + (f" over {bands}" if bands else ""))
