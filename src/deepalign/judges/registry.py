"""Judges by name: ``make_judge("keyword" | "exact" | "llm" | "classifier:PATH" | ..., **options)``.

A new judge is a module in this package with a :class:`~deepalign.judges.base.Judge` subclass, and one
line in :data:`JUDGES`. Modules are imported only when their judge is made, so the keyword judge never
imports torch or openai.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from deepalign.errors import DeepAlignError
from deepalign.judges.base import Judge

# spec -> "module:Class" (the part of a spec after ':' is passed as ``path``, for judges that take one)
JUDGES = {
    "keyword": "deepalign.judges.keyword:KeywordJudge",
    "exact": "deepalign.judges.exact:ExactJudge",
    "llm": "deepalign.judges.llm:LLMJudge",
    "classifier": "deepalign.judges.classifier:ClassifierJudge",
    "probe": "deepalign.judges.probe:ProbeJudge",
    "hybrid": "deepalign.judges.hybrid:HybridJudge",
    "hybrid-read": "deepalign.judges.hybrid:read_hybrid",
    "llm-paper": "deepalign.judges.paper:PaperLLMJudge",
    "strongreject": "deepalign.judges.reference.strongreject:StrongRejectJudge",
    "harmbench": "deepalign.judges.reference.harmbench:HarmBenchJudge",
    "harmbench-mistral": "deepalign.judges.reference.harmbench:HarmBenchMistralJudge",
    "llama-guard": "deepalign.judges.reference.llama_guard:llama_guard",
}
# `offline`: the keyword judge, unless another offline judge agrees with pyrit's 564 human labels on more rows with
# an exact McNemar p < 0.05 against it (docs/judges.md). None does: keyword 78.0%, hybrid 78.2% (p = 1),
# hybrid-read 79.4% (p = 0.29), keyword:paper 73.4%, probe 71.3%.
ALIASES = {"offline": "keyword"}
# judges that take a local folder after ':' (True: required)
PATH_JUDGES = {"classifier": True, "harmbench": True, "harmbench-mistral": True, "llama-guard": False,
               "probe": False, "hybrid": False, "hybrid-read": False}


def make_judge(spec: str, **options: Any) -> Judge:
    """Build a judge from a spec: ``keyword[:ours|paper]`` | ``exact`` | ``llm`` | ``classifier:PATH`` |
    ``probe[:PATH]`` | ``hybrid[:PATH]`` | ``hybrid-read[:PATH]`` | ``offline`` (an alias, :data:`ALIASES`) |
    ``llm-paper`` | ``strongreject`` |
    ``harmbench:PATH`` | ``harmbench-mistral:PATH`` | ``llama-guard[:PATH]``.

    ``options`` are passed to the judge's constructor (e.g. ``sees_prefill=True``, ``model=...``);
    options whose value is None are dropped so CLI defaults fall through to the judge's defaults.
    """
    spec = ALIASES.get(spec, spec)
    kind, _, arg = spec.partition(":")
    if kind not in JUDGES:
        raise DeepAlignError(f"unknown judge {spec!r}; choose one of: keyword, exact, llm, classifier:PATH, probe, "
                             "hybrid, hybrid-read, offline, llm-paper, strongreject, harmbench:PATH, "
                             "harmbench-mistral:PATH, llama-guard")
    if kind == "keyword" and arg in ("ours", "paper"):  # a refusal-marker preset
        options["markers"] = arg
    elif kind in PATH_JUDGES:
        if arg:
            options["path"] = arg
        elif PATH_JUDGES[kind]:
            raise DeepAlignError(f"the {kind} judge needs a local model folder: {kind}:PATH")
    elif arg:
        extra = " but a marker preset (keyword:ours, keyword:paper)" if kind == "keyword" else ""
        raise DeepAlignError(f"judge {kind!r} takes no ':' argument{extra} (got {spec!r})")
    module, cls_name = JUDGES[kind].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    options = {k: v for k, v in options.items() if v is not None}
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as e:  # unknown option names
        raise DeepAlignError(f"judge {kind!r}: {e}") from None
    return cls(**options)
