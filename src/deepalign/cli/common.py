"""Argument groups shared by several subcommands, and the judge they choose."""

from __future__ import annotations

import argparse
import sys

from deepalign.cli.options import add_fields
from deepalign.depth.attack import InferenceAttackConfig
from deepalign.errors import DeepAlignError, JudgeFailureError


def runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default: auto)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def load_for_backend(args: argparse.Namespace):
    """``(model, tokenizer)`` for ``args.backend``: a transformers model (hf), or a ``vllm.LLM`` built once (vllm)."""
    from deepalign.pipeline.builtins import load_model, load_tokenizer, resolve_model_path

    if getattr(args, "backend", "hf") != "vllm":
        return load_model(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    from deepalign.generation import load_vllm

    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    model = load_vllm(resolve_model_path(args.model), dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                      seed=args.seed)
    return model, tokenizer


def format_args(p: argparse.ArgumentParser) -> None:
    """``--template`` and ``--system``, as the attacks' shared config defines them."""
    add_fields(p, InferenceAttackConfig(), ["template", "system"])


def judge_args(p: argparse.ArgumentParser, default: str = "keyword") -> None:
    """Options that choose and configure a judge (see `make_judge_from_args`); judge settings left unset
    take the judge's own defaults."""
    from deepalign.judges.apply import DEFAULT_MAX_FAILURE_SHARE

    p.add_argument("--judge", default=default,
                   help="keyword | exact | llm | classifier:PATH | probe | hybrid | hybrid-read | offline (the best "
                        "offline judge) | llm-paper | strongreject | harmbench:PATH | harmbench-mistral:PATH "
                        f"| llama-guard[:PATH] (default: {default}; see docs/judges.md)")
    p.add_argument("--sees-prefill", action="store_true", help="judge prefill + response, not the response alone")
    p.add_argument("--markers", default=None, choices=["ours", "paper"],
                   help="keyword: refusal-marker preset (default ours; paper: the paper's public code's list)")
    p.add_argument("--markers-file", default=None, help="keyword: replace the refusal markers (one per line)")
    p.add_argument("--extra-markers-file", default=None, help="keyword: add refusal markers (one per line)")
    p.add_argument("--judge-model", default=None, help="llm: model name (default: $DEEPALIGN_JUDGE_MODEL)")
    p.add_argument("--judge-base-url", default=None, help="llm: endpoint (default: $DEEPALIGN_JUDGE_BASE_URL)")
    p.add_argument("--concurrency", type=int, default=None, help="llm: requests in flight")
    p.add_argument("--timeout", type=float, default=None, help="llm: per-request timeout in s")
    p.add_argument("--max-retries", type=int, default=None, help="llm: retries per item")
    p.add_argument("--cache-dir", default=None, help="llm: folder for the judgment cache")
    p.add_argument("--classifier-kind", default=None, choices=["sequence", "guard"])
    p.add_argument("--harmful-label", default=None, help="classifier: name or index of the harmful class")
    p.add_argument("--judge-batch-size", type=int, default=64, help="items per judge call (default: 64)")
    p.add_argument("--max-failure-share", type=float, default=DEFAULT_MAX_FAILURE_SHARE, metavar="SHARE",
                   help="exit with status 3 when more than this share of judgments failed "
                   f"(default: {DEFAULT_MAX_FAILURE_SHARE})")


def make_judge_from_args(args: argparse.Namespace):
    """The judge chosen by `judge_args` options."""
    from deepalign.judges.registry import ALIASES, make_judge

    options = {"sees_prefill": args.sees_prefill or None}
    spec = ALIASES.get(args.judge, args.judge)
    kind, _, path = spec.partition(":")
    if spec == "keyword":
        options.update(markers=getattr(args, "markers", None), markers_file=args.markers_file,
                       extra_markers_file=args.extra_markers_file)
    elif kind in ("llm", "llm-paper", "strongreject") or (kind == "llama-guard" and not path):
        options.update(model=args.judge_model, base_url=args.judge_base_url, concurrency=args.concurrency,
                       timeout=args.timeout, max_retries=args.max_retries, cache_dir=args.cache_dir)
    elif kind in ("probe", "hybrid", "hybrid-read", "harmbench", "harmbench-mistral"):
        options.update(batch_size=args.judge_batch_size, device=args.device, progress=not args.no_progress)
        if kind in ("probe", "hybrid", "hybrid-read") and not path:  # the default probe, built on first use
            from deepalign.pipeline.probe import ensure_probe

            spec = f"{kind}:{ensure_probe(progress=not args.no_progress)}"
    elif kind in ("classifier", "llama-guard"):
        options.update(kind=args.classifier_kind, harmful_label=args.harmful_label, batch_size=args.judge_batch_size,
                       device=args.device, trust_remote_code=args.trust_remote_code or None,
                       progress=not args.no_progress)
    return make_judge(spec, **options)


def check_max_failure_share(args: argparse.Namespace) -> None:
    """Validate ``--max-failure-share`` before any work (so a typo fails before the run, not after)."""
    if not 0 <= args.max_failure_share <= 1:
        raise DeepAlignError(f"--max-failure-share must be in [0, 1], got {args.max_failure_share}")


def judge_exit_status(summary, args: argparse.Namespace) -> int:
    """0, or 3 after printing one line on stderr when the share of failed judgments in ``summary`` (a typed
    summary or a dict with ``n`` and ``n_errors``) exceeds ``--max-failure-share``. Call it after all
    results are written."""
    from deepalign.judges.apply import check_failure_share

    try:
        check_failure_share(summary, args.max_failure_share)
    except JudgeFailureError as e:
        print(f"deepalign: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    return 0
