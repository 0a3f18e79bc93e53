"""``deepalign kl``: load both models and the pairs, profile KL(aligned || base) per response position,
and write the profile, its figure and summary."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from deepalign.data import load_pairs
from deepalign.depth.kl import KLConfig, KLProfile, build_items, kl_profile
from deepalign.io import atomic_write_json, atomic_write_jsonl
from deepalign.meta import write_run_metadata
from deepalign.pipeline.builtins import load_model
from deepalign.report.figures import plot_kl_profiles


def run_kl(
    aligned: str,
    base: str,
    data: str,
    out_dir: str | Path,
    config: KLConfig = KLConfig(),
    *,
    limit: int | None = None,
    device: str = "cpu",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    progress: bool = True,
) -> KLProfile:
    """Load both models (folders, hub ids or built-in names) and the pairs, profile, and write
    ``kl_profile.jsonl``, ``kl_profile.png``, ``summary.json`` and ``meta.json`` into ``out_dir`` (each
    written atomically). Returns the profile."""
    pairs = load_pairs(data, limit=limit)
    a_model, a_tok = load_model(aligned, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    b_model, b_tok = load_model(base, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    items = build_items(a_tok, b_tok, pairs, config)
    profile = kl_profile(a_model, b_model, items, config, pad_id=a_tok.pad_token_id, progress=progress)
    out = Path(out_dir)
    atomic_write_jsonl(out / "kl_profile.jsonl", profile.rows())
    label = f"{Path(aligned).name} vs {Path(base).name}"
    plot_kl_profiles({label: profile}, out / "kl_profile.png", max_positions=config.max_positions)
    atomic_write_json(out / "summary.json", {"n_pairs": len(items), **profile.summary()})
    write_run_metadata(
        out, command="kl", aligned=aligned, base=base, data=data, limit=limit, config=asdict(config),
        dtype=dtype, trust_remote_code=trust_remote_code,
    )
    return profile
