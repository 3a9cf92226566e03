"""What ships (secoctl/, jobs/, benchmarks/) never imports the tests: the tests import it, never the reverse."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

SHIPPED = ("secoctl", "jobs", "benchmarks")


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module named by an import anywhere in `tree`, inside functions too; relative imports as written."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_shipped_module_imports_the_tests():
    offenders = {}
    for package in SHIPPED:
        for path in sorted((ROOT / package).rglob("*.py")):
            tests = sorted(name for name in imported_modules(ast.parse(path.read_text(), str(path)))
                           if name == "tests" or name.startswith("tests."))
            if tests:
                offenders[str(path.relative_to(ROOT))] = tests
    assert offenders == {}


def test_the_walk_sees_an_import_of_the_tests_where_there_is_one():
    tree = ast.parse("def f():\n    from tests.cluster import conftest\nimport tests.s3\n")
    assert imported_modules(tree) == {"tests.cluster", "tests.s3"}
