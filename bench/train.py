"""Benchmark: constrained fine-tuning cost against plain SFT, and the reference pass against a bare forward.

Prints, measured in one run on the same examples (LoRA on SmolLM2-135M-Instruct, batch 4 x 128 tokens):
  constrained / stock Trainer sft = median step time, constrained objective with cached reference log-probs
                        (DeepAlignTrainer) / the stock transformers.Trainer's SFT step (its own causal-LM
                        loss) on the same model and batches (target <= 1.05)
  constrained / sft   = the same against DeepAlignTrainer's own SFT step (target <= 1.05)
  reference / forward = reference pass over the data (forward + log-probs of the supervised tokens) /
                        one bare batched forward pass over the same batches (target <= 1.1)
  bf16 / float32      = (--bf16) the constrained step under bf16 autocast / in float32 (< 1: autocast pays;
                        deepalign.models.bf16_is_fast says where the suites turn it on)
  sdpa / training attention = (--attention) the SFT step (and with --bf16 the constrained bf16 step) with
                        PyTorch's sdpa attention / with the attention train() picks
                        (deepalign.models.use_training_attention: eager on a CPU under bf16 autocast)
Step runs alternate between objectives (rounds) so drifting machine load hits both alike.

    python bench/train.py                                 # SmolLM2-135M, LoRA, 4 x 128 tokens
    python bench/train.py --model organism-aligned --seq-len 64 --steps 10   # the tiny organism
    python bench/train.py --bf16                          # also the constrained step under bf16 autocast
    python bench/train.py --attention --bf16 --ragged --batch-size 20 --seq-len 160   # sdpa against eager
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from functools import partial

import torch
from _common import median_time, print_table, timed
from transformers import PrinterCallback, Trainer, TrainerCallback

from deepalign.chat import encode_example, pad_batch
from deepalign.data import BENIGN_PROMPTS
from deepalign.models import bf16_is_fast, use_training_attention
from deepalign.pipeline.builtins import load_model
from deepalign.train.augment import make_example
from deepalign.train.collator import DeepAlignCollator
from deepalign.train.config import DeepAlignConfig
from deepalign.train.reference import compute_reference_logps, weights_fingerprint
from deepalign.train.trainer import DeepAlignTrainer

SENTENCES = (
    "The morning was calm and the river moved slowly past the old stone bridge.",
    "Fresh bread, a bowl of soup and a glass of water made a simple lunch.",
    "She wrote three short notes, folded them neatly and placed them on the desk.",
    "Light rain fell over the garden while the tomatoes ripened on the vine.",
    "The train left on time and arrived at the coast shortly after noon.",
)


def make_examples(tokenizer, n: int, seq_len: int, ragged: bool = False) -> list[dict]:
    """n examples of exactly seq_len tokens (``ragged``: spread from seq_len / 2 to seq_len, so batches are padded,
    as augmented ones are): a benign prompt and a long answer cut to fit."""
    prompts = [p for group in BENIGN_PROMPTS.values() for p in group]
    examples = []
    for i in range(n):
        answer = " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(40))
        enc = encode_example(tokenizer, prompts[i % len(prompts)], answer)
        if len(enc.input_ids) < seq_len:
            raise SystemExit(f"--seq-len {seq_len} is longer than the generated examples")
        length = seq_len // 2 + (i * 37) % (seq_len - seq_len // 2 + 1) if ragged else seq_len
        examples.append(make_example(enc.input_ids, enc.labels, length))
    return examples


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (forward, backward, optimizer), collation excluded; ``sync`` (e.g. a
    CUDA synchronize) is called at both ends so that a step's kernels count in full."""

    def __init__(self, sync=None) -> None:
        self.times: list[float] = []
        self.sync = sync or (lambda: None)

    def on_step_begin(self, args, state, control, **kwargs):
        self.sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.sync()
        self.times.append(time.perf_counter() - self._start)


def make_trainer(kind: str, timer, *, model, tokenizer, examples, out_dir: str, batch_size: int, steps: int,
                 **config):
    """A trainer for ``kind``: "sft" or "constrained" (DeepAlignTrainer) or "stock" (transformers.Trainer, its
    own causal-LM loss); ``steps`` + 1 steps (the first is the warm-up), the step ``timer`` as a callback."""
    cfg = DeepAlignConfig(
        output_dir=out_dir,
        objective="sft" if kind == "stock" else kind,
        per_device_train_batch_size=batch_size,
        max_steps=steps + 1,
        learning_rate=1e-5,
        disable_tqdm=True,
        ref_cache_dir=out_dir,
        dataloader_pin_memory=False,
        logging_steps=10**6,
        report_to="none",
        **config,
    )
    if kind == "stock":  # transformers' own causal-LM loss, no example keys
        collator = DeepAlignCollator(tokenizer.pad_token_id)
        return Trainer(
            model=model,
            args=cfg,
            train_dataset=examples,
            callbacks=[timer],
            data_collator=lambda items: {k: v for k, v in collator(items).items() if k != "example_keys"},
        )
    return DeepAlignTrainer(model, cfg, examples, tokenizer, callbacks=[timer])


def median_step_times(trainers: dict, timers: dict, rounds: int, before=lambda kind: None) -> dict:
    """Median step seconds per trainer over ``rounds`` alternating runs, each run's first (warm-up) step dropped;
    ``before(kind)`` is called before each run."""
    for _ in range(rounds):
        for k, trainer in trainers.items():
            before(k)
            n = len(timers[k].times)
            trainer.train()
            del timers[k].times[n]
    return {k: statistics.median(timers[k].times) for k in trainers}


def reference_and_forward(model, examples: list[dict], batch_size: int, pad_id: int, repeats: int, *,
                          device="cpu", sync=None) -> tuple[float, float]:
    """Mean seconds of (one bare batched forward pass, the reference pass) over ``examples``, timed batch by
    batch and alternating, so that load drifts hit both alike."""
    batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    padded = [pad_batch([e["input_ids"] for e in b], pad_id) for b in batches]

    def bare(ids, mask) -> None:
        model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)

    def reference(batch: list[dict]) -> None:
        compute_reference_logps(model, batch, batch_size=len(batch), pad_id=pad_id, device=device)

    model.eval()
    timed(partial(bare, *padded[0]), sync=sync, inference=True)  # warm-up
    timed(partial(reference, batches[0]), sync=sync, inference=True)
    t_fwd = t_ref = 0.0
    for _ in range(repeats):
        for batch, (ids, mask) in zip(batches, padded, strict=True):
            t_fwd += timed(partial(bare, ids, mask), sync=sync, inference=True)[1]
            t_ref += timed(partial(reference, batch), sync=sync, inference=True)[1]
    return t_fwd / repeats, t_ref / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per example")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--n", type=int, default=32, help="examples (reference pass and training data)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per run (one warm-up step added)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs per objective")
    ap.add_argument("--repeats", type=int, default=3, help="timed reference/forward passes (mean)")
    ap.add_argument("--full", action="store_true", help="train all weights instead of LoRA")
    ap.add_argument("--bf16", action="store_true", help="also time the constrained step under bf16 autocast")
    ap.add_argument("--attention", action="store_true", help="also time the SFT step with sdpa attention")
    ap.add_argument("--ragged", action="store_true", help="examples of seq_len / 2 to seq_len tokens (padded batches)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from peft import LoraConfig, get_peft_model

    model, tok = load_model(args.model)
    examples = make_examples(tok, args.n, args.seq_len, args.ragged)
    t_fwd, t_ref = reference_and_forward(model, examples, args.batch_size, tok.pad_token_id, args.repeats)
    _, t_fp = median_time(lambda: weights_fingerprint(model), 1)

    if not args.full:
        model = get_peft_model(
            model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
        )
    tmp = tempfile.mkdtemp(prefix="deepalign-bench-")
    build = partial(make_trainer, model=model, tokenizer=tok, examples=examples, out_dir=tmp,
                    batch_size=args.batch_size, steps=args.steps)

    kinds = ("sft", "constrained", "stock") + (("constrained-bf16",) if args.bf16 else ()) + (
        ("sft-sdpa",) if args.attention else ()) + (("constrained-bf16-sdpa",) if args.attention and args.bf16 else ())
    timers = {k: StepTimer() for k in kinds}
    trainers = {k: build(k.split("-")[0], timers[k], **({"bf16": True} if "-bf16" in k else {}))
                for k in kinds}  # the constrained ones cache their reference here
    for trainer in trainers.values():
        trainer.remove_callback(PrinterCallback)
    def attention(kind: str) -> None:  # what train() sets for the kind, or sdpa
        args = trainers[kind].args
        use_training_attention(model, args.device, bf16=args.bf16) if not kind.endswith("-sdpa") else \
            model.set_attn_implementation("sdpa")

    step = median_step_times(trainers, timers, args.rounds, before=attention)

    mode = "full" if args.full else "LoRA r=16"
    print(
        f"model={args.model} {mode} batch={args.batch_size} x {'up to ' if args.ragged else ''}{args.seq_len} tokens "
        f"examples={args.n} "
        f"threads={torch.get_num_threads()} dtype={next(model.parameters()).dtype}"
    )
    print_table(
        ["measure", "ms", "samples"],
        [
            ["SFT step (DeepAlignTrainer)", ms(step["sft"]), len(timers["sft"].times)],
            [
                "constrained step (cached reference)",
                ms(step["constrained"]),
                len(timers["constrained"].times),
            ],
            ["SFT step (stock transformers.Trainer)", ms(step["stock"]), len(timers["stock"].times)],
            *([["constrained step, bf16 autocast", ms(step["constrained-bf16"]), len(timers["constrained-bf16"].times)]]
              if args.bf16 else []),
            *([[f"{k} step", ms(step[k]), len(timers[k].times)] for k in kinds if k.endswith("-sdpa")]),
            [f"bare forward over {args.n} examples (mean)", ms(t_fwd), args.repeats],
            [f"reference pass over {args.n} examples (mean)", ms(t_ref), args.repeats],
            ["weights fingerprint (once per cache lookup)", ms(t_fp), 1],
        ],
    )
    print(f"constrained / stock Trainer sft step = {step['constrained'] / step['stock']:.3f}   (target <= 1.05)")
    print(f"constrained / sft step       = {step['constrained'] / step['sft']:.3f}   (target <= 1.05)")
    print(f"sft (ours) / stock Trainer   = {step['sft'] / step['stock']:.3f}")
    if args.bf16:
        print(f"constrained bf16 autocast / float32 step = {step['constrained-bf16'] / step['constrained']:.3f}"
              f"   (bf16_is_fast() = {bf16_is_fast()})")
    for k in (k for k in kinds if k.endswith("-sdpa")):
        kind = k.removesuffix("-sdpa")
        print(f"{kind} step: sdpa / training attention = {step[k] / step[kind]:.3f}   (> 1: train()'s choice pays)")
    print(f"reference pass / forward     = {t_ref / t_fwd:.3f}   (target <= 1.1)")


if __name__ == "__main__":
    main()
