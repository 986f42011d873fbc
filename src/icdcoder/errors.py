"""The one exception type that reaches users as a one-line message.

Raise :class:`InputError` for anything wrong with what the user gave us (a file,
a line, a field, a code). The CLI prints ``error: <message>`` and exits 2, never
a traceback. Always name the place: ``path:line`` or the field.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad user input; the message is shown to the user as one line."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = str(path) + (f":{line}" if line is not None else "") + ": "
        super().__init__(where + message)
