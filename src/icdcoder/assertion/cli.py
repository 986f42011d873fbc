"""``icdcoder assertion``: the assertion traits of given spans (the contract command).

Reads JSONL lines ``{"id", "text", "spans": [{"start", "end"}, ...]}`` and writes, atomically, one line per input
line: ``{"id", "spans": [{"start", "end", "traits": [...]}, ...]}``, every input span with its offsets, in the input
order. Other fields of the input are ignored. Everything is checked before anything is written; a bad line is one
:class:`~icdcoder.errors.InputError` naming ``file:line`` and the field.

Register it in ``icdcoder/cli.py`` with ``app.command("assertion")(assertion_command)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_cases(path: Path) -> list[tuple[str | int, str, list[tuple[int, int]]]]:
    """``(id, text, spans)`` of every line of ``path``, checked (see the module docstring)."""
    from icdcoder.errors import InputError
    from icdcoder.io import read_jsonl

    cases: list[tuple[str | int, str, list[tuple[int, int]]]] = []
    for number, record in read_jsonl(path):

        def fail(message: str) -> InputError:
            return InputError(message, path=path, line=number)  # noqa: B023

        for name in ("id", "text", "spans"):
            if name not in record:
                raise fail(f"field '{name}' is missing")
        if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
            raise fail("field 'id' must be a string or an integer")
        text = record["text"]
        if not isinstance(text, str):
            raise fail("field 'text' must be a string")
        if not isinstance(record["spans"], list):
            raise fail('field \'spans\' must be a list of {"start", "end"} objects')
        spans = []
        for index, span in enumerate(record["spans"]):
            where = f"spans.{index}"
            if not isinstance(span, dict):
                raise fail(f"field '{where}' must be an object with 'start' and 'end'")
            for name in ("start", "end"):
                if name not in span:
                    raise fail(f"field '{where}.{name}' is missing")
                if not _integer(span[name]):
                    raise fail(f"field '{where}.{name}' must be an integer (got {json.dumps(span[name])})")
            start, end = span["start"], span["end"]
            if start > end:
                raise fail(f"field '{where}': reversed offsets {start}-{end} (start after end)")
            if start < 0 or end > len(text):
                raise fail(f"field '{where}': offsets {start}-{end} outside the text ({len(text)} characters)")
            spans.append((start, end))
        cases.append((record["id"], text, spans))
    return cases


def assertion_command(
    input: Annotated[Path, typer.Option("--input", help='Cases JSONL: {"id", "text", "spans": [{"start", "end"}]}.')],
    out: Annotated[Path, typer.Option("--out", help="JSONL to write (atomically): each span with its traits.")],
    lang: Annotated[str, typer.Option("--lang", help="es or en.")] = "es",
) -> None:
    """Assertion traits of each span: negated, uncertain, historical, hypothetical, family (none: affirmed, current,
    the patient's). Prints {"cases": N, "spans": M, "out": PATH, "rules_version": V}."""
    from icdcoder.assertion.engine import LANGUAGES, assert_spans, rules_for
    from icdcoder.errors import InputError
    from icdcoder.io import atomic_write, check_output_file

    if lang not in LANGUAGES:
        raise InputError(f"--lang must be es or en (got '{lang}')")
    check_output_file(out, inputs=[input])
    cases = read_cases(input)
    rules = rules_for(lang)
    spans_done = 0
    with atomic_write(out) as handle:
        for case_id, text, spans in cases:
            traits = assert_spans(text, spans, lang)
            rows = [{"start": s, "end": e, "traits": t} for (s, e), t in zip(spans, traits)]
            handle.write(json.dumps({"id": case_id, "spans": rows}, ensure_ascii=False) + "\n")
            spans_done += len(rows)
    typer.echo(json.dumps({"cases": len(cases), "spans": spans_done, "out": str(out), "rules_version": rules.version}))
