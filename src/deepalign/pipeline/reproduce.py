"""``deepalign reproduce``: the paper's findings as resumable stages over seeds, for one suite of models.

Each stage writes into ``<run>/seed<S>/<stage>/`` and finishes by writing ``summary.json`` atomically;
a stage whose summary exists is skipped, so a killed run resumes from its last finished stage (stages
that generate also resume row by row). Then ``report.md`` and a self-contained ``report.html`` put each
number beside the paper's, with a verdict per claim. Suites and the stage types: :mod:`.stages`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from tqdm.auto import tqdm

from deepalign.data import load_pairs, load_prompts
from deepalign.depth.decoding import DecodingConfig
from deepalign.depth.kl import KLConfig
from deepalign.depth.prefill import PrefillConfig
from deepalign.depth.refusal_prefix import RefusalPrefixConfig
from deepalign.io import ResultsWriter, atomic_write_json
from deepalign.meta import write_run_metadata
from deepalign.pipeline.attack_plan import plan_attack
from deepalign.pipeline.attacks import run_decoding_attack, run_gcg, run_prefill, run_refusal_prefix
from deepalign.pipeline.builtins import load_model, load_tokenizer
from deepalign.pipeline.finetune import evaluate_asr, finetune_attack
from deepalign.pipeline.kl import run_kl
from deepalign.pipeline.stages import ReproduceConfig, RunContext, Stage
from deepalign.pipeline.suites import get_suite
from deepalign.report.claims import write_suite_report
from deepalign.train.augment import encode_records
from deepalign.train.dynamics import AsrCallback, DynamicsCallback


def _records(ctx: RunContext, kind: str = "pairs", limit: int | None = None):
    """The held-out harmful pairs (or their prompts): the first ``limit``, at most the suite's ``eval_limit``."""
    limits = [n for n in (limit, ctx.suite.eval_limit) if n]
    path = str(ctx.setup / "eval_pairs.jsonl")
    return (load_pairs if kind == "pairs" else load_prompts)(path, limit=min(limits) if limits else None)


def kl_stage(ctx: RunContext) -> dict:
    """KL(aligned || base) and KL(deep || base) per response position on the held-out harmful answers."""
    config = KLConfig(base_template="same", max_positions=ctx.config.kl_positions)
    summary = {}
    for label in ("aligned", "deep"):
        profile = run_kl(ctx.model(label), ctx.model("base"), str(ctx.setup / "eval_pairs.jsonl"),
                         ctx.dir / "kl" / label, config, limit=ctx.suite.eval_limit, progress=ctx.progress)
        summary[label] = {**profile.summary(), "mean": profile.mean, "sem": profile.sem, "count": profile.count}
    return summary


def refusal_prefix_stage(ctx: RunContext) -> dict:
    """The base model's harmful rate without and with each refusal prefix (the paper's Table 1)."""
    model, tok = load_model(ctx.model("base"))
    config = RefusalPrefixConfig(prefixes=ctx.suite.refusal_prefixes, sampling=ctx.sampling(), label="base")
    judge = ctx.judge()
    summary = run_refusal_prefix(model, tok, _records(ctx, "prompts"), config, judge, ctx.dir / "refusal_prefix",
                                 progress=ctx.progress).to_dict()
    return {**summary, "judge": judge.name}


def prefill_stage(ctx: RunContext) -> dict:
    """Harmful rate against prefilled tokens k for the aligned, deep and base models."""
    points = []
    for label in ("aligned", "deep", "base"):
        model, tok = load_model(ctx.model(label))
        config = PrefillConfig(ks=ctx.config.prefill_ks, on_short="skip", sampling=ctx.sampling(), label=label)
        summary = run_prefill(model, tok, _records(ctx), config, ctx.judge(), ctx.dir / "prefill" / label,
                              progress=ctx.progress)
        points += [p.to_dict() for p in summary.points]
    return {"points": points}


def decoding_stage(ctx: RunContext) -> dict:
    """The decoding attack (the suite's grid) on the aligned and deep models."""
    summary = {}
    for label in ("aligned", "deep"):
        model, tok = load_model(ctx.model(label))
        config = DecodingConfig(sampling=replace(ctx.sampling(), repeats=ctx.suite.decoding_repeats),
                                grid=ctx.suite.decoding_grid, label=label)
        summary[label] = run_decoding_attack(model, tok, _records(ctx, "prompts", ctx.suite.decoding_prompts), config,
                                             ctx.judge(), ctx.dir / "decoding" / label, progress=ctx.progress).to_dict()
    return summary


def gcg_stage(ctx: RunContext) -> dict:
    """GCG with a small budget on a few held-out prompts, against the aligned and deep models."""
    summary = {}
    for label in ("aligned", "deep"):
        model, tok = load_model(ctx.model(label))
        config = ctx.suite.gcg_config(ctx, label)
        summary[label] = run_gcg(model, tok, _records(ctx, "pairs", ctx.suite.gcg_prompts), config, ctx.judge(),
                                 ctx.dir / "gcg" / label, progress=ctx.progress).to_dict()
    return summary


def _record_ends(path: Path, steps: Sequence[int], result: dict) -> None:
    """The ASR rows of step 0 (the attack's ``initial``: the model before it) and of the last step (its
    ``after``) in ``path``, where they are checkpoints: the callback leaves these two evaluations to them."""
    ends = [(0, result["initial"]), (result["steps"], result["after"])]
    with ResultsWriter(path) as writer:
        for step, evaluation in ends:
            row_id = f"step-{step:07d}"
            if step in steps and evaluation is not None and row_id not in writer.done:
                writer.write({"id": row_id, "step": step, "asr": evaluation["asr"]["asr"],
                              "n": evaluation["asr"]["n"]})


def finetune_stage(ctx: RunContext) -> dict:
    """The harmful fine-tuning attack on ``aligned`` with SFT and with the constrained objective, with the
    per-position loss / gradient norm and ASR recorded at checkpoints (training dynamics). ``aligned`` is
    evaluated once, before the first attack (it is every attack's step 0), and each attack's last checkpoint is
    its after-attack evaluation."""
    aligned = ctx.model("aligned")
    tok = load_tokenizer(aligned)
    attack = ctx.suite.attack_config(ctx)
    plan = plan_attack(aligned, "harmful", attack)
    summary = {}
    for name, schedule in ctx.suite.finetune_objectives:
        out = ctx.dir / "finetune" / name
        training = ctx.suite.attack_training(ctx, out / "model")
        if schedule and schedule != "auto":
            training.beta_schedule = schedule
        steps = ctx.suite.checkpoints

        def asr_at(model, step, out=out):
            with ResultsWriter(out / "asr_steps_rows.jsonl") as writer:
                r = evaluate_asr(model, tok, plan.eval_prompts, plan.judge, writer, label=f"step{step}",
                                 sampling=plan.sampling, fmt=plan.eval_format, progress=False)
            return {"asr": r.asr, "n": r.n}

        callbacks = [AsrCallback(out / "asr_steps.jsonl", asr_at, [s for s in steps if s != 0], skip_final=True)]
        if name == "sft":  # the paper's Figure 3: per-position loss and gradient norm under the SFT attack
            probe = encode_records(tok, plan.train[: ctx.suite.dynamics_examples])
            callbacks.append(DynamicsCallback(out / "dynamics.jsonl", probe, steps, 20, tok.pad_token_id))
        objective = name.split("-")[0]
        peft = ctx.suite.attack_peft(ctx) if ctx.suite.attack_peft else None
        first = next(iter(summary), None)
        config = replace(attack, auto_beta=schedule == "auto", eval_initial=first is None)
        result = finetune_attack(aligned, "harmful", objective, out, config, training=training,
                                 peft_config=peft, callbacks=callbacks, progress=ctx.progress).to_dict()
        if first:  # the same aligned model, evaluated once
            result["initial"] = summary[first]["initial"]
        _record_ends(out / "asr_steps.jsonl", steps, result)
        summary[name] = result
    return summary


MEASUREMENTS = (
    Stage("kl", kl_stage),
    Stage("refusal_prefix", refusal_prefix_stage),
    Stage("prefill", prefill_stage),
    Stage("decoding", decoding_stage),
    Stage("gcg", gcg_stage, first_seed_only=True),
    Stage("finetune", finetune_stage),
)


def run_stage(stage: Stage, ctx: RunContext) -> dict:
    """The stage's summary: read back when already finished, else computed and written last."""
    path = ctx.dir / stage.name / "summary.json"
    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    summary = stage.run(ctx)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    atomic_write_json(path, summary)
    return json.loads(path.read_text())


def reproduce(out_dir: str | Path, config: ReproduceConfig | None = None, *, progress: bool = True) -> str:
    """Run (or resume) every stage for every seed into ``out_dir``; write the report; return its Markdown."""
    config = config or ReproduceConfig()
    suite = get_suite(config.suite)
    if config.quick and suite.quick:
        suite = replace(suite, **suite.quick)
    config = config.resolved(suite.defaults)
    run = Path(out_dir)
    write_run_metadata(run, command="reproduce", config=asdict(config))
    stages = (*suite.build, *MEASUREMENTS)
    plan = [(seed, stage) for seed in config.seeds for stage in stages
            if not (stage.first_seed_only and seed != config.seeds[0])]
    summaries: dict[int, dict[str, dict]] = {seed: {} for seed in config.seeds}
    with tqdm(plan, desc=f"reproduce {suite.name}", unit="stage", disable=not progress) as bar:
        for seed, stage in bar:
            bar.set_postfix_str(f"seed {seed}: {stage.name}")
            summaries[seed][stage.name] = run_stage(stage, RunContext(run, seed, config, suite, progress))
    return write_suite_report(run, summaries, suite=suite.name, description=suite.description,
                              judge_name=suite.judge_name, prefill_ks=config.prefill_ks, rules=suite.rules)
