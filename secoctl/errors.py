"""Errors a user can act on: printed as one line each, exit code 2, never a traceback.

Kept free of pydantic so that the CLI can catch them without building the spec model.
"""

from __future__ import annotations

from dataclasses import dataclass

# An error line echoes field paths and values from the spec, which may be of any length.
MAX_PATH_CHARS = 120
MAX_MESSAGE_CHARS = 300
MAX_VALUE_CHARS = 60


def shorten(text: str, limit: int, length: int | None = None) -> str:
    """`text` within `limit` characters: its head, and how long it was when cut (`length`, when `text` is
    a quotation of something whose own length is what a reader needs)."""
    if len(text) <= limit:
        return text
    note = f"… ({len(text) if length is None else length} characters)"
    return text[: max(limit - len(note), 0)] + note


def shown(value: object) -> str:
    """A spec value as an error line quotes it: its repr, cut to MAX_VALUE_CHARS; a cut string's note gives
    the string's own length, not its repr's (quotes and escapes)."""
    return shorten(repr(value), MAX_VALUE_CHARS, len(value) if isinstance(value, str) else None)


def listing(names: list[str], limit: int = 20) -> str:
    """Names for an error line to offer: the first `limit`, and how many more; "none yet" when empty."""
    if not names:
        return "none yet"
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


class UserError(Exception):
    exit_code = 2


@dataclass(frozen=True)
class SpecProblem:
    source: str
    path: str
    message: str

    def __str__(self) -> str:
        message = shorten(self.message, MAX_MESSAGE_CHARS)
        return (
            f"{self.source}: {shorten(self.path, MAX_PATH_CHARS)}: {message}"
            if self.path
            else f"{self.source}: {message}"
        )


class SpecError(Exception):
    """Every problem found in one or more spec documents, each with its field path."""

    def __init__(self, problems: list[SpecProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class Failed(UserError):
    """A failure shown as its own lines, each printed as it is: a stage's named cause, or its log's tail."""

    def __init__(self, lines: list[str], exit_code: int = 2):
        self.lines, self.exit_code = lines, exit_code
        super().__init__("\n".join(lines))
