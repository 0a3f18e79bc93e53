"""The paper's claims, checked against the summaries of a ``deepalign reproduce`` run.

``summaries[seed][stage]`` is the ``summary.json`` of one stage for one seed (see
``deepalign.pipeline.reproduce``). Rates are pooled over seeds (harmful answers / judged answers) with
95% Wilson intervals; per-seed values are listed beside them so the spread between seeds is visible.
A new claim is a function ``(summaries, run folder, ...) -> Claim`` in the module of its area, listed
in :func:`write_suite_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deepalign.report.claims.attacks import decoding_claim, deep_prefill_claim, gcg_claim, prefill_claim
from deepalign.report.claims.common import ClaimRules, Summaries, judges_validation
from deepalign.report.claims.depth import deep_kl_claim, kl_claim, refusal_prefix_claim
from deepalign.report.claims.export import write_claims_json
from deepalign.report.claims.finetune import dynamics_claim, finetune_claim
from deepalign.report.claims.margin import margin_section, stage_times_section
from deepalign.report.document import write_report


def write_suite_report(run: Path, summaries: Summaries, *, suite: str, description: str, judge_name: str,
                       prefill_ks: Sequence[int], rules: ClaimRules = ClaimRules()) -> str:
    """Write report.md, report.html and claims.json for a finished ``deepalign reproduce`` run of ``suite`` (its
    models in one sentence: ``description``; how answers are judged: ``judge_name``; verdicts by ``rules``);
    returns the Markdown."""
    claims = [
        kl_claim(summaries, run), refusal_prefix_claim(summaries, run, rules),
        prefill_claim(summaries, run, prefill_ks, judge_name, rules),
        deep_prefill_claim(summaries, prefill_ks, rules),
        deep_kl_claim(summaries), decoding_claim(summaries, run), gcg_claim(summaries),
        finetune_claim(summaries, run, rules), dynamics_claim(summaries, run),
    ]
    validation = judges_validation(summaries)
    sections = [s for s in (margin_section(summaries, run), stage_times_section(summaries)) if s is not None]
    write_claims_json(run, claims, suite=suite, seeds=list(summaries), judge=judge_name)
    seconds = sum(s.get("seconds", 0.0) for by_stage in summaries.values() for s in by_stage.values())
    intro = (
        "Qi et al. (ICLR 2025) claim that safety alignment is only a few tokens deep, that this explains "
        "prefilling, decoding and fine-tuning attacks, and that data augmentation and a token-wise constrained "
        f"objective fix it. Here each claim is checked on {description}, over seeds {list(summaries)}, "
        f"answers judged by the {judge_name}" + (f" ({validation})" if validation else "") + "; the paper's "
        "numbers are from Llama-2-7B-Chat. "
        f"Compute time of the stages: {seconds / 60:.1f} min."
    )
    return write_report(run, f"deepalign reproduce: the {suite} suite", intro, claims, sections)
