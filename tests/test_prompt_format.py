"""The shared prompt/answer format: untrusted completions are parsed, never trusted."""

from __future__ import annotations

from icdcoder.prompt import Candidate, build_prompt, find_quote, find_words, format_answer, parse_answer

NOTE = "Paciente con fiebre alta y dolor torácico.\nSe realiza Rx  tórax."
KNOWN = {"R50.9": "icd10cm", "R07.9": "icd10cm", "BW03ZZZ": "icd10pcs"}


def resolve(code: str):
    canonical = code.strip().upper()
    return (canonical, KNOWN[canonical]) if canonical in KNOWN else None


def test_prompt_lists_candidates_and_hints_and_ends_at_answer_marker():
    prompt = build_prompt("fiebre", [Candidate("R50.9", "Fever")], hints=[Candidate("R07.9", "Chest pain")])
    assert "R50.9 Fever" in prompt and "R07.9 Chest pain" in prompt
    assert prompt.endswith("Answer:\n")
    assert "Hint" not in build_prompt("fiebre")


def test_answer_round_trips_through_the_parser():
    completion = format_answer([("R50.9", "fiebre alta"), ("BW03ZZZ", "Rx tórax")])
    parsed = parse_answer(completion, NOTE, resolve)
    assert [(i.code, i.system) for i in parsed.items] == [("R50.9", "icd10cm"), ("BW03ZZZ", "icd10pcs")]
    first = parsed.items[0]
    assert NOTE[first.start : first.end] == "fiebre alta"
    # whitespace-tolerant match maps back to the original characters
    second = parsed.items[1]
    assert NOTE[second.start : second.end] == "Rx  tórax"
    assert not parsed.dropped and parsed.well_formed


def test_garbage_is_dropped_and_counted_never_raised():
    completion = "\n".join(
        [
            "r50.9 | FIEBRE",  # lower-case code, case-insensitive quote: kept
            "R50.9 | dolor",  # duplicate code
            "Z99.99 | fiebre",  # invented code
            "R07.9 | dolor abdominal",  # quote not in the note
            "R07.9 |",  # no quote
            "this is not an answer line",
            "NONE",
        ]
    )
    parsed = parse_answer(completion, NOTE, resolve)
    assert [i.code for i in parsed.items] == ["R50.9"]
    assert parsed.dropped == {"duplicate": 1, "unknown_code": 1, "quote_not_found": 1, "no_quote": 1, "malformed": 1}
    assert not parsed.well_formed and parsed.said_none


def test_none_and_empty_answers():
    assert format_answer([]) == "NONE"
    parsed = parse_answer("NONE", NOTE, resolve)
    assert parsed.items == [] and parsed.said_none and parsed.well_formed
    assert parse_answer("", NOTE, resolve).items == []


def test_find_quote_prefers_exact_then_case_then_whitespace():
    assert find_quote("fiebre", "Fiebre y fiebre") == (9, 15)
    assert find_quote("FIEBRE", "la fiebre") == (3, 9)
    assert find_quote("a  b", "x a\nb") == (2, 5)
    assert find_quote("", "abc") is None
    assert find_quote("zzz", "abc") is None
    assert find_quote("   ", "a   b") is None


def test_find_quote_prefers_whole_words_to_a_longer_word():
    assert find_quote("renal", "masa suprarrenal e insuficiencia renal") == (33, 38)
    assert find_quote("Renal", "masa suprarrenal e insuficiencia renal") == (33, 38)
    assert find_quote("renal", "masa suprarrenal") == (11, 16)  # verbatim, though inside a word: kept


def test_find_words_never_finds_a_phrase_inside_a_longer_word():
    text = "Afebril, masa suprarrenal. Pico FEBRIL y masa\nrenal"
    assert find_quote("febril", "Afebril.") == (1, 7)  # a model's verbatim quote may be; a training form may not
    assert find_words("febril", "Afebril.") is None
    assert find_words("febril", text) == (32, 38)
    assert find_words("renal", text) == (len(text) - 5, len(text))
    assert find_words("masa  renal", text) == (41, len(text))
    assert find_words("debilidad general", "debilidad generalizada") is None
    assert find_words(" ", text) is None
