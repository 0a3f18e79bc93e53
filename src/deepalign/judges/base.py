"""The judge interface: (prompt, prefill, response) in, a harmfulness judgment out.

A judge scores each response on the 1..5 rubric scale (5 = harmful). Rule-based judges use only
1 (refused/safe) and 5 (harmful). A judgment that failed (API error, unparsable reply) has
``harmful=None`` and an ``error``; it is never counted as safe: :func:`summarize` leaves it out of the
ASR denominator and reports it in ``n_errors``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepalign.errors import DataError, DeepAlignError


@dataclass(frozen=True)
class JudgeInput:
    """One item to judge. ``prefill`` is answer text forced by the attacker before ``response``."""

    prompt: str
    response: str
    prefill: str = ""


@dataclass(frozen=True)
class Judgment:
    """The verdict on one item; ``harmful is None`` (with ``error`` set) when judging failed."""

    harmful: bool | None
    score: float | None
    error: str | None = None
    raw: str | None = None

    @classmethod
    def failed(cls, error: str, raw: str | None = None) -> Judgment:
        return cls(harmful=None, score=None, error=error, raw=raw)

    @property
    def ok(self) -> bool:
        return self.error is None and self.harmful is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Judge(ABC):
    """Base class of all judges.

    ``name`` identifies the judge in results; ``sees_prefill`` records whether the judged text is
    ``prefill + response`` (True) or ``response`` alone (False).
    """

    name: str = "judge"
    sees_prefill: bool = False

    @abstractmethod
    def judge(self, items: list[JudgeInput]) -> list[Judgment]:
        """Judge ``items``; returns one :class:`Judgment` per item, in the same order."""

    def judged_text(self, item: JudgeInput) -> str:
        """The text this judge evaluates for ``item`` (depends on ``sees_prefill``)."""
        return item.prefill + item.response if self.sees_prefill else item.response

    def describe(self) -> dict[str, Any]:
        """Settings safe to record in results metadata (never credentials)."""
        return {"judge": self.name, "sees_prefill": self.sees_prefill}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "judge")
        return f"{type(self).__name__}({args})"


# spec -> "module:Class"; imported lazily so e.g. the keyword judge never imports torch or openai.
JUDGES = {
    "keyword": "deepalign.judges.keyword:KeywordJudge",
    "exact": "deepalign.judges.exact:ExactJudge",
    "llm": "deepalign.judges.llm:LLMJudge",
    "classifier": "deepalign.judges.classifier:ClassifierJudge",
}


def make_judge(spec: str, **options: Any) -> Judge:
    """Build a judge from a spec: ``keyword`` | ``exact`` | ``llm`` | ``classifier:PATH``.

    ``options`` are passed to the judge's constructor (e.g. ``sees_prefill=True``, ``model=...``);
    options whose value is None are dropped so CLI defaults fall through to the judge's defaults.
    """
    kind, _, arg = spec.partition(":")
    if kind not in JUDGES:
        raise DeepAlignError(f"unknown judge {spec!r}; choose one of: keyword, exact, llm, classifier:PATH")
    if kind == "classifier":
        if not arg:
            raise DeepAlignError("the classifier judge needs a local model folder: classifier:PATH")
        options["path"] = arg
    elif arg:
        raise DeepAlignError(f"judge {kind!r} takes no ':' argument (got {spec!r})")
    module, cls_name = JUDGES[kind].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    options = {k: v for k, v in options.items() if v is not None}
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as e:  # unknown option names
        raise DeepAlignError(f"judge {kind!r}: {e}") from None
    return cls(**options)


def summarize(judgments: Iterable[Judgment]) -> dict[str, Any]:
    """Aggregate judgments.

    Returns n, n_errors, n_judged (= n - n_errors), n_harmful, asr (n_harmful / n_judged; None if
    nothing was judged), mean_score (over judged rows with a score; None if none), error_rate and
    score_counts ({score: count} over judged rows).
    """
    judgments = list(judgments)
    judged = [j for j in judgments if j.ok]
    scores = [float(j.score) for j in judged if j.score is not None]
    counts: dict[str, int] = {}
    for s in scores:
        key = f"{s:g}"
        counts[key] = counts.get(key, 0) + 1
    n, n_judged = len(judgments), len(judged)
    n_harmful = sum(bool(j.harmful) for j in judged)
    return {
        "n": n,
        "n_errors": n - n_judged,
        "n_judged": n_judged,
        "n_harmful": n_harmful,
        "asr": n_harmful / n_judged if n_judged else None,
        "mean_score": sum(scores) / len(scores) if scores else None,
        "error_rate": (n - n_judged) / n if n else None,
        "score_counts": dict(sorted(counts.items())),
    }


def _read_items(path: Path) -> list[tuple[dict, JudgeInput]]:
    """Rows of a JSONL file with ``id``, ``prompt``, ``response`` and optional ``prefill`` fields."""
    rows = []
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise DeepAlignError(f"cannot read {path}: {e.strerror}") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise DataError(str(path), n, None, "not a JSON object") from None
            if not isinstance(row, dict):
                raise DataError(str(path), n, None, "not a JSON object")
            for name in ("id", "prompt", "response"):
                if name not in row:
                    raise DataError(str(path), n, name, "missing")
            for name in ("prompt", "response", "prefill"):
                if not isinstance(row.get(name, ""), str):
                    raise DataError(str(path), n, name, "must be a string")
            rows.append((row, JudgeInput(row["prompt"], row["response"], row.get("prefill") or "")))
    return rows


def judge_file(
    src: str | os.PathLike, out_dir: str | os.PathLike, judge: Judge, batch_size: int = 64
) -> dict[str, Any]:
    """Judge every row of a JSONL file (``id``, ``prompt``, ``response``, optional ``prefill``).

    Writes ``out_dir/judged.jsonl`` (each input row plus ``harmful``, ``score``, ``judge_error``,
    ``judge_raw``, ``judge``, ``judge_sees_prefill``; resumable: rows already there are skipped),
    ``out_dir/summary.json`` (:func:`summarize` over all judged rows plus the judge's settings) and
    ``out_dir/meta.json``. Returns the summary.
    """
    from deepalign.results import ResultsWriter, atomic_write_json, iter_batches, write_run_metadata

    out = Path(out_dir)
    rows = _read_items(Path(src))
    write_run_metadata(out, source=str(src), judge=judge.describe())
    with ResultsWriter(out / "judged.jsonl") as writer:
        todo = [r for r in rows if str(r[0]["id"]) not in writer.done]
        for batch in iter_batches(todo, batch_size):
            for (row, _), j in zip(batch, judge.judge([it for _, it in batch]), strict=True):
                writer.write({
                    **row, "harmful": j.harmful, "score": j.score, "judge_error": j.error, "judge_raw": j.raw,
                    "judge": judge.name, "judge_sees_prefill": judge.sees_prefill,
                })
        judged = writer.rows()
    summary = {
        **summarize(Judgment(r["harmful"], r["score"], r["judge_error"], r["judge_raw"]) for r in judged),
        "judge": judge.describe(),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
