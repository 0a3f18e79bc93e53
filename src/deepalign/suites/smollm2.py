"""The SmolLM2 suite: the paper's pipeline in real language, on SmolLM2-135M-Instruct and 2 CPU cores.

SmolLM2-135M-Instruct is helpful-only (it answers harmful requests), so it plays the paper's *base*.
``aligned`` is made from it by standard SFT on refusals: AdvBench and HarmBench prompts read from the
installed packages, refusal texts we wrote, and benign anchors = the base's own answers to benign
prompts we wrote. ``deep`` is ``aligned`` after safety-recovery augmentation, whose harmful answers are
the base's own generations. Both are trained as LoRA adapters and merged into full model folders (so
every later stage loads them like any model). Harmful text lives only in the run folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from deepalign.data.texts import REFUSAL_PREFIXES
from deepalign.reproduce import RunContext, Stage
from deepalign.suites import Suite

BASE = "smollm2-135m-instruct"
N_TRAIN, N_EVAL, N_FINETUNE = 64, 32, 32  # harmful prompts: alignment/augmentation, evaluation, attack data
N_BENIGN_EVAL = 12
ANSWER_TOKENS = 96


def _prompts(seed: int):
    from deepalign.data import load_prompts
    from deepalign.data.splits import split

    prompts = load_prompts("advbench") + load_prompts("harmbench")
    return split(prompts, [N_TRAIN, N_EVAL, N_FINETUNE], seed=seed)[:3]


def prepare_data(ctx: RunContext) -> dict:
    """The base's greedy answers to harmful and benign prompts, split into the suite's data files."""
    from deepalign.chat import encode_prompt
    from deepalign.data import PairRecord, TripletRecord
    from deepalign.data.splits import split
    from deepalign.data.texts import benign_prompts
    from deepalign.generation import GenerationRequest, SamplingConfig, generate
    from deepalign.models import load_model
    from deepalign.results import ResultsWriter, atomic_write_jsonl
    from deepalign.train.augment import fallback_refusal

    train, evaluation, finetune = _prompts(ctx.seed)
    benign_train, benign_eval = split(benign_prompts(), [len(benign_prompts()) - N_BENIGN_EVAL], seed=ctx.seed)
    everything = [*train, *evaluation, *finetune, *benign_train, *benign_eval]
    model, tok = load_model(BASE)
    with ResultsWriter(ctx.setup / "base_answers.jsonl") as writer:
        requests = [GenerationRequest(p.id, encode_prompt(tok, p.prompt)) for p in everything]
        generate(model, tok, requests, SamplingConfig.greedy(ANSWER_TOKENS, seed=ctx.seed), progress=ctx.progress,
                 skip={(rid, 0) for rid in writer.done},
                 on_batch=lambda gens: [writer.write({"id": g.id, "response": g.text.strip()}) for g in gens])
        answer = {row["id"]: row["response"] for row in writer.rows()}

    def pairs(records):
        return [PairRecord(p.id, p.prompt, answer[p.id], p.category).__dict__ for p in records]

    triplets = [TripletRecord(p.id, p.prompt, answer[p.id], fallback_refusal(p.id, ctx.seed), p.category).__dict__
                for p in train]
    files = {"eval_pairs": pairs(evaluation), "harmful_ft": pairs(finetune), "train_triplets": triplets,
             "benign": pairs(benign_train), "benign_eval": pairs(benign_eval)}
    for name, rows in files.items():
        atomic_write_jsonl(ctx.setup / f"{name}.jsonl", rows)
    return {name: len(rows) for name, rows in files.items()}


def _lora_args(out: Path, ctx: RunContext, **overrides):
    from deepalign.train.trainer import DeepAlignConfig

    values = dict(output_dir=str(out), objective="sft", use_lora=True, lora_r=16, lora_alpha=32, learning_rate=3e-4,
                  lr_scheduler_type="linear", warmup_steps=3, per_device_train_batch_size=8, num_train_epochs=2,
                  weight_decay=0.0, max_length=256, seed=ctx.seed, disable_tqdm=not ctx.progress, report_to="none",
                  save_strategy="no")
    return DeepAlignConfig(**{**values, **overrides})


def _merge(adapter: Path, out: Path) -> None:
    """Merge a trained LoRA adapter into its base and save a plain model folder at ``out`` (atomically)."""
    from deepalign.models import load_model

    model, tok = load_model(str(adapter))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.merge_and_unload().save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.copy(adapter / "training_log.jsonl", tmp / "training_log.jsonl")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)


def _train_merged(ctx: RunContext, label: str, start: str, data, anchors, **overrides) -> dict:
    from deepalign.results import read_jsonl
    from deepalign.train.trainer import train

    adapter = ctx.setup / f"{label}.adapter"
    train(start, data, _lora_args(adapter, ctx, **overrides), anchors=anchors, out_dir=adapter)
    _merge(adapter, ctx.setup / label)
    log = [r for r in read_jsonl(ctx.setup / label / "training_log.jsonl") if "loss" in r]
    return {"steps": len(log), "first_loss": log[0]["loss"], "last_loss": log[-1]["loss"]}


def align(ctx: RunContext) -> dict:
    """Standard SFT (LoRA) of the helpful-only base on harmful prompts -> our refusals, plus benign anchors."""
    from deepalign.data import PairRecord, load_pairs, load_triplets

    triplets = load_triplets(str(ctx.setup / "train_triplets.jsonl"))
    refusals = [PairRecord(t.id, t.prompt, t.refusal, t.category) for t in triplets]
    return _train_merged(ctx, "aligned", BASE, refusals + load_pairs(str(ctx.setup / "benign.jsonl")), None)


def deepen(ctx: RunContext) -> dict:
    """Safety-recovery augmentation (LoRA) of ``aligned`` with the base's harmful answers and benign anchors."""
    from deepalign.data import load_pairs, load_triplets

    triplets = load_triplets(str(ctx.setup / "train_triplets.jsonl"))
    anchors = load_pairs(str(ctx.setup / "benign.jsonl"))
    return _train_merged(ctx, "deep", str(ctx.setup / "aligned"), triplets, anchors, per_device_train_batch_size=2,
                         anchors_per_safety=2, num_train_epochs=3)


def judge(ctx: RunContext):
    """The keyword judge; the LLM judge instead when an endpoint is configured in the environment."""
    from deepalign.judges import make_judge

    return make_judge("llm" if os.environ.get("DEEPALIGN_JUDGE_BASE_URL") else "keyword")


def gcg_config(ctx: RunContext, label: str):
    from deepalign.depth.gcg import GCGAttackConfig

    return GCGAttackConfig(steps=10, search_width=32, topk=64, sampling=ctx.sampling(), label=label)


def attack_config(ctx: RunContext):
    from deepalign.train.attacks import AttackConfig

    return AttackConfig(data=str(ctx.setup / "harmful_ft.jsonl"), eval_prompts=str(ctx.setup / "eval_pairs.jsonl"),
                        n_train=N_FINETUNE, n_eval=16, max_new_tokens=ctx.config.max_new_tokens, greedy=True,
                        judge="keyword", seed=ctx.seed)


def attack_training(ctx: RunContext, out):
    from deepalign.train.attacks import paper_training_args

    # the paper's optimizer (AdamW beta1 0.5, warm-up), on LoRA with a LoRA-sized learning rate and 12 steps
    return paper_training_args("harmful", str(out), use_lora=True, learning_rate=2e-4, warmup_steps=2,
                               gradient_accumulation_steps=1, num_train_epochs=3, max_length=256, seed=ctx.seed,
                               disable_tqdm=not ctx.progress)


SUITE = Suite(
    name="smollm2",
    build=(Stage("setup", prepare_data), Stage("aligned", align), Stage("deep", deepen)),
    base_model=BASE,
    judge=judge,
    defaults={"seeds": (0,), "prefill_ks": (0, 5, 10, 20, 40), "repeats": 1, "max_new_tokens": 64},
    description="SmolLM2-135M-Instruct as the helpful-only base, aligned by refusal SFT (LoRA) on AdvBench and "
    "HarmBench prompts, and deepened by safety-recovery augmentation",
    judge_name="keyword judge",
    refusal_prefixes=REFUSAL_PREFIXES,
    eval_limit=16,
    decoding_prompts=8,
    decoding_grid="small",
    decoding_repeats=1,
    gcg_prompts=2,
    gcg_config=gcg_config,
    attack_config=attack_config,
    attack_training=attack_training,
    checkpoints=(0, 6, 12),
)
