"""The import graph runs one way: no circle among secoctl's, jobs' and the benchmarks' modules, and nothing
outside tests/ imports the tests. Function-level imports count (they are dependencies that load late);
imports made only for type checking do not."""

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("secoctl", "jobs", "benchmarks", "images")  # what users and pods run: never the tests


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The modules `path` imports, type-checking-only imports left out."""
    tree = ast.parse(path.read_text(), str(path))
    checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])]
                )
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found


def graph() -> dict[str, set[str]]:
    paths = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules) for p in paths}


def test_no_module_outside_tests_imports_the_tests():
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if target == "tests" or target.startswith("tests.")
    )
    assert offenders == []


def test_the_import_graph_has_no_circle():
    edges = {
        module: {t for t in targets if t.split(".")[0] in PACKAGES and t != module}
        for module, targets in graph().items()
    }
    state: dict[str, int] = {}
    circles = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []
