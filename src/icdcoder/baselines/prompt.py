"""The prompting rung of the ladder: zero/few-shot prompting of any causal LM, no fine-tuning.

Same prompt/answer format as SFT and the span coder (``icdcoder.prompt``): each
segment of a note is a prompt; few-shot prepends ``shots`` training span examples
(prompt + answer); candidates from a retriever fitted on train are optional. A
code's score is the best confidence of an answer line naming it.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from icdcoder.config import StrictModel
from icdcoder.data.schema import Document, Evidence
from icdcoder.errors import InputError
from icdcoder.io import atomic_write, read_text
from icdcoder.ontology.labels import CODER_SYSTEMS
from icdcoder.predictor import CodePrediction, DocumentPrediction, FitReport, Predictor
from icdcoder.prompt import build_prompt, parse_answer

if TYPE_CHECKING:
    from icdcoder.spans.retrieval import CandidateRetriever

SETTINGS_FILE = "prompt.json"


class PromptSettings(StrictModel):
    model: str = "smollm2-135m"
    shots: int = Field(2, ge=0)
    candidates_k: int = Field(0, ge=0)
    segment_max_words: int = Field(30, ge=5)
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(40, ge=4)
    threshold: float = Field(0.0, ge=0.0, le=1.0)
    seed: int = 0


class PromptPredictor(Predictor):
    """Zero/few-shot prompting with the shared format (registry name ``prompt``)."""

    name = "prompt"

    def __init__(self, settings: PromptSettings | None = None):
        self.settings = settings or PromptSettings()
        self.shot_texts: list[str] = []
        self.retriever: CandidateRetriever | None = None
        self._model = None
        self._ontology = None

    def fit(self, train: Sequence[Document], dev: Sequence[Document] | None = None) -> FitReport:
        """No training: pick the few-shot examples and, if asked, fit the candidate retriever."""
        import time

        from icdcoder.spans.examples import build_span_examples, to_prompt_completion

        started = time.time()
        examples = [
            e
            for e in build_span_examples(
                list(train), max_words=self.settings.segment_max_words, negative_ratio=0.0, seed=self.settings.seed
            )
            if e.targets
        ]
        random.Random(self.settings.seed).shuffle(examples)
        shots = sorted(examples[: self.settings.shots * 4], key=lambda e: len(e.text))[: self.settings.shots]
        self.shot_texts = [pair["prompt"] + pair["completion"] for pair in map(to_prompt_completion, shots)]
        if self.settings.candidates_k > 0:
            from icdcoder.train.data import fit_retriever

            self.retriever = fit_retriever(train, self.ontology)
        return FitReport(wall_seconds=time.time() - started, extra={"shots": len(self.shot_texts)})

    @property
    def ontology(self):
        if self._ontology is None:
            from icdcoder.ontology import load_ontology

            self._ontology = load_ontology()
        return self._ontology

    def _generator(self):
        if self._model is None:
            from icdcoder.models.generation import HFGenerator
            from icdcoder.models.loading import load_causal_lm

            model, tokenizer = load_causal_lm(self.settings.model)
            self._model = HFGenerator(
                model, tokenizer, batch_size=self.settings.batch_size, max_new_tokens=self.settings.max_new_tokens
            )
        return self._model

    def _prompt(self, text: str) -> str:
        candidates = (
            self.retriever.retrieve(text, k=self.settings.candidates_k).as_candidates() if self.retriever else ()
        )
        return "".join(shot + "\n\n" for shot in self.shot_texts) + build_prompt(text, candidates)

    def predict(self, documents: Sequence[Document]) -> list[DocumentPrediction]:
        from icdcoder.infer.signals.llm import confidence_by_code
        from icdcoder.spans.segment import segment_note

        jobs = []
        for index, document in enumerate(documents):
            for segment in segment_note(document.text, max_words=self.settings.segment_max_words):
                jobs.append((index, segment.start, segment.text(document.text)))
        generations = self._generator().generate([self._prompt(text) for _, _, text in jobs])
        resolve = lambda code: self.ontology.resolve(code, systems=CODER_SYSTEMS)  # noqa: E731
        best: list[dict] = [{} for _ in documents]
        dropped: list[Counter] = [Counter() for _ in documents]
        for (index, offset, text), generation in zip(jobs, generations):
            # a few-shot model may continue with another "Assign ICD-10 codes" block: keep the first answer only
            answer = generation.text.split("\n\n", 1)[0]
            parsed = parse_answer(answer, text, resolve)
            dropped[index].update(parsed.dropped)
            confidence = confidence_by_code(generation, resolve)
            for item in parsed.items:
                score = confidence.get(item.code, 0.0)
                key = (item.code, item.system)
                if key not in best[index] or score > best[index][key][0]:
                    best[index][key] = (score, Evidence(pieces=((offset + item.start, offset + item.end),)))
        return [
            DocumentPrediction(
                doc_id=document.id,
                codes=[
                    CodePrediction(code, system, round(score, 6), [evidence])
                    for (code, system), (score, evidence) in sorted(found.items(), key=lambda kv: -kv[1][0])
                    if score >= self.settings.threshold
                ],
                dropped=dict(lost),
            )
            for document, found, lost in zip(documents, best, dropped)
        ]

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        record = {"settings": json.loads(self.settings.model_dump_json()), "shots": self.shot_texts}
        with atomic_write(directory / SETTINGS_FILE) as handle:
            json.dump(record, handle, indent=2, ensure_ascii=False)
        if self.retriever is not None:
            self.retriever.save(directory / "retriever")

    @classmethod
    def load(cls, directory: str | Path) -> PromptPredictor:
        from icdcoder.spans.retrieval import CandidateRetriever

        path = Path(directory) / SETTINGS_FILE
        try:
            record = json.loads(read_text(path))
            predictor = cls(PromptSettings.model_validate(record["settings"]))
        except (json.JSONDecodeError, KeyError, ValueError) as err:
            raise InputError(f"malformed prompt settings ({str(err).splitlines()[0]})", path=path) from None
        predictor.shot_texts = list(record.get("shots", []))
        if (Path(directory) / "retriever").is_dir():
            predictor.retriever = CandidateRetriever.load(Path(directory) / "retriever")
        return predictor


__all__ = ["PromptPredictor", "PromptSettings"]
