"""Load a model and its tokenizer: an HF folder, a GGUF file, a hub id, or base + LoRA adapter.

This module knows paths and hub ids only; built-in names (``organism-aligned``, ...) are resolved to
folders by :mod:`deepalign.pipeline.builtins`. Weights load from safetensors only; ``trust_remote_code``
is off unless asked for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from deepalign.errors import DeepAlignError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def check_source(source: str, known: str = "") -> None:
    """Raise DeepAlignError unless ``source`` is an existing model folder or file, or a hub id while online.
    ``known`` names other accepted forms in the message (e.g. built-in names)."""
    path = Path(source)
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise DeepAlignError(f"{source}: not a model folder (no config.json)")
        return
    looks_like_hub_id = source.count("/") == 1 and not source.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise DeepAlignError(
            f"unknown model '{source}': not a folder, {known + ', ' if known else ''}not a hub id (owner/name)"
        )
    if _offline():
        raise DeepAlignError(
            f"model '{source}' is a hub id but HF_HUB_OFFLINE is set: download it first or pass a local folder"
        )


def _adapter_base(adapter: str) -> str | None:
    cfg = Path(adapter) / "adapter_config.json"
    if not cfg.exists():
        raise DeepAlignError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json)")
    return json.loads(cfg.read_text()).get("base_model_name_or_path")


def load_tokenizer(name_or_path: str | Path, *, trust_remote_code: bool = False):
    """The tokenizer of a model (folder, GGUF file or hub id), pad token set."""
    from transformers import AutoTokenizer

    source = str(name_or_path)
    check_source(source)
    kwargs = {"trust_remote_code": trust_remote_code}
    if source.endswith(".gguf"):
        kwargs["gguf_file"] = Path(source).name
        source = str(Path(source).parent)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        raise DeepAlignError(f"cannot load tokenizer from '{name_or_path}': {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str = "auto",
    device: str = "cpu",
    adapter: str | None = None,
    trust_remote_code: bool = False,
):
    """Load ``(model, tokenizer)`` in eval mode.

    Args:
        name_or_path: model folder, ``.gguf`` file, folder of a LoRA adapter (its base is read from
            ``adapter_config.json``), or hub id (online only).
        dtype: "auto" (float32 on CPU, bfloat16 on GPU), "float32", "bfloat16" or "float16".
        device: "cpu", "cuda", "cuda:1", ... or "auto" (accelerate's device map).
        adapter: a LoRA adapter folder applied on top of ``name_or_path`` with PEFT.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    source = str(name_or_path)
    check_source(source)
    if adapter is None and Path(source, "adapter_config.json").exists():
        adapter, source = source, _adapter_base(source) or ""
        check_source(source)
    if dtype == "auto":
        torch_dtype = torch.float32 if device == "cpu" else torch.bfloat16
    elif dtype in DTYPES:
        torch_dtype = DTYPES[dtype]
    else:
        raise DeepAlignError(f"unknown dtype '{dtype}': choose auto, {', '.join(DTYPES)}")
    kwargs = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code, "use_safetensors": True}
    if source.endswith(".gguf"):
        kwargs = {"dtype": torch_dtype, "gguf_file": Path(source).name}
        source = str(Path(source).parent)
    if device == "auto":
        kwargs["device_map"] = "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError, SafetensorError) as e:  # missing/corrupt weights, pickle-only checkpoints
        raise DeepAlignError(f"cannot load model from '{name_or_path}': {str(e).splitlines()[0]}") from None
    if adapter is not None:
        model = _apply_adapter(model, adapter)
    if device != "auto":
        model = model.to(device)
    model.eval()
    tokenizer = load_tokenizer(adapter if _has_tokenizer(adapter) else source, trust_remote_code=trust_remote_code)
    return model, tokenizer


def _has_tokenizer(folder: str | None) -> bool:
    return folder is not None and Path(folder, "tokenizer_config.json").exists()


def _apply_adapter(model, adapter: str):
    from peft import PeftModel

    _adapter_base(adapter)
    try:
        return PeftModel.from_pretrained(model, adapter)
    except (RuntimeError, ValueError, KeyError) as e:
        raise DeepAlignError(
            f"{adapter}: LoRA adapter does not fit this base model: {str(e).splitlines()[0][:200]}"
        ) from None


def use_training_attention(model, device: torch.device | str, choice: str = "auto", *, bf16: bool = False) -> str:
    """Set the attention kernel of a model that will train on ``device`` (under bf16 autocast when ``bf16``) and
    return its name. ``"auto"``: ``"eager"`` on the CPU under bf16 autocast (there the CPU flash-attention
    backward of ``"sdpa"`` dominates a SmolLM2 step on short sequences: bench/train.py --attention --bf16), else
    the model's own kernel; any other value is a transformers ``attn_implementation``."""
    if choice == "auto":
        if torch.device(device).type != "cpu" or not bf16:
            return model.config._attn_implementation
        choice = "eager"
    try:
        model.set_attn_implementation(choice)
    except (ValueError, ImportError) as e:
        reason = str(e).splitlines()[0]
        raise DeepAlignError(f"attention '{choice}' is not available for this model: {reason}") from None
    return choice


def same_vocabulary(tokenizer_a, tokenizer_b) -> bool:
    """True when two tokenizers map every token string to the same id."""
    return tokenizer_a.get_vocab() == tokenizer_b.get_vocab()


def bf16_is_fast() -> bool:
    """Whether bf16 autocast can be faster than float32 here: a CUDA GPU with bf16 support, or a CPU with AMX
    bf16 units (``amx_bf16`` in /proc/cpuinfo). CPUs without them emulate bf16 and run slower than float32. On
    this project's AMX CPU (docs/benchmarks.md) a full-weight SmolLM2 step on 8 x 160 tokens ran 2.0x faster,
    but a LoRA r16 constrained step on 4 x 128 tokens 1.08x slower: small matrices do not pay for the casts."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags
