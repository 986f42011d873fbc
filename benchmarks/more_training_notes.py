"""How much the coder gains from more training notes: the shipped coder's signals refitted on the training notes plus
four fifths of the dev notes, scored on the dev fifth it did not see (five folds, pooled).

The shipped coder learns its retriever, lexicons, concept counts, value templates, glossary and phrase words from the
500 CodiEsp training notes. A user who codes new notes wants a coder that learned from every coded note there is, the
250 dev notes too; this measures what that is worth before anything is shipped that way. Per dev fold, a coder with the
shipped settings, trees and thresholds has its signals refitted (:func:`icdcoder.train.fusion_trees.fold_coder`, as
``predict fit-trees`` refits its fold coders) on the training notes plus the other dev folds, and codes the held fold;
the 250 dev notes' predictions, each from a coder that never saw that note, are scored together. The reference row has
its signals refitted on the training notes alone by the same function (it reproduces the shipped coder).

Both rows keep the shipped thresholds and trees (tuned and fitted with the training notes alone; the thresholds on dev
itself, which favours the reference row if anything). A second table cross-fits the thresholds as well: each dev fold
decided at the thresholds ``predict tune``'s tuners choose on the other folds' predictions, its X rows the evidence of
the codes so decided (the fold coders give every ranked code its evidence, :func:`every_code_decided`, and each table
then decides). ``unseen recall`` counts
gold diagnoses absent from the training split, as everywhere else, though the second row's coders saw some of them in
the other dev folds. ``--refit-trees`` adds a row whose Spanish trees are refitted per fold too.

Takes ~8 minutes on 2 CPU cores (six signal fits and 1,000 codings), ~35 with ``--refit-trees``.

Run: ``python benchmarks/more_training_notes.py --data-dir ../shared/data/codiesp [--refit-trees] [--out DIR]``
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCHMARK_CODER = REPO / "src" / "icdcoder" / "models" / "benchmark"
SPLITS = ("train", "dev")
DEV_FOLDS = 5
#: the coder's systems, diagnoses first
SYSTEMS = ("icd10cm", "icd10pcs")
#: training folds of a refit of the trees (as ``predict fit-trees`` fits the shipped ones)
TREE_FOLDS = 5


def merged_corpus(data_dir: Path, into: Path) -> Path:
    """A CodiEsp folder whose ``train`` split holds the training and dev notes together (texts linked, tables
    concatenated), so that one split carries every note's English version too."""
    train = into / "train"
    for folder in ("text_files", "text_files_en"):
        (train / folder).mkdir(parents=True)
        for split in SPLITS:
            for text in sorted((data_dir / split / folder).glob("*.txt")):
                (train / folder / text.name).symlink_to(text.resolve())
    for kind in ("D", "P", "X"):
        rows = "".join((data_dir / split / f"{split}{kind}.tsv").read_text(encoding="utf-8") for split in SPLITS)
        (train / f"train{kind}.tsv").write_text(rows, encoding="utf-8")
    return into


def pooled_scores(data_dir: Path, predictions: list, out_dir: Path) -> dict[str, Any]:
    """The official-style scores of the dev notes' pooled predictions (submission written to ``out_dir``)."""
    from icdcoder.evaluate.codiesp import score_submission, write_submission

    out_dir.mkdir(parents=True, exist_ok=True)
    write_submission(out_dir, predictions)
    return score_submission(data_dir, "dev", out_dir)


@dataclass
class CodedDev:
    """The dev notes as one row of the table coded them."""

    #: note language -> every dev note's predictions
    predictions: dict[str, list]
    #: note id -> the dev fold that held it out (every row uses the same folds)
    fold: dict[str, int]
    #: note id -> the (code, system) pairs that the training notes of the note's coder carry
    trained: dict[str, set[tuple[str, str]]]
    #: the settings every row's coders share (``model``'s)
    settings: Any


def coded_dev(model: Path, data_dir: Path, corpus: Path, with_dev: bool, refit_trees: bool = False) -> CodedDev:
    """Per note language (``es``: the Spanish notes with their translation, ``en``: the English versions alone), every
    dev note's predictions by a coder with the settings and trees of ``model`` whose signals were fitted on the
    training notes, plus (``with_dev``) the dev folds other than the note's own (``corpus``: :func:`merged_corpus` of
    ``data_dir``). ``refit_trees``: the Spanish notes' trees refitted too, on those notes coded out of 5 folds as
    ``predict fit-trees`` fits them, and only the Spanish notes coded (the English notes' trees would be ``model``'s,
    so their row would be the one without ``refit_trees``)."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.trees import TrainingCounts
    from icdcoder.train.config import DataSettings
    from icdcoder.train.fusion_trees import fit_tree_fusion, fold_coder, out_of_fold_candidates, split_fold

    coder = SpanPredictor.load(model, check_files=False)
    notes = load_codiesp(corpus, "train", with_translation=True)
    dev_ids = {path.stem for path in (data_dir / "dev" / "text_files").glob("*.txt")}
    train = [note for note in notes if note.id not in dev_ids]
    dev = [note for note in notes if note.id in dev_ids]
    english = {note.id: note for note in load_codiesp(data_dir, "dev", language="en", labelled=False)}
    settings = DataSettings(data_dir=corpus, split="train", lang="es")
    folds = [split_fold(dev, fold, DEV_FOLDS) for fold in range(DEV_FOLDS)]
    fold_of = {note.id: k for k, (held, _) in enumerate(folds) for note in held}
    languages = ("es",) if refit_trees else ("es", "en")
    coded = CodedDev({language: [] for language in languages}, fold_of, {}, coder.settings)
    for held, rest in folds if with_dev else [(dev, [])]:
        fitted = fold_coder(coder, train + rest, settings)
        fitted.settings = every_code_decided(fitted.settings)
        if refit_trees:
            candidates = out_of_fold_candidates(coder, train + rest, settings, TREE_FOLDS)
            counts = TrainingCounts.of(fitted.fitted_retriever)
            fitted.trees["es"] = fit_tree_fusion(candidates, train + rest, coder.settings.for_language("es"), counts)
        versions = {"es": held, "en": [english[note.id] for note in held]}
        for language in languages:
            coded.predictions[language].extend(fitted.predict(versions[language]))
        coded.trained.update(dict.fromkeys((note.id for note in held), fitted.fitted_retriever.trained_codes))
        print(f"{len(held)} dev notes coded", flush=True)
    return coded


def every_code_decided(settings: Any) -> Any:
    """``settings`` at threshold 0 in every language, so that every ranked code comes with its evidence; the tables
    decide afterwards (:func:`decided`)."""
    zero = {system: 0.0 for system in SYSTEMS}
    at_zero = {"threshold": zero, "untrained_threshold": zero}
    by_language = {language: override.model_copy(update=at_zero) for language, override in settings.by_language.items()}
    return settings.model_copy(update={**at_zero, "by_language": by_language})


def decided(prediction: Any, settings: Any, trained: set[tuple[str, str]]) -> Any:
    """``prediction`` (every ranked code decided) with the codes under their threshold in ``settings`` moved to its
    candidates, without evidence, as the coder's own thresholds would have left them (``trained``: the codes the
    training notes of the note's coder carry)."""
    from dataclasses import replace

    from icdcoder.infer.fusion import code_threshold
    from icdcoder.predictor import CodePrediction

    codes, below = [], []
    for code in prediction.codes:
        untrained = (code.code, code.system) not in trained
        if code.score >= code_threshold(settings, code.system, untrained):
            codes.append(code)
        else:
            below.append(CodePrediction(code.code, code.system, code.score))
    return replace(prediction, codes=codes, candidates=[*below, *prediction.candidates])


def row(name: str, language: str, scores: dict[str, Any]) -> str:
    """One table row; English notes have no X F1 (CodiEsp's evidence offsets are in the Spanish notes)."""
    d, p = scores["D"], scores["P"]
    cells = [f"{value:.4f}" for value in (d["map"], d["micro_f1"], d["unseen_recall"], p["map"], p["micro_f1"])]
    cells.append(f"{scores['X']['f1']:.4f}" if language == "es" else "-")
    return f"| {name} | {language} | " + " | ".join(cells) + " |"


def tuning_rankings(
    coded: CodedDev, language: str, system: str, folds: set[int]
) -> dict[str, list[tuple[float, str, bool]]]:
    """Per note of ``folds``: its ranking of ``system`` as ``(score, code, untrained)``, best first (codes lower-cased;
    ``untrained``: no training note of the note's own coder carries the code)."""
    return {
        prediction.doc_id: [
            (code.score, code.code.lower(), (code.code, code.system) not in coded.trained[prediction.doc_id])
            for code in prediction.ranking({system})
        ]
        for prediction in coded.predictions[language]
        if coded.fold[prediction.doc_id] in folds
    }


@dataclass
class FoldRankings:
    """Some dev folds' rankings, per system, in the shape the project's threshold tuners read (``rankings`` and
    ``flagged_rankings`` of :class:`icdcoder.infer.tuning.FusionTable`)."""

    ranked: dict[str, dict[str, list[tuple[float, str, bool]]]]

    def flagged_rankings(self, settings: Any, system: str) -> dict[str, list[tuple[float, str, bool]]]:
        return self.ranked[system]

    def rankings(self, settings: Any, system: str) -> dict[str, list[tuple[float, str]]]:
        return {doc_id: [(score, code) for score, code, _ in items] for doc_id, items in self.ranked[system].items()}


def fold_settings(coded: CodedDev, language: str, fold: int, truth: dict[str, dict[str, set[str]]]) -> Any:
    """The coder's settings with each system's thresholds tuned on the notes of the dev folds other than ``fold``, as
    ``predict tune`` tunes them (:func:`icdcoder.infer.tuning.tuned_thresholds`): the threshold that maximises
    micro-F1, then (for the systems that have one) the untrained codes' own threshold. ``truth``: system -> note id ->
    gold codes, lower-cased."""
    from icdcoder.infer.tuning import tuned_thresholds

    others = set(range(DEV_FOLDS)) - {fold}
    table = FoldRankings({system: tuning_rankings(coded, language, system, others) for system in SYSTEMS})
    gold = {system: {doc_id: truth[system][doc_id] for doc_id in table.ranked[system]} for system in SYSTEMS}
    settings = coded.settings.model_copy(update={"by_language": {}})
    return tuned_thresholds(table, gold, settings, untrained=True)  # type: ignore[arg-type]


def cross_fitted(coded: CodedDev, language: str, gold: dict) -> list:
    """The dev notes' predictions, each fold decided at the thresholds tuned on the other folds
    (:func:`fold_settings`)."""
    truth = {
        system: {
            doc_id: {code.lower() for code, kind in gold.get(doc_id, ()) if kind == system} for doc_id in coded.fold
        }
        for system in SYSTEMS
    }
    settings = {fold: fold_settings(coded, language, fold, truth) for fold in range(DEV_FOLDS)}
    return [
        decided(prediction, settings[coded.fold[prediction.doc_id]], coded.trained[prediction.doc_id])
        for prediction in coded.predictions[language]
    ]


def shipped_decisions(coded: CodedDev, language: str) -> list:
    """The dev notes' predictions decided at the coder's own thresholds for ``language`` notes."""
    settings = coded.settings.for_language(language)
    return [
        decided(prediction, settings, coded.trained[prediction.doc_id]) for prediction in coded.predictions[language]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="CodiEsp folder (official layout)")
    parser.add_argument(
        "--model", type=Path, default=BENCHMARK_CODER, help="coder folder (default: the benchmarked one)"
    )
    parser.add_argument(
        "--refit-trees", action="store_true", help="add a row whose Spanish trees are refitted too (~30 min more)"
    )
    parser.add_argument("--out", type=Path, default=None, help="keep the submissions here (default: a temp folder)")
    args = parser.parse_args()
    from icdcoder.data.codiesp import load_codiesp_labels

    with tempfile.TemporaryDirectory() as scratch:
        corpus = merged_corpus(args.data_dir, Path(scratch) / "corpus")
        out = args.out or Path(scratch) / "submissions"
        lines = [
            "| signals fitted on | notes | D MAP | D micro-F1 | D unseen recall | P MAP | P micro-F1 | X F1 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows = [("train (500 notes)", False, False), ("train + other dev folds (700 notes)", True, False)]
        if args.refit_trees:
            rows.append(("train + other dev folds, Spanish trees refitted", True, True))
        crossed = [
            "| signals fitted on | notes | D micro-F1 | P micro-F1 | X F1 |",
            "|---|---|---|---|---|",
        ]
        gold = load_codiesp_labels(args.data_dir, "dev")
        for name, with_dev, refit_trees in rows:
            coded = coded_dev(args.model, args.data_dir, corpus, with_dev, refit_trees)
            for language in coded.predictions:
                folder = out / f"{'with_dev' if with_dev else 'train'}{'_trees' if refit_trees else ''}_{language}"
                shipped = pooled_scores(args.data_dir, shipped_decisions(coded, language), folder)
                lines.append(row(name, language, shipped))
                print(lines[-1], flush=True)
                scores = pooled_scores(
                    args.data_dir, cross_fitted(coded, language, gold), folder.with_name(folder.name + "_crossed")
                )
                x = f"{scores['X']['f1']:.4f}" if language == "es" else "-"
                crossed.append(
                    f"| {name} | {language} | {scores['D']['micro_f1']:.4f} | {scores['P']['micro_f1']:.4f} | {x} |"
                )
                print(crossed[-1], flush=True)
    print("\n".join(lines))
    print("\nThresholds cross-fitted (each dev fold decided at the thresholds best on the other four):\n")
    print("\n".join(crossed))


if __name__ == "__main__":
    main()
