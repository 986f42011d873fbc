"""``icdcoder predict codiesp`` (code a split, write D/P/X.tsv) and ``icdcoder code`` (code one note).

Without ``--model`` the shipped default coder (``icdcoder/models/default``) is used. Every output carries assertion
traits; ``--profile`` picks what is coded (:mod:`icdcoder.infer.profiles`): ``codiesp`` (every mention, the default of
``predict codiesp``) or ``clinical`` (negated, uncertain, hypothetical and family findings excluded, the default of
``code`` and ``predict jsonl``).
Heavy imports (torch, transformers) happen inside the commands.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from textwrap import shorten
from typing import TYPE_CHECKING, Annotated

import typer

from icdcoder import __version__
from icdcoder.errors import InputError
from icdcoder.io import check_output_dir, check_output_file, output_lock, progress_bar

if TYPE_CHECKING:
    from icdcoder.data.schema import Document, DocumentCheck

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"
#: the languages the coders read
LANGUAGES = ("es", "en")
#: the longest note coded unless --max-note-chars says otherwise: about 40,000 words, several times the longest
#: discharge summaries; a longer input is more likely a wrong file than a note, and would take minutes
MAX_NOTE_CHARS = 250_000
#: evidence spans a row of the `code` table shows (--json lists them all)
TABLE_EVIDENCE = 3
#: notes ``predict codiesp`` codes (and saves) at a time
PREDICT_CHUNK = 32
#: the records ``predict codiesp`` writes beside D/P/X.tsv (the ``predict jsonl`` format; resumable)
PREDICTIONS_FILE = "predictions.jsonl"

predict_app = typer.Typer(no_args_is_help=True, add_completion=False)


@predict_app.callback()
def predict() -> None:
    """Code a dataset split with a saved coder."""


def load_predictor(model: Path | None, system: str):
    """The coder saved in ``model`` (default: the shipped model) under registry name ``system``."""
    from icdcoder.registry import predictor_class

    directory = model_folder(model)
    if not directory.is_dir():
        raise InputError("model folder not found", path=directory)
    return predictor_class(system).load(directory)


def model_folder(model: Path | None) -> Path:
    return Path(model) if model is not None else DEFAULT_MODEL_DIR


def check_language(lang: str) -> None:
    if lang not in LANGUAGES:
        raise InputError(f"--lang must be es or en (got '{lang}')")


def codable(max_chars: int) -> DocumentCheck:
    """What coding needs of a note beyond the schema: a language the coder reads, some text, and at most
    ``max_chars`` characters."""

    def check(document: Document) -> None:
        if document.language not in LANGUAGES:
            raise ValueError(f"field 'language': '{document.language}' is not a language the coder reads (es or en)")
        if not document.text.strip():
            raise ValueError("field 'text': the note is empty")
        if len(document.text) > max_chars:
            raise ValueError(
                f"field 'text': the note has {len(document.text):,} characters, more than the limit of {max_chars:,} "
                "(--max-note-chars)"
            )

    return check


def run_fingerprint(input_digest: str, model: Path | None, system: str, profile: str, **settings) -> dict:
    """What identifies a coding run, so that an interrupted run resumes only under the same input, model, profile,
    assertion and integral-symptom rules and settings (see ``icdcoder.infer.records``)."""
    from icdcoder.assertion import LANGUAGES as ASSERTION_LANGUAGES
    from icdcoder.assertion import rules_version
    from icdcoder.infer.records import folder_digest
    from icdcoder.ontology.symptoms import rules_version as symptom_rules_version

    return {
        "input": input_digest,
        "model": folder_digest(model_folder(model)),
        "system": system,
        "icdcoder": __version__,
        "profile": profile,
        "assertion_rules": {lang: rules_version(lang) for lang in ASSERTION_LANGUAGES},
        "symptom_rules": symptom_rules_version(),
        **settings,
    }


def coding_engine(model: Path | None, system: str, workers: int):
    """Where the batches are coded: this process (None) or a pool of ``workers`` processes, each loading the coder."""
    from icdcoder.infer.parallel import WorkerPool

    return WorkerPool(partial(load_predictor, model, system), workers) if workers > 1 else None


ModelDir = Annotated[Path | None, typer.Option("--model", help="Saved coder folder (default: the shipped model).")]
SystemName = Annotated[str, typer.Option("--system", help="tfidf|dictionary|laat|plm|prompt|span")]
JsonlLanguage = Annotated[str, typer.Option("--lang", help="Language of notes whose record has none (es or en).")]
Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        help="Worker processes, each with its own copy of the coder (about 0.7 GB): up to the CPU cores. The output is "
        "the same as with one, and a run resumes under any number.",
    ),
]
MaxNoteChars = Annotated[
    int, typer.Option("--max-note-chars", min=1, help="Refuse notes longer than this many characters.")
]
Profile = Annotated[
    str,
    typer.Option(
        "--profile",
        help="codiesp (every mention coded, with its assertion traits) or clinical (negated, uncertain, hypothetical and "
        "family findings move to 'excluded', with their reason).",
    ),
]


@predict_app.command("codiesp")
def predict_codiesp(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="CodiEsp folder (official layout).")],
    split: Annotated[str, typer.Option("--split", help="Split to code, e.g. dev.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where D.tsv, P.tsv and X.tsv are written.")],
    lang: Annotated[str, typer.Option("--lang", help="es or en.")] = "es",
    model: ModelDir = None,
    system: SystemName = "span",
    limit: Annotated[int | None, typer.Option("--limit", help="Code only the first N notes (quick checks).")] = None,
    translation: Annotated[
        bool,
        typer.Option(
            "--translation/--no-translation", help="Spanish notes: also read text_files_en when the split has it."
        ),
    ] = True,
    max_note_chars: MaxNoteChars = MAX_NOTE_CHARS,
    profile: Profile = "codiesp",
    workers: Workers = 1,
) -> None:
    """Code every note of a CodiEsp split; prints row counts as JSON.

    Only the notes are read: a split without annotations ('background', or a test split before its gold is out)
    is coded as any other. The notes' records (codes, scores, evidence) go to 'OUT_DIR/predictions.jsonl' as
    'predict jsonl' writes them, a chunk at a time: an interrupted run resumes where it stopped. D/P/X.tsv hold the
    records' 'codes' only (under '--profile clinical', not the excluded ones)."""
    from icdcoder.data.codiesp import load_codiesp, split_dir
    from icdcoder.evaluate.codiesp import write_submission
    from icdcoder.infer.parallel import check_workers
    from icdcoder.infer.profiles import check_profile
    from icdcoder.infer.records import documents_digest, predict_to_jsonl, read_predictions

    check_language(lang)
    check_profile(profile)
    check_workers(workers)
    check_output_dir(out_dir, inputs=[data_dir, split_dir(data_dir, split)])
    documents = load_codiesp(
        data_dir, split, language=lang, with_translation=translation and lang == "es", labelled=False
    )
    if limit is not None:
        documents = documents[:limit]
    _check_split_notes(documents, split_dir(data_dir, split), codable(max_note_chars))
    fingerprint = run_fingerprint(documents_digest(documents), model, system, profile, max_note_chars=max_note_chars)
    records = out_dir / PREDICTIONS_FILE
    with output_lock(out_dir), progress_bar() as bar:
        task = bar.add_task(f"coding {split}", total=len(documents))
        counts = predict_to_jsonl(
            lambda: load_predictor(model, system),
            documents,
            [document.id for document in documents],
            records,
            chunk=PREDICT_CHUNK,
            report=lambda done, _total: bar.update(task, completed=done),
            fingerprint=fingerprint,
            profile=profile,
            engine=coding_engine(model, system, workers),
        )
        predictions = read_predictions(records)
        rows = write_submission(out_dir, predictions)
    dropped = dropped_totals(prediction.dropped for prediction in predictions)
    summary = {"documents": len(documents), "resumed": counts["resumed"], "rows": rows, "dropped": dropped}
    typer.echo(json.dumps({**summary, "out_dir": str(out_dir)}))


def _check_split_notes(documents: list[Document], folder: Path, check: DocumentCheck) -> None:
    """Every note of a split checked before any is coded; a bad one is named by its file."""
    for document in documents:
        try:
            check(document)
        except ValueError as err:
            raise InputError(str(err), path=folder / "text_files" / f"{document.id}.txt") from None


def checked_jsonl_run(
    input_path: Path,
    out: Path,
    lang: str,
    model: Path | None,
    system: str,
    profile: str,
    max_note_chars: int,
    **settings: object,
) -> tuple[dict[str, str], list[str], dict]:
    """Everything a JSONL run checks before it codes (options, output, every record: a bad one fails now, not hours into
    the run): the record defaults, the ids to code and the run's resume fingerprint (``settings`` join it)."""
    from icdcoder.data.schema import document_ids
    from icdcoder.infer.profiles import check_profile
    from icdcoder.infer.records import file_digest

    check_language(lang)
    check_profile(profile)
    check_output_file(out, inputs=[input_path])
    defaults = {"language": lang}
    ids = document_ids(input_path, defaults, codable(max_note_chars))
    fingerprint = run_fingerprint(
        file_digest(input_path), model, system, profile, language=lang, max_note_chars=max_note_chars, **settings
    )
    return defaults, ids, fingerprint


@predict_app.command("jsonl")
def predict_jsonl(
    input_path: Annotated[
        Path, typer.Option("--input", help="Notes in canonical JSONL (id, text; language, translation optional).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Predictions JSONL: one record per note, codes with evidence.")],
    lang: JsonlLanguage = "en",
    model: ModelDir = None,
    system: SystemName = "span",
    chunk: Annotated[int, typer.Option("--chunk", min=1, help="Notes coded (and saved) at a time.")] = 64,
    max_note_chars: MaxNoteChars = MAX_NOTE_CHARS,
    profile: Profile = "clinical",
    workers: Workers = 1,
) -> None:
    """Code every note of a JSONL file (MIMIC, exported CodiEsp, your own notes); an interrupted run resumes.

    Prints counts as JSON."""
    from icdcoder.data.schema import iter_documents
    from icdcoder.infer.parallel import check_workers
    from icdcoder.infer.records import predict_to_jsonl

    check_workers(workers)
    defaults, ids, fingerprint = checked_jsonl_run(input_path, out, lang, model, system, profile, max_note_chars)
    with output_lock(out), progress_bar() as bar:
        task = bar.add_task(f"coding {input_path.name}", total=len(ids))
        counts = predict_to_jsonl(
            lambda: load_predictor(model, system),
            iter_documents(input_path, defaults),
            ids,
            out,
            chunk=chunk,
            report=lambda done, _total: bar.update(task, completed=done),
            fingerprint=fingerprint,
            profile=profile,
            engine=coding_engine(model, system, workers),
        )
    typer.echo(json.dumps({"documents": len(ids), **counts, "out": str(out)}))


@predict_app.command("ray")
def predict_ray(
    input_path: Annotated[
        Path, typer.Option("--input", help="Notes in canonical JSONL (id, text; language, translation optional).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Predictions JSONL: the file predict jsonl writes.")],
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Ray cluster to join ('auto': the one this machine belongs to, or ray://host:10001); "
            "default: a Ray started on this machine.",
        ),
    ] = None,
    actors: Annotated[
        int | None,
        typer.Option(
            "--actors",
            min=1,
            help="Coder actors, each loading the coder once (default: the cluster's CPUs / --cpus-per-actor).",
        ),
    ] = None,
    cpus_per_actor: Annotated[
        float, typer.Option("--cpus-per-actor", min=0.0, help="CPUs Ray reserves per actor.")
    ] = 1.0,
    gpus_per_actor: Annotated[
        float, typer.Option("--gpus-per-actor", min=0.0, help="GPUs Ray reserves per actor (a coder with its LLM on).")
    ] = 0.0,
    shard_notes: Annotated[
        int, typer.Option("--shard-notes", min=1, help="Notes per shard: the unit of work and of resuming.")
    ] = 1000,
    lang: JsonlLanguage = "en",
    model: ModelDir = None,
    system: SystemName = "span",
    chunk: Annotated[int, typer.Option("--chunk", min=1, help="Notes an actor codes at a time.")] = 64,
    max_note_chars: MaxNoteChars = MAX_NOTE_CHARS,
    profile: Profile = "clinical",
) -> None:
    """Code every note of a JSONL file on a Ray cluster (Ray Data, an actor pool of coders); resumes by shard.

    The output is the file 'predict jsonl' writes. Prints counts as JSON."""
    from icdcoder.data.schema import iter_documents
    from icdcoder.infer.ray_engine import ActorPool, predict_on_ray

    defaults, ids, fingerprint = checked_jsonl_run(
        input_path, out, lang, model, system, profile, max_note_chars, shard_notes=shard_notes
    )
    with output_lock(out), progress_bar() as bar:
        task = bar.add_task(f"coding {input_path.name} on Ray", total=len(ids))
        counts = predict_on_ray(
            partial(load_predictor, model, system),
            iter_documents(input_path, defaults),
            ids,
            out,
            fingerprint=fingerprint,
            profile=profile,
            chunk=chunk,
            shard_notes=shard_notes,
            pool=ActorPool(address, actors, cpus_per_actor, gpus_per_actor),
            report=lambda done, _total: bar.update(task, completed=done),
        )
    typer.echo(json.dumps({"documents": len(ids), **counts, "out": str(out)}))


def dropped_totals(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Dropped model-output lines per reason, summed over notes."""
    return dict(sum((Counter(count) for count in counts), Counter()))


@predict_app.command("tune")
def tune(
    model: Annotated[Path, typer.Option("--model", help="Saved span-coder folder; its coder.json is updated.")],
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="CodiEsp folder (official layout).")] = None,
    split: Annotated[str, typer.Option("--split", help="Split to tune on (dev; never test).")] = "dev",
    jsonl: Annotated[
        Path | None,
        typer.Option("--jsonl", help="Tuning notes with gold codes as canonical JSONL, instead of --data-dir/--split."),
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="es or en (JSONL: for notes that name no language).")] = "es",
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Also write D/P/X.tsv with the tuned settings.")
    ] = None,
    cache: Annotated[
        Path | None, typer.Option("--cache", help="JSONL cache of per-segment outputs (resumable).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Tune on the first N notes only.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="torch CPU threads.")] = None,
    llm: Annotated[
        bool | None,
        typer.Option(
            "--llm/--no-llm",
            help="Run the coder's LLM or not (default: its saved use_llm); saved with the tuned weights.",
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype",
            help="The LLM's precision: auto, float32 or bfloat16 (default: its saved dtype); saved with the tuned weights.",
        ),
    ] = None,
    llm_mode: Annotated[
        str | None,
        typer.Option(
            "--llm-mode",
            help="generate (answer lines with quotes) or score (the shown candidates' probabilities, one pass per segment); "
            "default: its saved llm_mode; saved with the tuned weights.",
        ),
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(
            "--objective",
            help="What to maximise: f1+map (micro-F1 + MAP) or f1 (micro-F1); default: the coder's saved tuning_objective.",
        ),
    ] = None,
) -> None:
    """Tune fusion weights and thresholds of a span coder on a split or a JSONL file; prints the result as JSON.

    The LLM runs once per segment (cached); the grid over weights and thresholds
    re-aggregates the cached outputs. Its table is the fusion ablation. For notes the coder fuses by trees
    (``predict fit-trees``), only their thresholds are tuned.
    """
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.settings import INFERENCE_DTYPES, LLM_MODES, TUNING_OBJECTIVES

    if dtype is not None and dtype not in INFERENCE_DTYPES:
        raise InputError(
            f"--dtype must be {', '.join(INFERENCE_DTYPES[:-1])} or {INFERENCE_DTYPES[-1]} (got '{dtype}')"
        )
    if llm_mode is not None and llm_mode not in LLM_MODES:
        raise InputError(f"--llm-mode must be {' or '.join(LLM_MODES)} (got '{llm_mode}')")
    if objective is not None and objective not in TUNING_OBJECTIVES:
        raise InputError(f"--objective must be {' or '.join(TUNING_OBJECTIVES)} (got '{objective}')")
    check_language(lang)
    if out_dir is not None:
        check_output_dir(out_dir)
    import torch

    from icdcoder.evaluate.codiesp import write_submission

    if threads:
        torch.set_num_threads(threads)
    documents = labelled_documents(data_dir, split, jsonl, lang)[:limit]
    coder = SpanPredictor.load(
        model, check_files=False, use_llm=llm, dtype=dtype, llm_mode=llm_mode
    )  # tuning may repair it
    with progress_bar() as bar:
        task = bar.add_task(f"coding {jsonl.name if jsonl else split}", total=len(documents))
        outputs = coder.segment_outputs(documents, progress=lambda n: bar.advance(task, n), cache=cache)
    result = coder.tune(documents, outputs, objective=objective)
    summary = {
        **({"jsonl": str(jsonl)} if jsonl else {"split": split}),
        "documents": len(documents),
        "segments": sum(o.segments for o in outputs),
        "llm_segments": sum(o.llm_segments for o in outputs),
        "dtype": coder.llm_dtype,
        "llm_mode": coder.settings.llm_mode,
        "dropped": dropped_totals(o.dropped for o in outputs),
        "best_settings": result["best_settings"],
        "untrained_threshold": result["untrained_threshold"],
    }
    record = tuning_record(coder.settings, lang)
    if "llm_alone" in result:
        summary["llm_alone"] = result["llm_alone"]
    coder.write_settings(model, extra={record: {**summary, "table": result["table"]}})
    if out_dir is not None:
        write_submission(out_dir, [coder.aggregate(o, lang) for o in outputs])
        summary["out_dir"] = str(out_dir)
    typer.echo(json.dumps(summary))


@predict_app.command("fit-trees")
def fit_trees(
    model: Annotated[
        Path, typer.Option("--model", help="Saved span-coder folder; gets fusion_trees.json (or _LANG.json).")
    ],
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="CodiEsp folder (official layout).")] = None,
    train_jsonl: Annotated[
        Path | None,
        typer.Option("--train-jsonl", help="The coder's training notes as canonical JSONL, instead of --data-dir."),
    ] = None,
    tune_jsonl: Annotated[
        Path | None,
        typer.Option("--tune-jsonl", help="Tuning notes with gold codes as canonical JSONL, instead of --data-dir."),
    ] = None,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Training folds (each note coded by the others').")] = 5,
    tune_split: Annotated[
        str, typer.Option("--tune-split", help="Split the thresholds are tuned on (never test).")
    ] = "dev",
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="JSONL cache of the training notes' out-of-fold candidates (resumable; one per --lang)."
        ),
    ] = None,
    lang: Annotated[
        str | None,
        typer.Option(
            "--lang",
            help="Notes the trees fuse: the coder's training language (default), or 'en' for a Spanish coder's "
            "English notes (CodiEsp's English versions of the training notes are coded; needs --data-dir).",
        ),
    ] = None,
) -> None:
    """Fit the coder's fusion trees on its training notes, each coded out of fold, and tune their thresholds on dev;
    the coder then fuses notes of that language by trees (other languages keep their fusion).

    The training notes must be those the coder was built from (CodiEsp's train split, or --train-jsonl). Takes minutes
    on 2 CPU cores (the training notes are coded once, fold by fold). Prints the tuning as JSON.
    """
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.store import read_coder_record
    from icdcoder.infer.trees import TrainingCounts
    from icdcoder.train.config import DataSettings
    from icdcoder.train.fusion_trees import TREE_PARAMETERS, fit_tree_fusion, out_of_fold_candidates

    if data_dir is None and (train_jsonl is None or tune_jsonl is None):
        raise InputError(
            "give --data-dir (a CodiEsp folder), or --train-jsonl and --tune-jsonl (notes with gold codes)"
        )
    coder = SpanPredictor.load(model, check_files=False)
    training_lang = coder.settings.language
    lang = lang or training_lang
    if lang != training_lang and (data_dir is None or train_jsonl is not None):
        raise InputError(f"--lang {lang} codes the training notes' {lang} versions: give --data-dir (a CodiEsp folder)")
    train = labelled_documents(None if train_jsonl else data_dir, "train", train_jsonl, training_lang)
    versions = (
        {doc.id: doc for doc in labelled_documents(data_dir, "train", None, lang)} if lang != training_lang else None
    )
    dev = labelled_documents(None if tune_jsonl else data_dir, tune_split, tune_jsonl, lang)
    with progress_bar() as bar:
        task = bar.add_task(f"coding training notes out of {folds} folds", total=len(train))
        candidates = out_of_fold_candidates(
            coder,
            train,
            DataSettings(data_dir=data_dir, split="train", lang=training_lang, documents_jsonl=train_jsonl),
            folds,
            cache=cache,
            progress=lambda n: bar.advance(task, n),
            versions=versions,
        )
    labelled = [versions[doc.id] for doc in train] if versions is not None else train
    trees = fit_tree_fusion(
        candidates, labelled, coder.settings.for_language(lang), TrainingCounts.of(coder.fitted_retriever)
    )
    coder.trees[lang] = trees
    coder.settings = coder.settings.fused_by_trees(lang)
    with progress_bar() as bar:
        task = bar.add_task(f"coding {tune_split}", total=len(dev))
        outputs = coder.segment_outputs(dev, progress=lambda n: bar.advance(task, n))
    result = coder.tune(dev, outputs)
    summary = {
        "split": tune_split,
        "documents": len(dev),
        "best_settings": result["best_settings"],
        "untrained_threshold": result["untrained_threshold"],
    }
    name = coder.trees_file_of(lang)
    trees.save(model, name)
    extra: dict[str, object] = {
        tuning_record(coder.settings, lang): {**summary, "table": result["table"]},
        name.removesuffix(".json"): {"training_notes": len(train), "folds": folds, "parameters": TREE_PARAMETERS},
    }
    listed = read_coder_record(model)[0].get("files")
    if isinstance(listed, list) and name not in listed:  # the files a complete folder holds
        extra["files"] = [*listed, name]
    coder.write_settings(model, extra=extra)
    typer.echo(json.dumps(summary))


def tuning_record(settings, lang: str) -> str:
    """The ``coder.json`` record of a tuning for ``lang`` notes: ``tuning`` (the weighted mean's grid, for the training
    language), ``tuning_en`` (another language's), ``tuning_trees`` (the trees' thresholds, which leave the grid's
    record alone)."""
    name = "tuning_trees" if settings.for_language(lang).fusion == "trees" else "tuning"
    return name if lang == settings.language else f"{name}_{lang}"


def labelled_documents(data_dir: Path | None, split: str, jsonl: Path | None, lang: str) -> list:
    """Notes with gold codes (those ``predict tune`` tunes on, those ``predict fit-trees`` fits on): a JSONL file's, or
    a CodiEsp split's (Spanish ones with their translation)."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.data.schema import load_documents

    if jsonl is not None and data_dir is not None:
        raise InputError("give --data-dir (a CodiEsp folder) or --jsonl (notes with gold codes), not both")
    if jsonl is not None:
        documents = load_documents(jsonl, {"language": lang})
        if not any(document.codes for document in documents):
            raise InputError("no note carries gold codes: nothing to tune on", path=jsonl)
        return documents
    if data_dir is None:
        raise InputError("give --data-dir (a CodiEsp folder) or --jsonl (notes with gold codes)")
    return load_codiesp(data_dir, split, language=lang, with_translation=lang == "es")


def read_note(source: str, max_chars: int = MAX_NOTE_CHARS) -> str:
    """The note text from a file path or ``-`` (stdin); empty, undecodable or over-long input is an error."""
    from icdcoder.io import read_text

    if source == "-":
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"not valid UTF-8 (byte {err.start})", path="<stdin>") from None
    else:
        text = read_text(source)
    where = source if source != "-" else "<stdin>"
    if not text.strip():
        raise InputError("the note is empty", path=where)
    if len(text) > max_chars:
        raise InputError(
            f"the note has {len(text):,} characters, more than the limit of {max_chars:,} (--max-note-chars)",
            path=where,
        )
    return text


def _describe(code: str, system: str) -> str:
    from icdcoder.ontology import load_ontology

    ontology = load_ontology()
    return ontology.describe(code, system) if ontology.get(code, system) else ""


def code(
    file: Annotated[str, typer.Argument(help="A plain-text note, or - for stdin.")],
    model: ModelDir = None,
    system: SystemName = "span",
    lang: Annotated[str, typer.Option("--lang", help="es or en.")] = "es",
    translation: Annotated[
        Path | None,
        typer.Option("--translation", help="The note's English translation (plain text), read for English code terms."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    max_note_chars: MaxNoteChars = MAX_NOTE_CHARS,
    profile: Profile = "clinical",
) -> None:
    """Code one note: codes with description, score, assertion and evidence ('--json': the record 'predict jsonl'
    writes, each code with its description); under '--profile clinical' the excluded findings are listed apart."""
    from icdcoder.data.schema import Document
    from icdcoder.infer.profiles import check_profile
    from icdcoder.infer.records import prediction_record

    check_language(lang)
    check_profile(profile)
    text = read_note(file, max_note_chars)
    english = read_note(str(translation), max_note_chars) if translation is not None else ""
    predictor = load_predictor(model, system)
    document = Document(id="note", text=text, language=lang, translation=english)
    record = prediction_record(predictor.predict([document])[0], text, describe=_describe, lang=lang, profile=profile)
    if as_json:
        typer.echo(json.dumps(record, ensure_ascii=False))
        return
    _print_table(record["codes"], f"{len(record['codes'])} codes")
    if record.get("excluded"):
        _print_table(record["excluded"], f"{len(record['excluded'])} excluded (not coded)", column="reason")


def _evidence_cell(row: dict, shown: int = TABLE_EVIDENCE) -> str:
    """The first ``shown`` evidence spans of a row, each with its traits; a translated sentence, cut short, when the
    words are not in the note."""
    if row["evidence"]:
        quoted = [f'{e["start"]}-{e["end"]} "{e["quote"]}"{_traits_cell(e)}' for e in row["evidence"]]
    else:
        quoted = [
            f'{e["start"]}-{e["end"]} sentence "{shorten(e["quote"], 60, placeholder=" ...")}"{_traits_cell(e)}'
            for e in row["sentence_evidence"]
        ]
    more = f" (+{len(quoted) - shown} more)" if len(quoted) > shown else ""
    return "; ".join(quoted[:shown]) + more


def _traits_cell(span: dict) -> str:
    return f" [{', '.join(span['traits'])}]" if span.get("traits") else ""


def _print_table(rows: list[dict], title: str, column: str = "assertion") -> None:
    """Rows of codes, each with its ``column`` (the code's assertion, or why it was excluded)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in ("code", "description", "score", column, "validity", "evidence"):
        table.add_column(name)
    for row in rows:
        table.add_row(
            row["code"],
            row["description"],
            f"{row['score']:.2f}",
            row.get(column, ""),
            _validity_cell(row),
            _evidence_cell(row),
        )
    Console().print(table)


def _validity_cell(row: dict) -> str:
    """Billable or the problem (with the first replacement), then any Excludes1 conflict and integral-symptom flag."""
    validity = row.get("validity") or {}
    if not validity:
        return ""
    parts = ["billable" if validity["billable"] else validity["problem"].replace("_", " ")]
    if not validity["billable"] and validity["replacements"]:
        parts[0] += f" -> {validity['replacements'][0]}"
    if validity["excludes1"]:
        parts.append(f"Excludes1 with {', '.join(validity['excludes1'])}")
    if row.get("integral_to"):
        parts.append(f"integral to {', '.join(row['integral_to'])}")
    return "; ".join(parts)
