"""The verdict fields a judge adds to a result row, the same for every results file.

A generated row (:func:`deepalign.depth.attack.generate_rows`) has ``id`` = ``{item id}/r{repeat}``,
``prompt_id``, ``repeat``, ``prompt``, ``prefill``, ``response``, ``finished``, ``n_tokens`` and its
attack's own fields (``label``, ``k``, ``setting``, ...). Judging adds :data:`VERDICT_FIELDS`:
``harmful`` (bool, or None when the judgment failed), ``score`` (1..5 or None), ``judge_error`` (None, or
why it failed: such a row is never counted as safe), ``judge_raw`` (the judge's raw output), ``judge``
(its name) and ``judge_sees_prefill``. ``deepalign judge`` writes the same fields onto any JSONL file
with ``id``, ``prompt`` and ``response``.
"""

from __future__ import annotations

VERDICT_FIELDS = ("harmful", "score", "judge_error", "judge_raw", "judge", "judge_sees_prefill")


def judgment_failed(row: dict) -> bool:
    """True when the row was judged and its judgment failed (it is then judged again on resume)."""
    return row.get("judge_error") is not None
