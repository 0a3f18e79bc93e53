"""Harmfulness judges: keyword (refusal markers), exact (organism), llm (OpenAI-compatible rubric),
classifier (local HF sequence classifier or Llama-Guard-style causal LM).

``base`` is the interface, ``registry`` builds judges by name, ``apply`` judges rows and files. Names
below are imported on first use, so importing one judge module loads nothing else.
"""

from importlib import import_module

_EXPORTS = {
    "Judge": "base", "JudgeInput": "base", "Judgment": "base", "summarize": "base",
    "make_judge": "registry",
    "DEFAULT_MAX_FAILURE_SHARE": "apply", "check_failure_share": "apply", "judge_file": "apply",
    "judge_rows": "apply", "rejudge_failed": "apply",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"deepalign.judges.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'deepalign.judges' has no attribute {name!r}")
