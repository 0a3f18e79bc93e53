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

from deepalign.chat import encode_prompt
from deepalign.data import PairRecord, TripletRecord, load_pairs, load_prompts, load_triplets
from deepalign.data.splits import split
from deepalign.data.texts import REFUSAL_PREFIXES, benign_prompts
from deepalign.depth.gcg import GCGAttackConfig
from deepalign.generation import GenerationRequest, SamplingConfig, generate
from deepalign.io import ResultsWriter, atomic_write_jsonl, read_jsonl
from deepalign.judges.registry import make_judge
from deepalign.pipeline.builtins import load_model, resolve_model_path
from deepalign.pipeline.finetune import FinetuneAttackConfig
from deepalign.pipeline.stages import RunContext, Stage, Suite
from deepalign.train.augment import fallback_refusal
from deepalign.train.config import DeepAlignConfig, LoraArguments
from deepalign.train.recipes import paper_training_args
from deepalign.train.run import train

BASE = "smollm2-135m-instruct"
N_TRAIN, N_EVAL, N_FINETUNE = 64, 32, 32  # harmful prompts: alignment/augmentation, evaluation, attack data
N_BENIGN_EVAL = 12
ANSWER_TOKENS = 96


def _prompts(seed: int):
    prompts = load_prompts("advbench") + load_prompts("harmbench")
    return split(prompts, [N_TRAIN, N_EVAL, N_FINETUNE], seed=seed)[:3]


def prepare_data(ctx: RunContext) -> dict:
    """The base's greedy answers to harmful and benign prompts, split into the suite's data files."""
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
    """The training settings of the suite's LoRA alignment and augmentation (the adapter: :func:`lora`)."""
    values = dict(output_dir=str(out), objective="sft", learning_rate=3e-4, lr_scheduler_type="linear",
                  warmup_steps=3, per_device_train_batch_size=8, num_train_epochs=2, weight_decay=0.0, max_length=256,
                  seed=ctx.seed, disable_tqdm=not ctx.progress, report_to="none", save_strategy="no")
    return DeepAlignConfig(**{**values, **overrides})


def lora(ctx: RunContext):
    """The suite's LoRA adapter (rank 16, alpha 32, every linear layer), for alignment and the attack."""
    return LoraArguments(use_lora=True, lora_r=16, lora_alpha=32).peft_config()


def _merge(adapter: Path, out: Path) -> None:
    """Merge a trained LoRA adapter into its base and save a plain model folder at ``out`` (atomically)."""
    model, tok = load_model(str(adapter))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.merge_and_unload().save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.copy(adapter / "training_log.jsonl", tmp / "training_log.jsonl")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)


def _train_merged(ctx: RunContext, label: str, start: str, data, anchors, **overrides) -> dict:
    adapter = ctx.setup / f"{label}.adapter"
    train(resolve_model_path(start), data, _lora_args(adapter, ctx, **overrides), anchors=anchors, out_dir=adapter,
          peft_config=lora(ctx))
    _merge(adapter, ctx.setup / label)
    log = [r for r in read_jsonl(ctx.setup / label / "training_log.jsonl") if "loss" in r]
    return {"steps": len(log), "first_loss": log[0]["loss"], "last_loss": log[-1]["loss"]}


def align(ctx: RunContext) -> dict:
    """Standard SFT (LoRA) of the helpful-only base on harmful prompts -> our refusals, plus benign anchors."""
    triplets = load_triplets(str(ctx.setup / "train_triplets.jsonl"))
    refusals = [PairRecord(t.id, t.prompt, t.refusal, t.category) for t in triplets]
    return _train_merged(ctx, "aligned", BASE, refusals + load_pairs(str(ctx.setup / "benign.jsonl")), None)


def deepen(ctx: RunContext) -> dict:
    """Safety-recovery augmentation (LoRA) of ``aligned`` with the base's harmful answers and benign anchors."""
    triplets = load_triplets(str(ctx.setup / "train_triplets.jsonl"))
    anchors = load_pairs(str(ctx.setup / "benign.jsonl"))
    return _train_merged(ctx, "deep", str(ctx.setup / "aligned"), triplets, anchors, per_device_train_batch_size=2,
                         anchors_per_safety=2, num_train_epochs=3)


def judge(ctx: RunContext):
    """The keyword judge; the LLM judge instead when an endpoint is configured in the environment."""
    return make_judge("llm" if os.environ.get("DEEPALIGN_JUDGE_BASE_URL") else "keyword")


def gcg_config(ctx: RunContext, label: str):
    return GCGAttackConfig(steps=10, search_width=32, topk=64, sampling=ctx.sampling(), label=label)


def attack_config(ctx: RunContext):
    return FinetuneAttackConfig(data=str(ctx.setup / "harmful_ft.jsonl"),
                                eval_prompts=str(ctx.setup / "eval_pairs.jsonl"),
                                n_train=N_FINETUNE, n_eval=16, max_new_tokens=ctx.config.max_new_tokens, greedy=True,
                                judge="keyword", seed=ctx.seed)


def attack_training(ctx: RunContext, out):
    # the paper's optimizer (AdamW beta1 0.5, warm-up), on LoRA (attack_peft) with a LoRA-sized learning rate and
    # 12 steps
    return paper_training_args("harmful", str(out), learning_rate=2e-4, warmup_steps=2,
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
    attack_peft=lora,
)
