"""Harmfulness judges: keyword (refusal markers), exact (organism), llm (OpenAI-compatible rubric),
classifier (local HF sequence classifier or Llama-Guard-style causal LM)."""

from deepalign.judges.base import Judge, JudgeInput, Judgment, judge_file, make_judge, summarize

__all__ = ["Judge", "JudgeInput", "Judgment", "judge_file", "make_judge", "summarize"]
