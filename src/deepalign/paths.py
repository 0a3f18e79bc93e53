"""Where deepalign keeps its caches: ``$DEEPALIGN_CACHE`` or ``~/.cache/deepalign``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of deepalign's caches (``$DEEPALIGN_CACHE`` or ``~/.cache/deepalign``)."""
    return Path(os.environ.get("DEEPALIGN_CACHE", Path.home() / ".cache" / "deepalign"))


def organism_dir() -> Path:
    """The built-in model organism (``organism-base``, ``-aligned``, ``-deep`` and their data)."""
    return cache_dir() / "organism"


def models_dir() -> Path:
    """Built-in models converted once into plain folders (e.g. SmolLM2 from its GGUF file)."""
    return cache_dir() / "models"


def reference_dir() -> Path:
    """Cached reference log-probs of the constrained objective (one safetensors file per model and data)."""
    return cache_dir() / "reference"
