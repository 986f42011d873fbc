"""``icdcoder train grpo`` / ``train phi`` end to end on configs/rl/smoke.yaml with the tiny model and made-up notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icdcoder.cli import app
from icdcoder.data.schema import Document, Evidence, GoldCode, save_documents

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "rl" / "smoke.yaml"

NOTES = [
    (
        "n1",
        "Paciente de 60 años con diabetes mellitus tipo 2. Refiere dolor toracico. Se realiza radiografia de torax.",
        [("E11.9", "icd10cm", "diabetes mellitus tipo 2"), ("R07.9", "icd10cm", "dolor toracico")],
    ),
    (
        "n2",
        "Mujer con hipertension arterial conocida. Presenta neumonia en lobulo inferior derecho.",
        [("I10", "icd10cm", "hipertension arterial"), ("J18.9", "icd10cm", "neumonia")],
    ),
    (
        "n3",
        "Varon con insuficiencia renal cronica. Antecedente de diabetes mellitus tipo 2. Sin otros hallazgos.",
        [("N18.9", "icd10cm", "insuficiencia renal cronica"), ("E11.9", "icd10cm", "diabetes mellitus tipo 2")],
    ),
    (
        "n4",
        "Se diagnostica anemia ferropenica. Tratamiento con hierro oral. Control en un mes.",
        [("D50.9", "icd10cm", "anemia ferropenica")],
    ),
]


def made_up_documents() -> list[Document]:
    documents = []
    for doc_id, text, codes in NOTES:
        golds = []
        for code, system, quote in codes:
            start = text.index(quote)
            golds.append(
                GoldCode(code=code, system=system, evidence=(Evidence(pieces=((start, start + len(quote)),)),))
            )
        documents.append(
            Document(id=doc_id, text=text, language="es", codes=tuple(golds), source="made-up", split="train")
        )
    return documents


@pytest.fixture(scope="module")
def documents_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rl_docs") / "docs.jsonl"
    save_documents(path, made_up_documents())
    return path


def run_cli(command: str, output_dir: Path, init: str, documents: Path, *extra: str) -> dict:
    args = [
        "train",
        command,
        "--config",
        str(SMOKE),
        "--set",
        f"init={init}",
        "--set",
        f"data.documents_jsonl={documents}",
        "--set",
        f"output_dir={output_dir}",
        *extra,
    ]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_grpo_smoke_trains_logs_and_writes_a_coder_folder(tmp_path, tiny_lm_dir, documents_jsonl):
    out = tmp_path / "grpo"
    summary = run_cli("grpo", out, str(tiny_lm_dir), documents_jsonl)
    assert summary["steps"] == 2 and summary["prompts"] > 0
    assert (out / "model" / "adapter_config.json").is_file()
    assert (out / "retriever").is_dir() and (out / "coder.json").is_file()
    adapter = json.loads((out / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_lm_dir)
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [entry for entry in logged if "reward" in entry]
    assert len(steps) == 2
    for name in ("f1", "format", "validity", "grounding", "length"):
        assert f"rewards/{name}/mean" in steps[0]
    assert "set_f1" in steps[0] and "zero_advantage_share" in steps[0]
    meta = json.loads((out / "run_meta.json").read_text())
    assert meta["steps"] == 2 and "rewards" in meta

    from icdcoder.infer.coder import SpanPredictor

    coder = SpanPredictor.load(out)
    assert coder.model is not None and coder.retriever is not None


def test_grpo_resume_continues_from_the_last_checkpoint(tmp_path, tiny_lm_dir, documents_jsonl):
    out = tmp_path / "grpo"
    run_cli("grpo", out, str(tiny_lm_dir), documents_jsonl, "--set", "max_steps=1")
    assert (out / "checkpoints" / "checkpoint-1").is_dir()
    summary = run_cli("grpo", out, str(tiny_lm_dir), documents_jsonl, "--set", "max_steps=2", "--resume")
    assert summary["steps"] == 2
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged if "reward" in entry] == [1, 2]


def test_grpo_continues_an_sft_coder_adapter_with_a_ref_copy(tmp_path, tiny_lm_dir, documents_jsonl):
    first = tmp_path / "first"
    run_cli("grpo", first, str(tiny_lm_dir), documents_jsonl, "--set", "max_steps=1")
    (first / "lexicon").mkdir()
    (first / "lexicon" / "surface_forms.json.gz").write_bytes(b"the SFT coder's lexicon")
    second = tmp_path / "second"
    summary = run_cli("grpo", second, str(first), documents_jsonl, "--set", "max_steps=1", "--set", "beta=0.1")
    assert summary["steps"] == 1
    adapter = json.loads((second / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_lm_dir)  # loadable anywhere, not the ref copy
    assert not (second / "model" / "ref").exists()
    assert (
        second / "lexicon" / "surface_forms.json.gz"
    ).read_bytes() == b"the SFT coder's lexicon"  # travels with the coder
    assert any("kl" in entry for entry in map(json.loads, (second / "train_log.jsonl").read_text().splitlines()))


def test_bad_config_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {SMOKE}\nnum_generations: 3\n")
    result = CliRunner().invoke(app, ["train", "grpo", "--config", str(bad)])
    assert result.exit_code != 0


def test_phi_smoke_writes_a_hint_pool_per_round_and_resumes(tmp_path, tiny_lm_dir, documents_jsonl):
    out = tmp_path / "phi"
    summary = run_cli("phi", out, str(tiny_lm_dir), documents_jsonl)
    assert summary["rounds"] == 2 and summary["steps"] == 2
    pools = []
    for round_index in range(2):
        round_dir = out / f"round_{round_index}"
        records = [json.loads(line) for line in (round_dir / "hint_pool.jsonl").read_text().splitlines()]
        assert records and all(set(r["hints"]) <= set(r["missed"]) for r in records)
        # hint_probability 1.0: every example with missed codes gets 1-5 hints
        assert all(1 <= len(r["hints"]) <= 5 for r in records if r["missed"])
        assert all(set(r["missed"]) == set(r["gold"]) - set(r["predicted"]) for r in records)
        assert "text" not in records[0]  # ids and codes only, no clinical text
        done = json.loads((round_dir / "done.json").read_text())
        assert done["steps"] == 1 and done["hinted_prompts"] > 0
        assert (round_dir / "model" / "adapter_config.json").is_file()
        pools.append((round_dir / "hint_pool.jsonl").stat().st_mtime_ns)
    assert (out / "coder.json").is_file() and (out / "model" / "adapter_config.json").is_file()
    resumed = run_cli("phi", out, str(tiny_lm_dir), documents_jsonl, "--resume")
    assert resumed["steps"] == 2
    assert [(out / f"round_{i}" / "hint_pool.jsonl").stat().st_mtime_ns for i in range(2)] == pools


def test_phi_rounds_can_continue_one_optimisation(tmp_path, tiny_lm_dir, documents_jsonl):
    out = tmp_path / "phi"
    run_cli(
        "phi",
        out,
        str(tiny_lm_dir),
        documents_jsonl,
        "--set",
        "phi.continue_optimizer=true",
        "--set",
        "phi.steps_per_round=2",
        "--set",
        "save_steps=2",
    )
    import torch

    rates = []
    for round_index in range(2):
        round_dir = out / f"round_{round_index}"
        logged = [json.loads(line) for line in (round_dir / "train_log.jsonl").read_text().splitlines()]
        rates += [entry["learning_rate"] for entry in logged if "reward" in entry]
        done = json.loads((round_dir / "done.json").read_text())
        assert done["carried_optimizer_state"] == (round_index == 1)
    # one linear decay over both rounds (1e-3 over 4 steps), not two decays restarting at 1e-3
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == 4 and rates[0] <= 1e-3
    assert rates[2] < 0.5e-3 + 1e-9
    # round 1's AdamW counted round 0's steps too
    steps = {
        float(state["step"])
        for state in torch.load(out / "round_1" / "optimizer.pt", weights_only=True)["state"].values()
    }
    assert steps == {4.0}


def test_phi_rounds_can_anchor_their_kl_to_the_starting_checkpoint(tmp_path, tiny_lm_dir, documents_jsonl):
    sft = tmp_path / "sft"
    run_cli("grpo", sft, str(tiny_lm_dir), documents_jsonl, "--set", "max_steps=1")
    out = tmp_path / "phi"
    run_cli("phi", out, str(sft), documents_jsonl, "--set", "beta=0.1", "--set", "phi.kl_reference=init")
    references = [json.loads((out / f"round_{r}" / "done.json").read_text())["kl_reference"] for r in range(2)]
    assert references == ["round start", str(sft / "model")]

    # a later round's policy as TRL sets it up: its own (moved) adapter, plus a frozen "ref" copy of it
    import torch
    from peft import PeftModel, load_peft_weights

    from icdcoder.models.loading import load_causal_lm
    from icdcoder.rl.grpo import StartingPoint, anchor_reference

    base, _ = load_causal_lm(str(tiny_lm_dir))
    policy = PeftModel.from_pretrained(base, str(out / "round_0" / "model"), is_trainable=True)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if ".default." in name:
                param.add_(0.01)
    policy.add_adapter("ref", policy.peft_config["default"])
    anchor_reference(policy, StartingPoint.from_init(str(sft)))
    params = dict(policy.named_parameters())
    saved = load_peft_weights(str(sft / "model"), device="cpu")
    assert saved
    for name, value in saved.items():
        ref_name = name.removesuffix(".weight") + ".ref.weight"
        assert params[ref_name].detach().equal(value)
        assert not params[ref_name.replace(".ref.", ".default.")].detach().equal(value)

    anchor_reference(policy, StartingPoint(str(tiny_lm_dir)))  # a bare backbone: TRL's no-"ref" path
    assert "ref" not in policy.peft_config
