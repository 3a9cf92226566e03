"""Text from outside (markers, folder names, Job conditions, events, spec values) as a terminal may show it.

Such text is data: rich must not read its brackets as markup, and a terminal must not obey its control
characters (an OSC sequence retitles the window, a CSI one clears the screen). `-o json` prints the
records unchanged; JSON escapes control characters itself.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported where a table is drawn: error lines and logs need none of it
    from rich.text import Text

# ESC sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL|ST`, and two-byte ones) go whole, so that no
# parameter bytes are left behind; then every other C0 control but tab and newline, DEL and the C1 block.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_NAMES = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe(text: object) -> str:
    """`text` with its control characters gone: ESC sequences whole, each other control as '?'."""
    return _CONTROLS.sub("?", _ESCAPES.sub("", str(text)))


def one_line(text: object) -> str:
    """`safe`, with newlines and tabs as spaces: for a table cell or a line that must stay one line."""
    return safe(text).replace("\n", " ").replace("\t", " ")


def cell(text: object, style: str = "") -> Text:
    """One line of outside text as a rich cell: never read as markup, printed as it is."""
    from rich.text import Text

    return Text(one_line(text), style=style)


def markup_safe(text: object) -> str:
    """Outside text to embed in a rich markup string of our own."""
    from rich.markup import escape

    return escape(safe(text))


def has_control(text: str) -> bool:
    """Whether `text` holds any C0 or C1 control character, tab and newline included."""
    return _CONTROL_NAMES.search(text) is not None
