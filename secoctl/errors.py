"""Errors a user can act on: printed as one line each, exit code 2, never a traceback.

Kept free of pydantic so that the CLI can catch them without building the spec model.
"""

from __future__ import annotations

from dataclasses import dataclass


class UserError(Exception):
    exit_code = 2


@dataclass(frozen=True)
class SpecProblem:
    source: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}: {self.message}" if self.path else f"{self.source}: {self.message}"


class SpecError(Exception):
    """Every problem found in one or more spec documents, each with its field path."""

    def __init__(self, problems: list[SpecProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
