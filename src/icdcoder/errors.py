"""The one exception type that reaches users as a one-line message.

Raise :class:`InputError` for anything wrong with what the user gave us (a file,
a line, a field, a code). The CLI prints ``error: <message>`` and exits 2, never
a traceback. Always name the place: ``path:line`` or the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class InputError(Exception):
    """Bad user input; the message is shown to the user as one line."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = str(path) + (f":{line}" if line is not None else "") + ": "
        super().__init__(where + message)


def first_invalid_field(err: Any, whole: str = "") -> tuple[str, str]:
    """The dotted field and message of a pydantic ``ValidationError``'s first error (``whole`` when the
    error is about the whole object): what the one-line message names."""
    first = err.errors()[0]
    return ".".join(str(part) for part in first["loc"]) or whole, first["msg"]
