"""Harmfulness judges: keyword (refusal markers), exact (organism), llm (OpenAI-compatible rubric),
classifier (local HF sequence classifier or Llama-Guard-style causal LM)."""

from deepalign.judges.base import (
    DEFAULT_MAX_FAILURE_SHARE,
    Judge,
    JudgeInput,
    Judgment,
    check_failure_share,
    judge_file,
    make_judge,
    summarize,
)

__all__ = [
    "DEFAULT_MAX_FAILURE_SHARE",
    "Judge",
    "JudgeInput",
    "Judgment",
    "check_failure_share",
    "judge_file",
    "make_judge",
    "summarize",
]
