"""Assertion traits (issue 29, part 1): the engine and its rule files, the contract command, the NUBes loader.

Real NUBes data is read from ../shared/data/nubes (ICDCODER_NUBES_DIR) and skipped, with the reason, when absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from icdcoder.assertion import TRAITS, assert_spans, rules_version
from icdcoder.assertion.engine import assert_with, compile_rules, rules_path
from icdcoder.errors import InputError

REPO = Path(__file__).resolve().parent.parent
EN_CASES = REPO / "tests" / "data" / "assertion_en.jsonl"
NUBES_DIR = Path(os.environ.get("ICDCODER_NUBES_DIR", REPO.parent / "shared" / "data" / "nubes"))


def traits_of(text: str, phrase: str, lang: str, occurrence: int = 1) -> list[str]:
    """The traits of the ``occurrence``-th ``phrase`` of ``text``."""
    start = -1
    for _ in range(occurrence):
        start = text.index(phrase, start + 1)
    return assert_spans(text, [(start, start + len(phrase))], lang)[0]


# --------------------------------------------------------------------------------------- the issue's "Why" examples


@pytest.mark.parametrize(
    ("text", "phrase", "lang", "expected"),
    [
        ("Niega dolor torácico.", "dolor torácico", "es", ["negated"]),
        ("Sin diabetes mellitus.", "diabetes mellitus", "es", ["negated"]),
        ("Se descarta neumonía.", "neumonía", "es", ["negated"]),
        ("Antecedentes familiares de cáncer de mama.", "cáncer de mama", "es", ["family"]),
        ("The patient denies chest pain.", "chest pain", "en", ["negated"]),
        ("denies chest pain", "chest pain", "en", ["negated"]),
        ("No evidence of pneumonia.", "pneumonia", "en", ["negated"]),
        ("no evidence of pneumonia", "pneumonia", "en", ["negated"]),
        ("Rule out MI.", "MI", "en", ["uncertain"]),
    ],
)
def test_the_issue_examples(text, phrase, lang, expected):
    assert traits_of(text, phrase, lang) == expected


def test_the_same_findings_affirmed_have_no_trait():
    assert traits_of("Dolor torácico opresivo.", "Dolor torácico", "es") == []
    assert traits_of("Diabetes mellitus tipo 2 en tratamiento con metformina.", "Diabetes mellitus", "es") == []
    assert traits_of("Neumonía basal derecha.", "Neumonía", "es") == []
    assert traits_of("Cáncer de mama intervenido en 2019.", "Cáncer de mama", "es") != ["family"]
    assert traits_of("He reports chest pain radiating to the left arm.", "chest pain", "en") == []
    assert traits_of("Chest x-ray consistent with pneumonia.", "pneumonia", "en") == []


# ------------------------------------------------------------------------------------------------------------ scope


def test_a_negation_covers_a_coordinated_list():
    text = "No cefalea ni focalidad ni vómitos."
    for phrase in ("cefalea", "focalidad", "vómitos"):
        assert traits_of(text, phrase, "es") == ["negated"], phrase
    text = "No tos, expectoración ni fiebre."
    for phrase in ("tos", "expectoración", "fiebre"):
        assert traits_of(text, phrase, "es") == ["negated"], phrase
    text = "She denies fever, chills, or night sweats."
    for phrase in ("fever", "chills", "night sweats"):
        assert traits_of(text, phrase, "en") == ["negated"], phrase


def test_a_scope_ends_with_its_sentence_and_a_new_clause():
    assert traits_of("Refiere dolor torácico. No disnea.", "dolor torácico", "es") == []
    assert traits_of("No disnea. Refiere dolor torácico.", "dolor torácico", "es") == []
    assert traits_of("No presenta disnea, refiere dolor torácico opresivo.", "dolor torácico", "es") == []
    assert traits_of("Sin antecedentes de interés que ingresa por dolor abdominal.", "dolor abdominal", "es") == []


@pytest.mark.parametrize(
    ("text", "phrase", "lang", "expected"),
    [
        ("No mejora del dolor lumbar.", "dolor lumbar", "es", []),
        ("Sin cambios en la lesión hepática.", "lesión hepática", "es", []),
        ("No change in mental status overnight.", "mental status", "en", []),
        ("No improvement in his dyspnea after nebulizers.", "dyspnea", "en", []),
        ("Gram negative rods were isolated.", "rods", "en", []),
        ("Patient ambulating without difficulty after the hip replacement.", "hip replacement", "en", []),
    ],
)
def test_pseudo_negations_negate_nothing_after_them(text, phrase, lang, expected):
    assert traits_of(text, phrase, lang) == expected


@pytest.mark.parametrize(
    ("text", "negated", "affirmed", "lang"),
    [
        ("Sin fiebre pero con tos productiva.", "fiebre", "tos productiva", "es"),
        ("No refiere fiebre, aunque sí astenia.", "fiebre", "astenia", "es"),
        ("He denies chest pain but reports palpitations.", "chest pain", "palpitations", "en"),
        ("She has no fever, however she complains of dysuria.", "fever", "dysuria", "en"),
    ],
)
def test_termination_cues_end_the_scope(text, negated, affirmed, lang):
    assert traits_of(text, negated, lang) == ["negated"]
    assert traits_of(text, affirmed, lang) == []


def test_morphological_negation_is_the_word_itself():
    assert traits_of("Paciente afebril y eupneico.", "afebril", "es") == ["negated"]
    assert traits_of("Asintomático desde el alta.", "Asintomático", "es") == ["negated"]
    assert traits_of("Paciente asintomatica.", "asintomatica", "es") == ["negated"]  # no accent
    assert traits_of("Patient is afebrile.", "afebrile", "en") == ["negated"]
    # a former habit is history, not a negation; a word beside the marker is not negated by it
    assert traits_of("Exfumador desde hace 10 años.", "Exfumador", "es") == ["historical"]
    assert traits_of("Paciente afebril con dolor abdominal.", "dolor abdominal", "es") == []


def test_ruled_out_is_negated_and_not_ruled_out_is_uncertain():
    assert traits_of("Se descarta neumonía.", "neumonía", "es") == ["negated"]
    assert traits_of("Neumonía descartada.", "Neumonía", "es") == ["negated"]
    assert traits_of("No se descarta tromboembolismo pulmonar.", "tromboembolismo pulmonar", "es") == ["uncertain"]
    assert traits_of("Sin poder descartar infección.", "infección", "es") == ["uncertain"]
    # a test ordered to rule something out says nothing of it yet: not negated
    assert traits_of("Se solicita TAC para descartar TEP.", "TEP", "es") == ["hypothetical"]
    assert traits_of("Pulmonary embolism was ruled out by CT.", "Pulmonary embolism", "en") == ["negated"]
    assert traits_of("Cannot rule out small bowel obstruction.", "small bowel obstruction", "en") == ["uncertain"]


@pytest.mark.parametrize(
    ("text", "phrase", "lang", "expected"),
    [
        ("Posible neumonía basal derecha.", "neumonía basal derecha", "es", ["uncertain"]),
        ("Sospecha de apendicitis aguda.", "apendicitis aguda", "es", ["uncertain"]),
        ("Imagen compatible con neumonía.", "neumonía", "es", ["uncertain"]),
        ("Sin signos sugestivos de malignidad.", "malignidad", "es", ["negated"]),  # the negation cancels the doubt
        ("Antecedentes de infarto agudo de miocardio.", "infarto agudo de miocardio", "es", ["historical"]),
        ("Infarto de miocardio previo.", "Infarto de miocardio", "es", ["historical"]),
        ("Si presenta fiebre, acudir a urgencias.", "fiebre", "es", ["hypothetical"]),
        ("Paracetamol si dolor.", "dolor", "es", ["hypothetical"]),
        ("En caso de sangrado, acudir a urgencias.", "sangrado", "es", ["hypothetical"]),
        ("Madre con cáncer de mama.", "cáncer de mama", "es", ["family"]),
        ("Padre fallecido por infarto.", "infarto", "es", ["family"]),
        ("Acude acompañado de su madre por dolor torácico.", "dolor torácico", "es", []),
        ("Paciente con antecedentes de HTA que ingresa por dolor torácico.", "dolor torácico", "es", []),
        ("Sí refiere disnea de esfuerzo.", "disnea de esfuerzo", "es", []),  # "sí" (yes) is not "si" (if)
        ("Possible pneumonia in the right lower lobe.", "pneumonia", "en", ["uncertain"]),
        ("History of hypertension.", "hypertension", "en", ["historical"]),
        ("History of CAD who presents with chest pain.", "chest pain", "en", []),
        ("Return if chest pain recurs.", "chest pain", "en", ["hypothetical"]),
        ("His mother had colon cancer.", "colon cancer", "en", ["family"]),
        ("His mother reports that he has had fever.", "fever", "en", []),
        ("No family history of sudden cardiac death.", "sudden cardiac death", "en", ["negated", "family"]),
    ],
)
def test_uncertain_historical_hypothetical_family(text, phrase, lang, expected):
    assert traits_of(text, phrase, lang) == expected


# --------------------------------------------------------------------------------------------------------- the API


def test_traits_come_per_span_in_the_order_given_and_spans_may_overlap():
    text = "Niega dolor torácico. Antecedentes familiares de cáncer de mama."
    spans = [(49, 63), (6, 20), (6, 11), (0, 0)]
    assert assert_spans(text, spans, "es") == [["family"], ["negated"], ["negated"], []]
    assert assert_spans(text, [], "es") == []
    assert all(t in TRAITS for row in assert_spans(text, spans, "es") for t in row)


def test_a_cue_inside_the_span_at_its_edge_counts():
    text = "There is no evidence of fracture. Sin diabetes mellitus."
    start = text.index("evidence")
    assert assert_spans(text, [(start, text.index("."))], "en") == [["negated"]]
    start = text.index("Sin")
    assert assert_spans(text, [(start, len(text) - 1)], "es") == [["negated"]]
    # a cue in the middle of a span whose words are as much before it as after does not negate it
    assert traits_of("Chest pain without radiation.", "Chest pain without radiation", "en") == []


@pytest.mark.parametrize(
    ("text", "phrase", "lang"),
    [
        ("Rx de tórax: no hay signos de neumonía.", "Rx de tórax: no hay signos de neumonía", "es"),
        ("ECG sin evidencia de infarto.", "ECG sin evidencia de infarto", "es"),
        ("Paciente sin evidencia de infarto agudo.", "Paciente sin evidencia de infarto agudo", "es"),
        ("Tórax: no hay signos de neumonía.", "Tórax: no hay signos de neumonía.", "es"),
        ("The chest film shows no evidence of pneumonia.", "film shows no evidence of pneumonia", "en"),
        ("ECG: no signs of acute myocardial infarction.", "ECG: no signs of acute myocardial infarction", "en"),
    ],
)
def test_a_negation_inside_a_long_span_negates_what_most_of_it_says(text, phrase, lang):
    assert traits_of(text, phrase, lang) == ["negated"]


@pytest.mark.parametrize(
    ("text", "phrase", "lang"),
    [
        ("Refiere dolor torácico opresivo, sin fiebre.", "Refiere dolor torácico opresivo, sin fiebre.", "es"),
        ("Dolor abdominal intenso y difuso sin fiebre.", "Dolor abdominal intenso y difuso sin fiebre", "es"),
        ("Severe crushing chest pain, no fever.", "Severe crushing chest pain, no fever.", "en"),
        ("Náuseas sin vómitos.", "Náuseas sin vómitos", "es"),  # R11.0, nausea without vomiting
        ("Linfoma no Hodgkin difuso.", "Linfoma no Hodgkin difuso", "es"),  # a name, not a negation
        # "ni" continues a list inside the span: the negation, if any, comes from before it
        ("Lesiones herpéticas ni de cándida.", "Lesiones herpéticas ni de cándida", "es"),
    ],
)
def test_a_negation_late_in_a_long_span_leaves_the_finding_before_it_affirmed(text, phrase, lang):
    assert traits_of(text, phrase, lang) == []


def test_inside_span_is_rule_data_on_negation_rules_only():
    rule = {"category": "NEGATED_EXISTENCE", "literal": "sin", "direction": "FORWARD"}
    text, span = "ECG sin infarto agudo", [(0, 21)]
    assert assert_with(compile_rules({"version": "t", "context_rules": [rule]}), text, span) == [["negated"]]
    quiet = {**rule, "metadata": {"inside_span": False}}
    assert assert_with(compile_rules({"version": "t", "context_rules": [quiet]}), text, span) == [[]]
    with pytest.raises(InputError, match="inside_span"):
        compile_rules({"version": "t", "context_rules": [{**quiet, "category": "HISTORICAL"}]})


@pytest.mark.parametrize("spans", [[(5, 2)], [(0, 999)], [(-1, 3)], [(0,)], [("0", 3)]])
def test_bad_spans_are_input_errors(spans):
    with pytest.raises(InputError, match="span 0"):
        assert_spans("Niega dolor.", spans, "es")


def test_an_unknown_language_is_an_input_error():
    with pytest.raises(InputError, match="unsupported language"):
        assert_spans("texte", [(0, 5)], "fr")


# ------------------------------------------------------------------------------------------------------- rule files


@pytest.mark.parametrize("lang", ["es", "en"])
def test_the_rule_files_are_versioned_medspacy_schema_data(lang):
    data = json.loads(rules_path(lang).read_text(encoding="utf-8"))
    assert data["language"] == lang and data["version"] == rules_version(lang)
    medspacy_keys = {"literal", "pattern", "category", "direction", "max_scope", "metadata"}
    for rule in data["context_rules"]:
        assert set(rule) <= medspacy_keys and isinstance(rule["literal"], str), rule


def test_a_bad_rule_file_names_the_rule():
    base = {
        "version": "t",
        "context_rules": [{"category": "NEGATED_EXISTENCE", "literal": "no", "direction": "FORWARD"}],
    }
    compile_rules(base)
    for bad, message in (
        ({"literal": "no", "category": "NEGATED_EXISTENCE", "direction": "SIDEWAYS"}, "direction"),
        ({"literal": "no", "category": "NEGATED", "direction": "FORWARD"}, "gives no trait"),
        ({"category": "NEGATED_EXISTENCE", "direction": "FORWARD"}, "literal"),
        ({"literal": "no", "category": "NEGATED_EXISTENCE", "direction": "FORWARD", "scope": 3}, "unknown field"),
        ({"literal": "no", "category": "FAMILY", "direction": "BACKWARD"}, "only one of them"),
    ):
        with pytest.raises(InputError, match=message):
            compile_rules({**base, "context_rules": base["context_rules"] + [bad]})
    with pytest.raises(InputError, match="version"):
        compile_rules({"context_rules": []})


# ---------------------------------------------------------------------------------------------- English case file


def _case_scores(split: str) -> dict:
    from icdcoder.assertion.scoring import score_traits

    gold, predicted = [], []
    for line in EN_CASES.read_text(encoding="utf-8").splitlines():
        case = json.loads(line)
        if case["split"] != split:
            continue
        got = assert_spans(case["text"], [(s["start"], s["end"]) for s in case["spans"]], "en")
        gold += [s["traits"] for s in case["spans"]]
        predicted += got
    return score_traits(gold, predicted, TRAITS)


@pytest.mark.parametrize("split", ["dev", "heldout"])
def test_the_english_cases(split):
    scores = _case_scores(split)
    assert scores["negated"]["f1"] >= 0.95, scores
    assert scores["historical"]["f1"] >= 0.9, scores
    assert min(s["f1"] for s in scores.values()) >= 0.9, scores


# ------------------------------------------------------------------------------------------- the contract command


def _run(tmp_path: Path, lines: list, lang: str = "es") -> list[dict]:
    from icdcoder.assertion.cli import assertion_command

    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        "".join((json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else x) + "\n" for x in lines)
    )
    out = tmp_path / "out.jsonl"
    assertion_command(input=cases, out=out, lang=lang)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_the_contract_command_round_trip(tmp_path):
    text = "Niega dolor torácico. Antecedentes familiares de cáncer de mama. Sin fiebre."
    spans = [{"start": 49, "end": 63}, {"start": 6, "end": 20}, {"start": 70, "end": 76}, {"start": 6, "end": 20}]
    rows = _run(
        tmp_path, [{"id": "a", "text": text, "spans": spans, "extra": 1}, {"id": 7, "text": "Tos.", "spans": []}]
    )
    assert rows == [
        {
            "id": "a",
            "spans": [
                {"start": 49, "end": 63, "traits": ["family"]},
                {"start": 6, "end": 20, "traits": ["negated"]},
                {"start": 70, "end": 76, "traits": ["negated"]},
                {"start": 6, "end": 20, "traits": ["negated"]},
            ],
        },
        {"id": 7, "spans": []},
    ]
    english = _run(tmp_path, [{"id": "e", "text": "Rule out MI.", "spans": [{"start": 9, "end": 11}]}], lang="en")
    assert english == [{"id": "e", "spans": [{"start": 9, "end": 11, "traits": ["uncertain"]}]}]


def test_the_contract_command_through_typer(tmp_path):
    import typer
    from typer.testing import CliRunner

    from icdcoder.assertion.cli import assertion_command

    app = typer.Typer()
    app.command("assertion")(assertion_command)
    app.command("other")(lambda: None)  # two commands: invoked by name, as under `icdcoder`
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps({"id": "x", "text": "denies chest pain", "spans": [{"start": 7, "end": 17}]}) + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["assertion", "--input", str(cases), "--out", str(out), "--lang", "en"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["spans"] == 1
    assert json.loads(out.read_text())["spans"][0]["traits"] == ["negated"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"text": "Tos.", "spans": []}, "field 'id' is missing"),
        ({"id": "a", "spans": []}, "field 'text' is missing"),
        ({"id": "a", "text": "Tos."}, "field 'spans' is missing"),
        ({"id": "a", "text": "Tos.", "spans": [{"start": 0}]}, "field 'spans.0.end' is missing"),
        (
            {"id": "a", "text": "Tos.", "spans": [{"start": 0, "end": 99}]},
            r"field 'spans.0': offsets 0-99 outside the text",
        ),
        ({"id": "a", "text": "Tos.", "spans": [{"start": -1, "end": 2}]}, "outside the text"),
        ({"id": "a", "text": "Tos.", "spans": [{"start": 3, "end": 1}]}, "reversed offsets 3-1"),
        ({"id": "a", "text": "Tos.", "spans": [{"start": "0", "end": 2}]}, "'spans.0.start' must be an integer"),
        ({"id": "a", "text": "Tos.", "spans": {"start": 0, "end": 2}}, "field 'spans' must be a list"),
        ({"id": "a", "text": 5, "spans": []}, "field 'text' must be a string"),
        ("{not json", "malformed JSON"),
    ],
)
def test_the_contract_command_names_file_line_and_field(tmp_path, line, message):
    good = {"id": "ok", "text": "Tos.", "spans": [{"start": 0, "end": 3}]}
    with pytest.raises(InputError, match=message) as err:
        _run(tmp_path, [good, line])
    assert "cases.jsonl:2: " in str(err.value)
    assert not (tmp_path / "out.jsonl").exists()  # nothing written


def test_the_contract_command_refuses_its_input_as_output_and_a_bad_language(tmp_path):
    from icdcoder.assertion.cli import assertion_command

    cases = tmp_path / "cases.jsonl"
    original = json.dumps({"id": "a", "text": "Tos.", "spans": []}) + "\n"
    cases.write_text(original)
    with pytest.raises(InputError, match="also an input"):
        assertion_command(input=cases, out=cases, lang="es")
    assert cases.read_text() == original
    with pytest.raises(InputError, match="--lang"):
        assertion_command(input=cases, out=tmp_path / "o.jsonl", lang="fr")


# ------------------------------------------------------------------------------------------------- the NUBes loader

# A tiny BRAT sample in the NUBes scheme, written for this test: one sentence a line.
TINY_TXT = "No refiere cefalea ni vómitos .\nPaciente afebril con posible neumonía .\nPresenta cefalea intensa .\n"
TINY_ANN = """T1	NegSynMarker 0 2	No
T2	Phrase 3 29	refiere cefalea ni vómitos
T3	DISO 11 18	cefalea
T4	CoordItem 19 21	ni
T5	DISO 22 29	vómitos
T6	NegMorMarker 41 48	afebril
T7	UncertLexMarker 53 60	posible
T8	DISO 61 69	neumonía
R1	Scope Arg1:T1 Arg2:T2
R2	Scope Arg1:T7 Arg2:T8
"""


def _tiny(tmp_path: Path, ann: str = TINY_ANN) -> Path:
    folder = tmp_path / "SAMPLE-TINY"
    folder.mkdir(exist_ok=True)
    (folder / "doc.txt").write_text(TINY_TXT, encoding="utf-8")
    (folder / "doc.ann").write_text(ann, encoding="utf-8")
    return folder


def test_the_nubes_loader_turns_events_into_items(tmp_path):
    from icdcoder.assertion.nubes import events, load_nubes, read_brat, score_documents

    folder = _tiny(tmp_path)
    doc = read_brat(folder / "doc.ann")
    items = events(doc)
    got = [(TINY_TXT[i.start : i.end], i.traits, i.kind) for i in items]
    assert got == [
        ("cefalea", ("negated",), "event"),
        ("vómitos", ("negated",), "event"),  # inside the Phrase that is the scope of "No"
        ("afebril", ("negated",), "morph"),  # a morphological marker is its own negated event
        ("neumonía", ("uncertain",), "event"),
    ]
    (loaded,) = load_nubes([folder])
    affirmed = [TINY_TXT[i.start : i.end] for i in loaded.items if i.kind == "affirmed"]
    assert affirmed == ["cefalea"]  # the third line: outside every annotation
    assert loaded.items[-1].start == TINY_TXT.index("cefalea intensa")
    scores = score_documents([loaded])
    assert scores["items"] == {"event": 3, "morph": 1, "affirmed": 1}
    assert scores["with_affirmed"]["negated"]["f1"] == 1.0 and scores["with_affirmed"]["uncertain"]["f1"] == 1.0


@pytest.mark.parametrize(
    ("ann", "message"),
    [
        ("T1\tDISO 0 2\tXX\n", "do not quote its text"),
        ("T1\tDISO 0 x\tNo\n", "bad offsets"),
        ("T1\tDISO 0 999\tNo\n", "outside the text"),
        ("T1\tDISO 0 2\tNo\nR1\tScope Arg1:T1\n", "Arg1:ID Arg2:ID"),
        ("T1\tDISO 0 2\tNo\nX1\tsomething\n", "not a BRAT standoff line"),
    ],
)
def test_a_bad_ann_file_is_named_with_its_line(tmp_path, ann, message):
    from icdcoder.assertion.nubes import read_brat

    folder = _tiny(tmp_path, ann)
    with pytest.raises(InputError, match=message) as err:
        read_brat(folder / "doc.ann")
    assert "doc.ann:" in str(err.value)


def test_scores_on_the_real_nubes_held_out_samples():
    if not (NUBES_DIR / "SAMPLE-006").is_dir():
        pytest.skip(f"NUBes not found at {NUBES_DIR} (set ICDCODER_NUBES_DIR)")
    from icdcoder.assertion.nubes import load_nubes, score_documents

    scores = score_documents(load_nubes([NUBES_DIR / "SAMPLE-006", NUBES_DIR / "SAMPLE-007"]))
    assert scores["events"]["negated"]["f1"] >= 0.92, scores["events"]
    assert scores["events"]["uncertain"]["f1"] >= 0.80, scores["events"]
    assert scores["with_affirmed"]["negated"]["f1"] >= 0.90, scores["with_affirmed"]
