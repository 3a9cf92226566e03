"""How the collect package is put together: no import cycle, and request pools sized from the spec per part."""

from __future__ import annotations

import ast
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from graphlib import TopologicalSorter
from importlib import import_module
from pathlib import Path

import jobs.collect
from jobs.collect import stage
from jobs.collect.pacing import AdaptiveLimit
from jobs.localcloud.cloud import serve
from tests.collect.conftest import CORRUPT, experiment_for

PACKAGE = Path(jobs.collect.__file__).parent
MODULES = sorted(f"jobs.collect.{path.stem}" for path in PACKAGE.glob("*.py"))


def imported(module: str) -> set[str]:
    """The jobs.collect modules `module` imports anywhere, inside functions too."""
    tree = ast.parse((PACKAGE / f"{module.rsplit('.', 1)[1]}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names & set(MODULES)


def test_the_collect_modules_import_one_another_without_a_cycle():
    order = list(TopologicalSorter({module: imported(module) for module in MODULES}).static_order())
    assert (
        order.index("jobs.collect.outcomes") < order.index("jobs.collect.signing") < order.index("jobs.collect.stage")
    )


def test_no_collect_module_makes_a_pool_when_imported():
    pools = [
        f"{module}.{name}"
        for module in MODULES
        for name, value in vars(import_module(module)).items()
        if isinstance(value, Executor)
    ]
    assert pools == []


def test_a_parts_search_and_read_pools_are_sized_from_the_spec_and_end_with_it(world_folder: Path, monkeypatch):
    made: dict[str, int] = {}
    used: dict[str, int] = {}

    class Recorded(ThreadPoolExecutor):
        def __init__(self, max_workers: int, thread_name_prefix: str):
            super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
            made[thread_name_prefix] = max_workers

        def submit(self, *args, **kwargs):
            used[self._thread_name_prefix] = used.get(self._thread_name_prefix, 0) + 1
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(stage, "ThreadPoolExecutor", Recorded)
    with serve(world_folder) as cloud:
        collect = experiment_for(cloud.stac_url, in_flight=3).spec.collect
        with stage.stac_fetcher(collect, 1, AdaptiveLimit(collect.in_flight)) as fetch:
            outcome = fetch(0)
    assert outcome.status == "accepted"
    assert made == {"stac-search": 3 * collect.timestamps, "cog-read": 3 * collect.timestamps}
    assert used["stac-search"] == collect.timestamps and used["cog-read"] > 0  # a search per date; the reads there
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("stac-search", "cog-read"))]


def test_parts_reading_at_once_leave_dasks_process_wide_scheduler_alone(world_folder: Path, monkeypatch):
    """dask's config is one per process: a part that set its read pool there would hand it to every other
    part's reads, and could leave it, shut down, as the default of every later compute."""
    import dask
    import dask.array

    seen_globally: list[object] = []

    class Recorded(ThreadPoolExecutor):
        def submit(self, *args, **kwargs):
            seen_globally.append(dask.config.get("pool", None))
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(stage, "ThreadPoolExecutor", Recorded)
    with serve(world_folder) as cloud:
        collect = experiment_for(cloud.stac_url, in_flight=2).spec.collect

        def part(first: int) -> list[str]:
            with stage.stac_fetcher(collect, collect.locations, AdaptiveLimit(collect.in_flight)) as fetch:
                return [fetch(index).status for index in range(first, collect.locations, 4) if index not in CORRUPT]

        with ThreadPoolExecutor(max_workers=4) as parts:
            statuses = [status for statuses in parts.map(part, range(4)) for status in statuses]
    assert "accepted" in statuses
    assert seen_globally and set(seen_globally) == {None}
    assert dask.config.get("pool", None) is None and dask.config.get("scheduler", None) is None
    assert int(dask.array.ones(8, chunks=2).sum().compute()) == 8
