"""Depth diagnostics and inference-time attacks: `kl`, `prefill`, `refusal-prefix`, `decoding-attack`, `gcg`."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepalign.cli.common import (
    check_max_failure_share,
    format_args,
    judge_args,
    judge_exit_status,
    load_for_backend,
    make_judge_from_args,
    runtime_args,
)
from deepalign.cli.options import add_field, add_fields, config_from
from deepalign.depth.decoding import DecodingConfig
from deepalign.depth.gcg import GCGAttackConfig
from deepalign.depth.kl import KLConfig
from deepalign.depth.prefill import PrefillConfig
from deepalign.depth.refusal_prefix import RefusalPrefixConfig
from deepalign.generation import SamplingConfig


def cmd_kl(args: argparse.Namespace) -> int:
    from deepalign.pipeline.kl import run_kl

    profile = run_kl(
        args.aligned, args.base, args.data, args.out, config_from(args, KLConfig), limit=args.limit,
        device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code, progress=not args.no_progress,
    )
    s = profile.summary()
    share = "no KL at all" if s["share_first_5"] is None else f"first 5 tokens hold {s['share_first_5']:.1%}"
    print(f"KL at t=1: {s['kl_position_1']:.4f} nats; {share}; 90% of the mass by t={s['position_holding_90pct']}.")
    print(f"results in {args.out}")
    return 0


# --- the attacks: shared options and one runner ------------------------------------------------


def _sampling(args: argparse.Namespace, **fixed) -> SamplingConfig:
    knobs = {"do_sample": not getattr(args, "greedy", False)}
    knobs.update({k: getattr(args, k) for k in ("temperature", "top_p", "top_k") if hasattr(args, k)})
    return SamplingConfig(**{**knobs, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
                             "seed": args.seed, **fixed})


def _judge(args: argparse.Namespace):
    """The judge options' judge; `exact` reads the organism world next to the data file when there is one."""
    world = Path(args.data).parent / "world.json"
    if args.judge == "exact" and world.is_file():
        from deepalign.judges.exact import ExactJudge

        return ExactJudge(world_path=world, sees_prefill=args.sees_prefill)
    return make_judge_from_args(args)


def _run(args: argparse.Namespace, kind: str, config, run) -> int:
    """Validate, load data, judge and model, run ``run(model, tok, records, config, judge, out)``, print the table."""
    from deepalign.data import load_records
    from deepalign.io import check_out_dir

    check_out_dir(args.out)
    check_max_failure_share(args)
    records = load_records(args.data, kind, limit=args.limit)
    judge = _judge(args)
    model, tokenizer = load_for_backend(args)
    summary = run(model, tokenizer, records, config, judge, args.out, source=str(args.data),
                  progress=not args.no_progress)
    print((Path(args.out) / "table.md").read_text(), end="")
    print(f"judge: {judge.name} (sees prefill: {judge.sees_prefill}); results in {args.out}")
    return judge_exit_status(summary, args)


def _attack_config(args: argparse.Namespace, cls, **values):
    return config_from(args, cls, sampling=_sampling(args), **values)


def cmd_prefill(args: argparse.Namespace) -> int:
    from deepalign.pipeline.attacks import run_prefill

    return _run(args, "pairs", _attack_config(args, PrefillConfig), run_prefill)


def cmd_refusal_prefix(args: argparse.Namespace) -> int:
    from deepalign.pipeline.attacks import run_refusal_prefix

    prefixes = {"prefixes": tuple(args.prefix)} if args.prefix else {}
    return _run(args, "prompts", _attack_config(args, RefusalPrefixConfig, **prefixes), run_refusal_prefix)


def cmd_decoding_attack(args: argparse.Namespace) -> int:
    from deepalign.pipeline.attacks import run_decoding_attack

    neutral = DecodingConfig().sampling  # length, repeats and seed from the options; the knobs from the grid
    sampling = _sampling(args, do_sample=neutral.do_sample, temperature=neutral.temperature,
                         top_p=neutral.top_p, top_k=neutral.top_k)
    config = config_from(args, DecodingConfig, sampling=sampling)
    return _run(args, "prompts", config, run_decoding_attack)


def cmd_gcg(args: argparse.Namespace) -> int:
    from deepalign.pipeline.attacks import run_gcg

    return _run(args, "pairs" if args.answer_tokens else "prompts", _attack_config(args, GCGAttackConfig), run_gcg)


def _attack_parser(sub, name: str, help: str, data_help: str, config, *, knobs: bool = True,
                   backend: bool = True):
    """A subcommand with the options every attack shares; defaults from ``config`` (an attack config)."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--model", required=True, help="model: built-in name, folder, .gguf or hub id")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--out", required=True, help="output folder (rows.jsonl, summary.json, table.md, a .png, "
                   "meta.json); rerun the same command to resume")
    if knobs:
        p.add_argument("--greedy", action="store_true", help="greedy decoding instead of the paper's sampling")
        add_fields(p, config.sampling, ["temperature", "top_p", "top_k"])
    add_fields(p, config.sampling, ["max_new_tokens", "repeats", "seed"])
    add_fields(p, config, ["batch_size", "label"] + (["backend"] if backend else []))
    p.set_defaults(batch_size=None)  # the backend's default (InferenceAttackConfig)
    p.add_argument("--limit", type=int, default=None, help="use only the first N records")
    format_args(p)
    judge_args(p)
    runtime_args(p)
    return p


def register(sub) -> None:
    p = sub.add_parser("kl", help="per-position KL(aligned || base) on harmful answers (alignment depth)")
    p.add_argument("--aligned", required=True, help="aligned model: built-in name, folder, .gguf or hub id")
    p.add_argument("--base", required=True, help="base model sharing the aligned model's vocabulary")
    p.add_argument("--data", required=True, help="pairs file (prompt, response): .jsonl, .csv, .json or folder")
    p.add_argument("--out", required=True, help="output folder")
    add_fields(p, KLConfig(), ["base_template", "batch_size", "max_positions"])
    p.add_argument("--limit", type=int, default=None, help="use only the first N pairs")
    add_fields(p, KLConfig(), ["template", "system"])
    runtime_args(p)
    p.set_defaults(func=cmd_kl)

    pairs_help = "pairs (prompt, harmful answer): .jsonl/.csv/.json/folder (aliases: goal, target, output, ...)"
    prompts_help = "prompts: .jsonl/.csv/.json/folder or a packaged set (advbench, harmbench, donotanswer)"
    p = _attack_parser(sub, "prefill", "prefilling attack: force the first k answer tokens, judge the rest",
                       pairs_help, PrefillConfig())
    add_fields(p, PrefillConfig(), ["ks", "on_short"], ks="--tokens")
    p.set_defaults(func=cmd_prefill)

    p = _attack_parser(sub, "refusal-prefix", "harmfulness of a (base) model with and without refusal prefixes",
                       prompts_help, RefusalPrefixConfig())
    defaults = ", ".join(repr(x) for x in RefusalPrefixConfig().prefixes)
    p.add_argument("--prefix", action="append", default=[],
                   help=f"refusal prefix forced as the start of the response (repeatable; default: {defaults})")
    p.set_defaults(func=cmd_refusal_prefix)

    decoding = DecodingConfig()
    p = _attack_parser(sub, "decoding-attack", "sample under a grid of decoding settings; a prompt is broken if "
                       "any setting yields a harmful answer", prompts_help, decoding, knobs=False)
    add_field(p, decoding, "grid")
    for name in ("temperatures", "top_ps", "top_ks"):
        add_field(p, decoding, name, nargs="*")
    add_field(p, decoding, "greedy")
    p.set_defaults(func=cmd_decoding_attack)

    gcg = GCGAttackConfig()
    p = _attack_parser(sub, "gcg", "GCG adversarial suffixes (nanoGCG), then answers with and without them",
                       prompts_help + "; pairs with --answer-tokens", gcg, backend=False)
    add_fields(p, gcg, ["steps", "search_width", "topk", "n_replace", "suffix_init", "target", "answer_tokens"])
    p.set_defaults(func=cmd_gcg)
