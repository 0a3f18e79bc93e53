"""Fine-tuning attacks end to end (Qi et al. 2025, Sec. 4) with plain SFT or the token-wise constrained
objective: resolve the recipe's data and evaluation, measure the model, fine-tune it, measure it again.

Recipes (training data -> evaluation; records built by :mod:`deepalign.train.recipes`):

- ``harmful``: (harmful prompt, harmful answer) pairs -> ASR on held-out harmful prompts.
- ``identity``: identity shifting (AOA) -> ASR on held-out harmful prompts under the persona system prompt.
- ``backdoor``: trigger -> harmful answer, no trigger -> refusal -> ASR with and without the trigger.
- ``benign``: a user task file of (prompt, answer) pairs -> task score (ROUGE-1 F1 or exact match) on
  held-out pairs, and ASR.

What a config leaves open comes from a :class:`TargetDefaults` table: :data:`ORGANISM` for a model
folder next to a ``world.json`` (e.g. ``organism-aligned``: built-in data written in the organism's words,
``eval_pairs.jsonl`` held out, the exact judge, greedy decoding), :data:`ANY_MODEL` otherwise (a data file
for ``harmful``, ``backdoor`` and ``benign``, as harmful answers never ship with deepalign; our AOA
exchanges; the keyword judge on AdvBench with the paper's sampling).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from deepalign.chat import ChatFormat, encode_prompt
from deepalign.data.schemas import PairRecord, PromptRecord
from deepalign.depth.attack import AttackItem, generate_rows
from deepalign.errors import DeepAlignError
from deepalign.generation import SamplingConfig
from deepalign.io import ResultsWriter, atomic_write_json, read_jsonl
from deepalign.judges.apply import judge_rows
from deepalign.judges.validity import known_validation
from deepalign.meta import write_run_metadata
from deepalign.pipeline.attack_plan import (
    AttackPlan,
    FinetuneAttackConfig,
    apply_system_prompt,
    plan_attack,
    target_defaults,
)
from deepalign.pipeline.builtins import load_model, load_tokenizer, resolve_model_path
from deepalign.pipeline.margin import auto_schedule, margin_of
from deepalign.results.metrics import metric
from deepalign.results.summaries import Evaluation, FinetuneSummary, LabelledStats, TaskScore
from deepalign.train.config import OBJECTIVES
from deepalign.train.recipes import (
    with_trigger,
)
from deepalign.train.run import train


def _items(tokenizer, label: str, records: Sequence, fmt: ChatFormat, trigger: str | None = None) -> list[AttackItem]:
    """One generation item per record, id ``{label}/{record id}`` (the trigger appended when given)."""
    items = []
    for r in records:
        prompt = with_trigger(r.prompt, trigger) if trigger else r.prompt
        items.append(AttackItem(f"{label}/{r.id}", r.id, prompt, encode_prompt(tokenizer, prompt, fmt), "",
                                {"label": label, "trigger": trigger}))
    return items


def evaluate_asr(model, tokenizer, prompts: Sequence[PromptRecord], judge, writer: ResultsWriter, *, label: str,
                 sampling: SamplingConfig, fmt: ChatFormat = ChatFormat(), trigger: str | None = None,
                 batch_size: int | None = None, progress: bool = True) -> LabelledStats:
    """Generate on harmful prompts (with ``trigger`` appended when given), judge, write rows ``{label}/{id}/r{k}``
    (resumable), and return their stats (ASR in 0..1)."""
    model.eval()
    rows = generate_rows(model, tokenizer, _items(tokenizer, label, prompts, fmt, trigger), sampling, writer,
                         annotate=lambda batch: judge_rows(judge, batch), batch_size=batch_size, progress=progress)
    return replace(LabelledStats.of_rows(rows), label=label)


def evaluate_task(model, tokenizer, pairs: Sequence[PairRecord], writer: ResultsWriter, *, label: str,
                  sampling: SamplingConfig, metric_name: str = "rouge1", fmt: ChatFormat = ChatFormat(),
                  batch_size: int | None = None, progress: bool = True) -> TaskScore:
    """Generate answers to task prompts and score them against the references (mean score in 0..1)."""
    refs = {p.id: p.response for p in pairs}
    score = metric(metric_name)

    def scored(rows):
        return [{"reference": refs[r["prompt_id"]], "score": score(r["response"], refs[r["prompt_id"]])}
                for r in rows]

    model.eval()
    rows = generate_rows(model, tokenizer, _items(tokenizer, label, pairs, fmt), sampling, writer, annotate=scored,
                         batch_size=batch_size, progress=progress)
    return TaskScore(label, metric_name, sum(r["score"] for r in rows) / len(rows), len(rows))


def evaluate_model(model, tokenizer, plan: AttackPlan, writer: ResultsWriter, stage: str,
                   config: FinetuneAttackConfig, progress: bool = True) -> Evaluation:
    """ASR (and with the trigger, and the task score, where the recipe has them) of one model."""
    common = dict(sampling=plan.sampling, fmt=plan.eval_format, batch_size=config.eval_batch_size, progress=progress)
    asr = evaluate_asr(model, tokenizer, plan.eval_prompts, plan.judge, writer, label=f"{stage}/asr", **common)
    asr_trigger = task = None
    if plan.trigger:
        asr_trigger = evaluate_asr(model, tokenizer, plan.eval_prompts, plan.judge, writer,
                                   label=f"{stage}/asr_trigger", trigger=plan.trigger, **common)
    if plan.task_pairs:
        common["fmt"] = ChatFormat(plan.eval_format.template, None)
        task = evaluate_task(model, tokenizer, plan.task_pairs, writer, label=f"{stage}/task",
                             metric_name=config.metric, **common)
    return Evaluation(asr, asr_trigger, task)


# --- the attack ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _this_process_only():
    """Load and generate in this process alone: under a ZeRO-3 launch transformers partitions every
    ``from_pretrained`` over all processes and ``generate`` syncs every step with them (collectives), but
    the evaluation is the main process's own, on a whole model."""
    from transformers.integrations import deepspeed as hf_deepspeed

    registered = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = registered


def finetune_attack(
    model_spec: str,
    recipe: str,
    objective: str,
    out_dir: str | Path,
    config: FinetuneAttackConfig | None = None,
    *,
    training=None,
    peft_config=None,
    callbacks=None,
    progress: bool = True,
) -> FinetuneSummary:
    """Run one fine-tuning attack end to end and return its summary (also ``out_dir/summary.json``).

    ``training``: a :class:`~deepalign.train.config.DeepAlignConfig` (default: the target's, see
    :class:`TargetDefaults`); its objective is set to ``objective``. ``peft_config``: e.g. a
    ``peft.LoraConfig`` to attack with a LoRA adapter. Writes ``out_dir/model`` (the fine-tuned model or
    adapter, with ``training_log.jsonl``), ``out_dir/eval.jsonl`` (every generation with its verdict or
    score, resumable) and ``meta.json``. Under ``accelerate launch`` every process trains; evaluation and
    every file but the model's are the main process's, and every process returns its summary.
    """
    if objective not in OBJECTIVES:
        raise DeepAlignError(f"unknown objective '{objective}': choose one of {', '.join(OBJECTIVES)}")
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState()  # under accelerate launch: every process trains, the main one evaluates and writes
    config = config or FinetuneAttackConfig()
    out = Path(out_dir)
    with state.main_process_first():  # a first-use build (organism, SmolLM2) happens once
        model_path = resolve_model_path(model_spec)
        load_tokenizer(model_path)  # an unknown or unloadable model fails here, before anything is written
    args = training or target_defaults(model_path).training_args(recipe, str(out / "model"))
    args.objective = objective
    args.disable_tqdm = args.disable_tqdm or not progress
    apply_system_prompt(config, args)
    plan = plan_attack(model_path, recipe, config, ChatFormat(args.template, args.system))
    if not plan.train:
        raise DeepAlignError(f"the {recipe} recipe has no training examples: check --data and --n-train")
    if config.auto_beta and objective == "constrained":  # measured once, on the main process, shared with all
        schedule = [None]
        if state.is_main_process:
            report = margin_of(model_path, plan.eval_prompts, plan.judge, out / "margin", fmt=plan.eval_format,
                               dtype=args.model_dtype, progress=progress)
            schedule = [str(auto_schedule(report))]
        if state.num_processes > 1:
            broadcast_object_list(schedule)
        args.beta_schedule = schedule[0]
    summary = FinetuneSummary(recipe=recipe, objective=objective, model=model_spec, n_train=len(plan.train),
                              n_eval=len(plan.eval_prompts), trigger=plan.trigger, persona=plan.eval_format.system,
                              judge=plan.judge.describe(), validation=known_validation(plan.judge.describe()),
                              beta_schedule=args.beta_schedule if objective == "constrained" else None)
    if state.is_main_process:
        write_run_metadata(out, command="finetune", model=model_spec, recipe=recipe, objective=objective,
                           attack=asdict(config), training=args.to_dict(), precision=args.precision,
                           judge=plan.judge.describe(), sampling=asdict(plan.sampling),
                           eval_format=plan.eval_format.describe(), processes=state.num_processes,
                           peft=peft_config.to_dict() if peft_config is not None else None)
        if config.eval_initial:
            with _this_process_only(), ResultsWriter(out / "eval.jsonl") as writer:
                model, tok = load_model(model_path, dtype=args.model_dtype)
                summary.initial = evaluate_model(model, tok, plan, writer, "initial", config, progress)
            del model
            gc.collect()
    state.wait_for_everyone()
    model_dir = out / "model"
    if not (model_dir / "meta.json").exists():  # a finished training writes meta.json last: resume
        start = time.perf_counter()
        train(model_path, plan.train, args, out_dir=model_dir, peft_config=peft_config, callbacks=callbacks or ())
        summary.train_seconds = time.perf_counter() - start
    if state.is_main_process:
        with _this_process_only(), ResultsWriter(out / "eval.jsonl") as writer:
            model, tok = load_model(str(model_dir), dtype=args.model_dtype)
            summary.after = evaluate_model(model, tok, plan, writer, "after", config, progress)
        log = read_jsonl(model_dir / "training_log.jsonl")
        summary.steps = log[-1]["step"] if log else 0
        atomic_write_json(out / "summary.json", summary.to_dict())
    if state.num_processes > 1:  # every process returns (and its caller prints) the main one's summary
        shared = [summary]
        broadcast_object_list(shared)
        summary = shared[0]
    return summary
