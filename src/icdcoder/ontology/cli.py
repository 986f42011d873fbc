"""``icdcoder codes``: look up one ICD code or search codes by words."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from icdcoder.errors import InputError

app = typer.Typer(no_args_is_help=True, help="Look up ICD codes.")

SystemOption = Annotated[
    str | None,
    typer.Option("--system", "-s", help="icd10cm, icd10pcs, icd9cm or icd9pcs (default: try all in that order)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _find_node(ontology, code: str, system: str | None):
    """The node for ``code``: a code first, else a chapter/block grouping; unknown raises InputError."""
    from icdcoder.ontology import SYSTEMS

    systems = (system,) if system else SYSTEMS
    found = ontology.resolve(code, systems)
    if found is not None:
        return ontology.get(*found)
    for candidate in systems:
        info = ontology.get(code, candidate)
        if info is not None:
            return info
    raise InputError(f"unknown code '{code}' (systems tried: {', '.join(systems)})")


def _gem_targets(ontology, info) -> dict[str, list[str]]:
    if info.system == "icd9cm":
        return {"icd10cm": ontology.gem_9_to_10(info.code)}
    if info.system == "icd10cm":
        return {"icd9cm": ontology.gem_10_to_9(info.code)}
    return {}


def code_record(ontology, info, max_children: int) -> dict:
    """Everything ``codes show`` reports about one node, as JSON-ready data."""
    ancestors = ontology.ancestors(info.code, info.system)
    return {
        "code": info.code,
        "system": info.system,
        "description": info.description,
        "kind": info.kind,
        "billable": info.billable,
        "is_leaf": info.is_leaf,
        "parent": info.parent,
        "ancestors": [{"code": code, "description": ontology.describe(code, info.system)} for code in ancestors],
        "n_children": len(info.children),
        "children": [
            {"code": code, "description": ontology.describe(code, info.system)} for code in info.children[:max_children]
        ],
        "inclusion_terms": list(info.inclusion_terms),
        "excludes1": list(info.excludes1),
        "excludes2": list(info.excludes2),
        "gem": _gem_targets(ontology, info),
    }


def _print_record(record: dict) -> None:
    console = Console(highlight=False)
    status = "billable" if record["billable"] else ("leaf" if record["is_leaf"] else "not billable")
    console.print(f"[bold]{record['code']}[/bold] ({record['system']}, {record['kind']}, {status})")
    console.print(f"  {record['description']}")
    for ancestor in record["ancestors"]:
        console.print(f"  [dim]< {ancestor['code']}  {ancestor['description']}[/dim]")
    sections = [
        ("Includes", record["inclusion_terms"]),
        ("Excludes1", record["excludes1"]),
        ("Excludes2", record["excludes2"]),
    ]
    for title, lines in sections:
        if lines:
            console.print(f"[bold]{title}:[/bold]")
            for line in lines:
                console.print(f"  - {line}")
    if record["children"]:
        shown = len(record["children"])
        console.print(f"[bold]Children[/bold] ({shown} of {record['n_children']}):")
        for child in record["children"]:
            console.print(f"  {child['code']}  {child['description']}")
    for target, codes in record["gem"].items():
        console.print(f"[bold]GEM -> {target}:[/bold] {', '.join(codes) if codes else '(no mapping)'}")


@app.command("show")
def show(
    code: Annotated[str, typer.Argument(help="An ICD code in any spelling (n448, N44.8, bw03).")],
    system: SystemOption = None,
    as_json: JsonOption = False,
    max_children: Annotated[int, typer.Option("--children", min=0, help="Show at most this many children.")] = 20,
) -> None:
    """Describe one code: title, hierarchy, children, inclusion terms, excludes and GEM mappings."""
    from icdcoder.ontology import load_ontology
    from icdcoder.ontology.codes import check_system

    if system is not None:
        check_system(system)
    ontology = load_ontology()
    record = code_record(ontology, _find_node(ontology, code, system), max_children)
    if as_json:
        typer.echo(json.dumps(record, ensure_ascii=False))
    else:
        _print_record(record)


@app.command("search")
def search(
    words: Annotated[
        str, typer.Argument(help="Words to look for, Spanish or English (accents and plurals do not matter).")
    ],
    system: SystemOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Number of codes to list.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Find codes by words: English titles and inclusion terms, and the Spanish words of the CodiEsp training evidence
    (ranked by how much of the query, then how exactly, a code's best text matches)."""
    from icdcoder.ontology.search import search_codes

    hits = search_codes(words, system=system, limit=limit)
    if as_json:
        records = [
            {
                "code": h.code,
                "system": h.system,
                "description": h.description,
                "score": round(h.score, 4),
                "matched": h.matched,
                "source": h.source,
                "notes": h.notes,
            }
            for h in hits
        ]
        typer.echo(json.dumps(records, ensure_ascii=False))
        return
    table = Table(title=f"{len(hits)} codes for '{words}'")
    for column in ("code", "system", "score", "description", "matched"):
        table.add_column(column)
    for hit in hits:
        matched = f"{hit.matched} (es, {hit.notes} notes)" if hit.source == "spanish" else hit.matched
        table.add_row(hit.code, hit.system, f"{hit.score:.2f}", hit.description, matched)
    Console().print(table)
