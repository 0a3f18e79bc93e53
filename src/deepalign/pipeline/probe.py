"""Building the probe judge (:mod:`deepalign.judges.probe`): the base model's generations, the labelled
examples, the features, the fit, saved into the cache.

The build runs under a file lock in ``$DEEPALIGN_CACHE/judges/probe/<recipe>/``: generations are appended
to a resumable file in a ``.work`` folder beside it, and the finished folder (``probe.safetensors``, no
pickle; ``probe.json``) is renamed into place. Generated text lives only in that cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deepalign.chat import ChatFormat, encode_prompt
from deepalign.generation import GenerationRequest, SamplingConfig, generate
from deepalign.io import ResultsWriter, atomic_write_json, atomic_write_jsonl
from deepalign.judges.probe import PROBE_RECIPE, ProbeRecipe, probe_dir
from deepalign.judges.probe_data import build_examples, generation_jobs
from deepalign.judges.probe_features import FeatureExtractor
from deepalign.judges.probe_fit import select_and_fit
from deepalign.pipeline.builtins import load_model

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_probe(recipe: ProbeRecipe | None = None, progress: bool = True) -> Path:
    """The folder of the probe built by ``recipe`` (default :class:`ProbeRecipe`; built on first use, under a
    file lock)."""
    recipe = recipe or ProbeRecipe()
    folder = probe_dir(recipe)
    if (folder / "probe.json").exists():
        return folder
    with _file_lock(folder.with_name(folder.name + ".lock")):
        if (folder / "probe.json").exists():  # another process built it while we waited
            return folder
        logger.info("building the probe judge into %s (first use; generation takes a while on CPU)", folder)
        build_probe(folder, recipe, progress=progress)
    return folder


def generate_all(recipe: ProbeRecipe, work: Path, progress: bool) -> dict[str, dict]:
    """The base model's generations (:func:`~deepalign.judges.probe_data.generation_jobs`; resumable:
    ``work/generations.jsonl``), keyed by request id."""
    answers, continued = generation_jobs(recipe)
    with ResultsWriter(work / "generations.jsonl") as writer:
        jobs = [(answers, recipe.max_new_tokens), (continued, recipe.continue_tokens)]
        if any(rid not in writer.done for batch, _ in jobs for rid, _, _ in batch):
            model, tok = load_model(recipe.base_model)
            for batch, max_new in jobs:
                todo = [j for j in batch if j[0] not in writer.done]
                if not todo:
                    continue
                info = {rid: (p, pre) for rid, p, pre in todo}
                requests = [GenerationRequest(rid, encode_prompt(tok, p, ChatFormat())
                                              + (tok(pre, add_special_tokens=False)["input_ids"] if pre else []))
                            for rid, p, pre in todo]
                config = SamplingConfig(temperature=recipe.temperature, top_p=recipe.top_p, top_k=50,
                                        max_new_tokens=max_new, seed=recipe.seed)

                def write(gens, info=info):
                    for g in gens:
                        prompt, pre = info[g.id]
                        writer.write({"id": g.id, "prompt": prompt, "prefill": pre, "text": g.text})

                generate(model, tok, requests, config, progress=progress, on_batch=write)
        rows = writer.rows()
    return {r["id"]: r for r in rows}


def build_probe(folder: Path, recipe: ProbeRecipe, progress: bool = True) -> dict[str, Any]:
    """Generate the training data, select (layer, L2) on held-out prompts, refit, save into ``folder``;
    returns ``probe.json``'s content."""
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    work = folder.with_name(folder.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    gens = generate_all(recipe, work, progress)
    t_gen = time.perf_counter() - t0
    examples = build_examples(gens, recipe)
    atomic_write_jsonl(work / "examples.jsonl", examples)
    model, tok = load_model(recipe.base_model)
    extractor = FeatureExtractor(model, tok, recipe.layers, recipe.max_prompt_tokens, recipe.max_response_tokens,
                                 progress=progress)
    raw = extractor([(e["prompt"], e["response"]) for e in examples])
    t_feat = time.perf_counter() - t0 - t_gen
    fit = select_and_fit(raw, examples, recipe.layers, recipe.l2, recipe.holdout, recipe.seed)
    kinds: dict[str, int] = {}
    for e in examples:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in fit.pop("tensors").items()}, str(tmp / "probe.safetensors"))
    meta = {
        "recipe": PROBE_RECIPE, "key": recipe.key(), "settings": asdict(recipe), **fit,
        "n_examples": len(examples), "kinds": kinds,
        "seconds": {"generation": t_gen, "features": t_feat, "total": time.perf_counter() - t0},
    }
    atomic_write_json(tmp / "probe.json", meta)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)
    return meta
