"""Time the assertion engine per note: what it adds to coding a note.

Run: ``python benchmarks/perf/assertion_speed.py`` (synthetic ~400-word notes, Spanish and English, built from sentences
written for this benchmark, with ~20 evidence spans each), or ``--notes FILE.jsonl`` to time real notes (any JSONL
whose lines hold a ``text``; ``--spans`` random word spans of 1-3 words are asserted per note).

Prints one JSON object per language: the one-time rule compile (ms), and per note the mean and 95th percentile (ms)
over ``--repeats`` passes, single thread. The coder codes ~25 notes/s on one core (40 ms a note), so 4 ms a note is
the 10% budget.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from pathlib import Path

# [[...]] marks an evidence span; sentences written for this benchmark (no clinical data)
SENTENCES = {
    "es": [
        "Paciente de 67 años con antecedentes de [[hipertensión arterial]] y [[diabetes mellitus tipo 2]] que acude por "
        "[[dolor torácico]] opresivo de dos horas de evolución.",
        "Niega [[disnea]], [[palpitaciones]] ni [[síncope]].",
        "A la exploración se encuentra [[afebril]], consciente y orientado, con buena coloración de piel y mucosas.",
        "Auscultación cardiaca rítmica sin [[soplos]]; murmullo vesicular conservado sin [[crepitantes]].",
        "Abdomen blando y depresible, no doloroso a la palpación, sin [[masas]] ni [[megalias]].",
        "En el electrocardiograma se observa ritmo sinusal a 80 lpm sin alteraciones agudas de la repolarización.",
        "Radiografía de tórax sin [[condensaciones]] ni [[derrame pleural]].",
        "Se descarta [[síndrome coronario agudo]] y se orienta como [[dolor torácico atípico]], probablemente de "
        "origen [[osteomuscular]].",
        "Madre con [[cáncer de mama]] y padre fallecido por [[infarto de miocardio]].",
        "Si presenta [[fiebre]] o empeoramiento del dolor, debe acudir a urgencias.",
        "Se recomienda control por su médico de atención primaria y seguimiento en consultas externas de cardiología "
        "en un plazo de tres meses, con ajuste del tratamiento antihipertensivo según las cifras tensionales.",
    ],
    "en": [
        "67 year old man with a history of [[hypertension]] and [[type 2 diabetes]] who presents with two hours of "
        "pressure-like [[chest pain]].",
        "He denies [[shortness of breath]], [[palpitations]], or [[syncope]].",
        "On examination he is [[afebrile]], alert and oriented, with normal skin color.",
        "Heart sounds are regular without [[murmurs]]; lungs are clear without [[crackles]].",
        "The abdomen is soft and non-tender, with no [[masses]] or [[organomegaly]].",
        "The electrocardiogram shows sinus rhythm at 80 beats per minute without acute repolarization changes.",
        "Chest radiograph shows no [[consolidation]] or [[pleural effusion]].",
        "[[Acute coronary syndrome]] was ruled out; the pain is likely [[musculoskeletal]] in origin.",
        "His mother had [[breast cancer]] and his father died of a [[myocardial infarction]].",
        "Return to the emergency department if [[fever]] or worsening pain develops.",
        "Follow up with his primary care physician and in the cardiology clinic within three months, with "
        "adjustment of his antihypertensive treatment according to home blood pressure readings.",
    ],
}


def synthetic_note(lang: str, words: int = 400, seed: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """About ``words`` words of the benchmark sentences, in a shuffled order, and the offsets of their spans."""
    rng = random.Random(seed)
    chosen: list[str] = []
    while sum(len(s.split()) for s in chosen) < words:
        chosen.append(rng.choice(SENTENCES[lang]))
    marked = " ".join(chosen)
    text, spans, pos = "", [], 0
    for match in re.finditer(r"\[\[(.*?)\]\]", marked):
        text += marked[pos : match.start()]
        start = len(text)
        text += match.group(1)
        spans.append((start, len(text)))
        pos = match.end()
    text += marked[pos:]
    return text, spans


def random_spans(text: str, count: int, rng: random.Random) -> list[tuple[int, int]]:
    """``count`` random spans of 1-3 consecutive words of ``text``."""
    words = [m.span() for m in re.finditer(r"\w+", text)]
    if not words:
        return []
    spans = []
    for _ in range(count):
        first = rng.randrange(len(words))
        last = min(len(words) - 1, first + rng.randrange(3))
        spans.append((words[first][0], words[last][1]))
    return spans


def time_notes(notes: list[tuple[str, list[tuple[int, int]]]], lang: str, repeats: int) -> dict:
    from icdcoder.assertion.engine import assert_spans, rules_for

    rules_for.cache_clear()
    start = time.perf_counter()
    rules_for(lang)
    compile_ms = (time.perf_counter() - start) * 1000
    for text, spans in notes[:3]:
        assert_spans(text, spans, lang)  # warm up
    per_note = []
    for _ in range(repeats):
        for text, spans in notes:
            start = time.perf_counter()
            assert_spans(text, spans, lang)
            per_note.append((time.perf_counter() - start) * 1000)
    per_note.sort()
    return {
        "lang": lang,
        "notes": len(notes),
        "mean_words": round(statistics.mean(len(t.split()) for t, _ in notes)),
        "mean_spans": round(statistics.mean(len(s) for _, s in notes), 1),
        "rules_compile_ms": round(compile_ms, 1),
        "ms_per_note_mean": round(statistics.mean(per_note), 3),
        "ms_per_note_p95": round(per_note[int(0.95 * (len(per_note) - 1))], 3),
        "budget_ms_per_note": 4.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=Path, help="JSONL of real notes (a 'text' field per line).")
    parser.add_argument("--lang", choices=("es", "en"), help="Language of --notes (default: both synthetic).")
    parser.add_argument("--spans", type=int, default=20, help="Random spans per real note.")
    parser.add_argument("--limit", type=int, default=200, help="At most this many real notes.")
    parser.add_argument("--repeats", type=int, default=20, help="Timed passes over the notes.")
    args = parser.parse_args()
    if args.notes is not None:
        rng = random.Random(0)
        notes = []
        with args.notes.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip() and len(notes) < args.limit:
                    text = json.loads(line)["text"]
                    notes.append((text, random_spans(text, args.spans, rng)))
        print(json.dumps(time_notes(notes, args.lang or "es", args.repeats)))
        return
    for lang in (args.lang,) if args.lang else ("es", "en"):
        notes = [synthetic_note(lang, seed=seed) for seed in range(20)]
        print(json.dumps(time_notes(notes, lang, args.repeats)))


if __name__ == "__main__":
    main()
