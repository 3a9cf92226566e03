"""Where experiments run, behind one seam: a Backend owns the whole command set (as TorchX's `Scheduler`
and Kubeflow's `RuntimeBackend` do), and the CLI chooses one and never asks which it has.

A kubeconfig, or a pod in a cluster, means the cluster unless `--local` says otherwise. Choosing reads
only the environment, so the local commands never import the kubernetes client.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.table import Table

    from secoctl.spec import Experiment
    from secoctl.status import Row


class Backend(Protocol):
    def apply(self, experiments: Sequence[Experiment]) -> None:
        """Run (or hand to the cluster) every stage not yet complete, resuming what was started."""

    def rows(self, name: str | None) -> list[Row]:
        """One row a stage of every experiment (or of `name`), for `status`."""

    def print_rows(self, rows: list[Row], wide: bool) -> None:
        """The rows as this backend's table."""

    def table(self, rows: list[Row]) -> Table:
        """The rows as the table `status -w` redraws."""

    def finished(self, rows: list[Row]) -> bool:
        """Whether nothing in `rows` is still running: `status -w` stops redrawing then."""

    def logs(self, name: str, stage: str | None, index: int | None, follow: bool) -> Iterator[str]:
        """A stage's log lines, each part's prefixed `[stage/part] ` when there are several."""

    def delete(self, name: str, purge: bool) -> Iterator[str]:
        """Stop the experiment's work (and with purge remove its tree), saying each thing done."""


def cluster_configured() -> bool:
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p) or bool(
        os.environ.get("KUBERNETES_SERVICE_HOST")
    )


def choose(local: bool, storage: str | None, context: str | None, namespace: str | None) -> Backend:
    if not local and cluster_configured():
        from secoctl.backends.kubernetes.commands import KubernetesBackend

        return KubernetesBackend(context, namespace, storage)
    from secoctl.backends.local.commands import LocalBackend

    return LocalBackend(storage)
