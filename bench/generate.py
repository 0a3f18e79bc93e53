"""Benchmark: batched greedy generation against one prompt at a time (or a smaller batch), same prompts, one run.

Prints tokens/s for both (generated tokens, EOS included, over wall time), their ratio (target >= 4 against one
at a time) and how many responses agree token for token between the two modes. On 2 CPU cores the
one-at-a-time half takes minutes (batch 1 is bound by reading the float32 weights every step).

    python bench/generate.py                       # 32 prompts, 48 new tokens, batch 32, SmolLM2-135M
    python bench/generate.py --n 16 --max-new-tokens 32 --batch-size 8
    python bench/generate.py --n 128 --max-new-tokens 64 --batch-size 64 --against 16   # the hf default, old and new
"""

from __future__ import annotations

import argparse
import os

import torch
from _common import median_time, print_table

from deepalign.chat import encode_prompt
from deepalign.generation import GenerationRequest, SamplingConfig, generate
from deepalign.pipeline.builtins import load_model

SUBJECTS = (
    "the weather in spring", "a quiet morning by the sea", "baking bread at home", "a walk in the forest",
    "learning to play the piano", "a visit to a small museum", "growing tomatoes on a balcony",
    "a train journey through the hills", "the first snow of winter", "a friendly neighbourhood cat",
    "keeping a tidy desk", "a picnic in the park", "watching the stars at night", "a rainy afternoon",
    "making a cup of tea", "a library on a Sunday", "planting an apple tree", "a bicycle ride along a river",
)
FORMS = ("Write a short note about {}.", "Describe {} in three sentences.", "Give two tips for enjoying {}.")


def make_prompts(n: int) -> list[str]:
    return [FORMS[i % len(FORMS)].format(SUBJECTS[i % len(SUBJECTS)]) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=32, help="number of prompts")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per mode (median reported)")
    ap.add_argument("--against", type=int, default=1, help="batch size of the second mode (default: one at a time)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model, tok = load_model(args.model)
    requests = [GenerationRequest(f"b{i}", encode_prompt(tok, p)) for i, p in enumerate(make_prompts(args.n))]
    cfg = SamplingConfig.greedy(args.max_new_tokens)

    def run(batch_size: int):
        return generate(model, tok, requests, cfg, batch_size=batch_size, progress=False)

    generate(model, tok, requests[:2], SamplingConfig.greedy(4), batch_size=2, progress=False)  # warm-up
    batched, t_batched = median_time(lambda: run(args.batch_size), args.repeats)
    single, t_single = median_time(lambda: run(args.against), args.repeats)
    n_batched = sum(len(g.token_ids) for g in batched)
    n_single = sum(len(g.token_ids) for g in single)
    agree = sum(b.token_ids == s.token_ids for b, s in zip(batched, single, strict=True))
    print(
        f"model={args.model} prompts={args.n} max_new_tokens={args.max_new_tokens} batch={args.batch_size} "
        f"threads={torch.get_num_threads()} dtype={model.dtype}"
    )
    print_table(
        ["mode", "seconds", "tokens", "tokens/s"],
        [
            [f"batched ({args.batch_size})", t_batched, n_batched, n_batched / t_batched],
            ["one at a time" if args.against == 1 else f"batched ({args.against})", t_single, n_single,
             n_single / t_single],
        ],
    )
    print(f"identical responses: {agree}/{args.n}")
    other = "one-at-a-time" if args.against == 1 else f"batch {args.against}"
    target = "   (target >= 4)" if args.against == 1 else ""
    print(f"batch {args.batch_size} / {other} tokens/s = {(n_batched / t_batched) / (n_single / t_single):.2f}{target}")


if __name__ == "__main__":
    main()
