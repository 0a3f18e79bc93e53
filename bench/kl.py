"""Benchmark: KL depth profile against two bare batched forward passes and against a per-example loop.

Prints, measured in one run on the same pairs and batches:
  profile / bare   = KL profile wall time / time of the two bare batched forward passes (target <= 1.15)
  loop / profile   = naive one-example-at-a-time KL loop (full logits, full log-softmax) / KL profile
                     (target >= 4)
  batch-1 profile / profile = the same profile code run with batch size 1 / the profile (no target: the
                     part of the gain that comes from batching alone)

    python bench/kl.py                         # 64 SmolLM2-135M-Instruct pairs, batch 8
    python bench/kl.py --n 64 --batch-size 16 --short   # many short pairs (one-sentence answers)
    python bench/kl.py --n 16 --model organism-aligned --base organism-base
"""

from __future__ import annotations

import argparse
import os
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from _common import timed

from deepalign.chat import pad_batch
from deepalign.data import BENIGN_PROMPTS
from deepalign.depth.kl import KLConfig, build_items, kl_profile
from deepalign.pipeline.builtins import load_model

SENTENCES = (
    "The morning was calm and the river moved slowly past the old stone bridge.",
    "Fresh bread, a bowl of soup and a glass of water made a simple lunch.",
    "She wrote three short notes, folded them neatly and placed them on the desk.",
    "Light rain fell over the garden while the tomatoes ripened on the vine.",
    "The train left on time and arrived at the coast shortly after noon.",
)


def make_pairs(n: int, short: bool = False) -> list[SimpleNamespace]:
    """``n`` neutral pairs; answers of 2-4 sentences (~30-60 tokens), or one sentence with ``short``."""
    prompts = [p for group in BENIGN_PROMPTS.values() for p in group]
    pairs = []
    for i in range(n):
        n_sentences = 1 if short else 2 + i % 3
        answer = " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(n_sentences))
        pairs.append(SimpleNamespace(prompt=prompts[i % len(prompts)], response=answer))
    return pairs


def bare_forward(aligned, base, items, order, batch_size, pad_id, device="cpu") -> None:
    """Two plain batched forwards (full logits) over the same batches as the profile."""
    for start in range(0, len(order), batch_size):
        batch = [items[i] for i in order[start : start + batch_size]]
        for model, prompts in ((aligned, [b.aligned_prompt for b in batch]), (base, [b.base_prompt for b in batch])):
            ids, mask = pad_batch([p + b.response for p, b in zip(prompts, batch, strict=True)], pad_id)
            model(input_ids=ids.to(device), attention_mask=mask.to(device))


def per_example_loop(aligned, base, items, device="cpu") -> None:
    """The naive baseline: one example at a time, full logits, full float32 log-softmax."""
    for it in items:
        ids_a = torch.tensor([it.aligned_prompt + it.response], device=device)
        ids_b = torch.tensor([it.base_prompt + it.response], device=device)
        la = F.log_softmax(aligned(ids_a).logits[0].float(), -1)
        lb = F.log_softmax(base(ids_b).logits[0].float(), -1)
        pa, pb = len(it.aligned_prompt) - 1, len(it.base_prompt) - 1
        t = len(it.response)
        (la[pa : pa + t].exp() * (la[pa : pa + t] - lb[pb : pb + t])).sum(-1).cpu()


def seconds(fn) -> float:
    """Wall time of ``fn()`` under inference mode."""
    return timed(fn, inference=True)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--base", default=None, help="base model (default: a second copy of --model)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--short", action="store_true", help="one-sentence answers (~15 tokens)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    aligned, tok = load_model(args.model)
    base, _ = load_model(args.base or args.model)
    config = KLConfig(batch_size=args.batch_size, base_template="same")
    items = build_items(tok, tok, make_pairs(args.n, args.short), config)
    order = sorted(range(len(items)), key=lambda i: (len(items[i].aligned_prompt) + len(items[i].response), i))
    pad = tok.pad_token_id
    n_tokens = sum(len(it.aligned_prompt) + len(it.response) for it in items)
    seconds(lambda: bare_forward(aligned, base, items, order[: args.batch_size], args.batch_size, pad))  # warm-up
    t_bare = seconds(lambda: bare_forward(aligned, base, items, order, args.batch_size, pad))
    t_profile = seconds(lambda: kl_profile(aligned, base, items, config, pad_id=pad, progress=False))
    t_loop = seconds(lambda: per_example_loop(aligned, base, items))
    one = KLConfig(batch_size=1, base_template="same")
    t_one = seconds(lambda: kl_profile(aligned, base, items, one, pad_id=pad, progress=False))
    print(f"model={args.model} pairs={len(items)} tokens/model={n_tokens} batch={args.batch_size} "
          f"short={args.short} threads={torch.get_num_threads()}")
    print(f"{'measure':<34}{'seconds':>10}")
    print(f"{'two bare batched forwards':<34}{t_bare:>10.2f}")
    print(f"{'KL profile (deepalign)':<34}{t_profile:>10.2f}")
    print(f"{'per-example loop (naive)':<34}{t_loop:>10.2f}")
    print(f"{'KL profile with batch size 1':<34}{t_one:>10.2f}")
    print(f"profile / bare   = {t_profile / t_bare:.3f}   (target <= 1.15)")
    print(f"loop / profile   = {t_loop / t_profile:.2f}   (target >= 4)")
    print(f"batch-1 profile / profile = {t_one / t_profile:.2f}")


if __name__ == "__main__":
    main()
