"""Benchmark: the vllm backend against the hf backend (batched), same prompts and settings, one run.

Greedy generation on SmolLM2-135M-Instruct in float32, prompts as token ids. Prints the engine start-up
time, tokens/s of each backend (generated tokens, EOS included, over wall time; the median of
``--rounds`` alternating rounds), their ratio, and how many responses agree token for token (for a
disagreement: the first differing position). Needs vLLM: run it in the venv of ``make test-vllm``.

    .venv-vllm/bin/python bench/vllm_backend.py                 # 32 prompts, 48 new tokens, hf batch 32
    .venv-vllm/bin/python bench/vllm_backend.py --n 64 --rounds 3

On CPU, vLLM binds its OpenMP threads to all cores but one (kept for its scheduler): on 2 cores that is
one thread, so give the hf half one thread as well (OMP_NUM_THREADS=1) for a like-for-like ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from _common import print_table, timed
from generate import make_prompts

from deepalign.chat import encode_prompt
from deepalign.generation import GenerationRequest, SamplingConfig, generate, load_vllm
from deepalign.pipeline.builtins import load_model, resolve_model_path


def first_difference(a: list[int], b: list[int]) -> int | None:
    """1-based position of the first differing token (or of the shorter one's end); None if equal."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))) + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=32, help="number of prompts")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=32, help="hf batch size (vLLM gets all prompts at once)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating timed rounds per backend (median)")
    ap.add_argument("--enforce-eager", action="store_true", help="vLLM without torch.compile")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = resolve_model_path(args.model)
    model, tok = load_model(path, dtype="float32")
    llm, t_start = timed(lambda: load_vllm(path, dtype="float32", max_model_len=1024,
                                           enforce_eager=args.enforce_eager))
    requests = [GenerationRequest(f"b{i}", encode_prompt(tok, p)) for i, p in enumerate(make_prompts(args.n))]
    cfg = SamplingConfig.greedy(args.max_new_tokens)
    runs = {
        "hf": lambda: generate(model, tok, requests, cfg, batch_size=args.batch_size, progress=False),
        "vllm": lambda: generate(llm, tok, requests, cfg, backend="vllm", progress=False),
    }
    for backend in runs:  # warm-up
        generate(model if backend == "hf" else llm, tok, requests[:2], SamplingConfig.greedy(4), backend=backend,
                 progress=False)
    times: dict[str, list[float]] = {b: [] for b in runs}
    out = {}
    for _ in range(args.rounds):
        for backend, run in runs.items():
            out[backend], seconds = timed(run)
            times[backend].append(seconds)
    tokens = {b: sum(len(g.token_ids) for g in gens) for b, gens in out.items()}
    rate = {b: tokens[b] / statistics.median(times[b]) for b in runs}
    diffs = [d for a, b in zip(out["hf"], out["vllm"], strict=True)
             if (d := first_difference(a.token_ids, b.token_ids)) is not None]
    print(f"model={args.model} prompts={args.n} max_new_tokens={args.max_new_tokens} hf_batch={args.batch_size} "
          f"hf_threads={torch.get_num_threads()} dtype=float32 rounds={args.rounds} "
          f"vllm_compile={'off' if args.enforce_eager else 'on'}")
    print(f"vllm engine start-up: {t_start:.1f} s")
    print_table(["backend", "median seconds", "tokens", "tokens/s"],
                [[b, statistics.median(times[b]), tokens[b], rate[b]] for b in runs])
    print(f"identical responses (token ids): {args.n - len(diffs)}/{args.n}"
          + (f"; first differences at tokens {sorted(diffs)}" if diffs else ""))
    print(f"vllm / hf batched tokens/s = {rate['vllm'] / rate['hf']:.2f}")


if __name__ == "__main__":
    main()
