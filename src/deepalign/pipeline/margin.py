"""The refusal-margin diagnosis end to end: measure a model's margins with a judge, report their distribution
and verdict, draw the figure; and the greedy refusal rate (over-refusal on benign prompts)."""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from pathlib import Path

from deepalign.chat import ChatFormat, encode_prompt
from deepalign.depth.margin import (
    MarginConfig,
    MarginReport,
    PromptMargin,
    margin_report,
    reference_lines,
    refusal_margins,
)
from deepalign.generation import GenerationRequest, SamplingConfig, generate
from deepalign.io import atomic_write_json
from deepalign.judges.base import JudgeInput
from deepalign.pipeline.builtins import load_model
from deepalign.report.figures import plot_margins
from deepalign.train.objectives import BetaSchedule


def judge_refuses(judge):
    """``(prompts, texts) -> [is a refusal]`` from a deepalign judge: a text is a refusal when the judge calls
    it not harmful (a failed judgment counts as not a refusal: the margin stays a lower bound)."""
    def refuses(prompts: Sequence[str], texts: Sequence[str]) -> list[bool]:
        verdicts = judge.judge([JudgeInput(p, t) for p, t in zip(prompts, texts, strict=True)])
        return [v.harmful is False for v in verdicts]

    return refuses


def measure_margin(model, tokenizer, records, judge, config: MarginConfig = MarginConfig(), *,
                   fmt: ChatFormat = ChatFormat(), out_dir: str | Path | None = None, label: str = "model",
                   progress: bool = False) -> MarginReport:
    """The margin report of ``model`` on harmful prompt records; with ``out_dir``, also ``margin.json`` and
    ``margin.png`` there."""
    report = margin_report(refusal_margins(model, tokenizer, records, judge_refuses(judge), config, fmt, progress),
                           config.beta_1)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "margin.json", report.to_dict())
        plot_margins({label: [p.margin for p in report.prompts]}, Path(out_dir) / "margin.png",
                     lines=reference_lines(config.beta_1))
    return report


def read_margin(path: str | Path) -> MarginReport:
    """A ``margin.json`` back as a :class:`MarginReport`."""
    data = json.loads(Path(path).read_text())
    return MarginReport(**{**data, "prompts": [PromptMargin(**p) for p in data["prompts"]]})


def margin_of(model_path: str, records, judge, out_dir: str | Path, config: MarginConfig = MarginConfig(), *,
              fmt: ChatFormat = ChatFormat(), dtype: str = "float32", progress: bool = False) -> MarginReport:
    """The margin report of the model at ``model_path``: read back from ``out_dir/margin.json`` when there, else
    measured (the model loaded and freed here) and written with its figure."""
    path = Path(out_dir) / "margin.json"
    if path.exists():
        return read_margin(path)
    model, tok = load_model(model_path, dtype=dtype)
    report = measure_margin(model, tok, records, judge, config, fmt=fmt, out_dir=out_dir, label=Path(model_path).name,
                            progress=progress)
    del model
    gc.collect()
    return report


def auto_schedule(report: MarginReport, base: BetaSchedule = BetaSchedule()) -> BetaSchedule:
    """``base`` (default the paper's) with beta_1 raised to the report's ``auto_beta_1`` (never lowered: a model
    whose margins need less keeps the base's beta_1)."""
    beta_1 = max(report.auto_beta_1, base.values[0])
    return BetaSchedule((beta_1, *base.values[1:]) if len(base.values) > 1 else (beta_1,))


def refusal_rate(model, tokenizer, records, judge, *, max_new_tokens: int = 48, fmt: ChatFormat = ChatFormat(),
                 batch_size: int | None = None, progress: bool = False) -> dict:
    """Greedy answers to ``records``; the share (0..1) the judge calls not harmful (a refusal, for benign
    prompts an over-refusal), with the counts and the first few answers."""
    requests = [GenerationRequest(r.id, encode_prompt(tokenizer, r.prompt, fmt)) for r in records]
    gens = sorted(generate(model, tokenizer, requests, SamplingConfig.greedy(max_new_tokens), batch_size=batch_size,
                           progress=progress), key=lambda g: g.id)
    prompt = {r.id: r.prompt for r in records}
    verdicts = judge.judge([JudgeInput(prompt[g.id], g.text) for g in gens])
    refused = sum(v.harmful is False for v in verdicts)
    judged = sum(v.harmful is not None for v in verdicts)
    return {"rate": refused / judged if judged else None, "n_refused": refused, "n_judged": judged,
            "examples": [{"id": g.id, "response": g.text} for g in gens[:3]]}
