"""Depth diagnostics: `kl`."""

from __future__ import annotations

import argparse

from deepalign.cli.common import format_args, runtime_args


def cmd_kl(args: argparse.Namespace) -> int:
    from deepalign.depth.kl import KLConfig, run_kl

    config = KLConfig(
        template=args.template, system=args.system, base_template=args.base_template,
        batch_size=args.batch_size, max_positions=args.max_positions,
    )
    profile = run_kl(
        args.aligned, args.base, args.data, args.out, config, limit=args.limit, device=args.device,
        dtype=args.dtype, trust_remote_code=args.trust_remote_code, progress=not args.no_progress,
    )
    s = profile.summary()
    share = "no KL at all" if s["share_first_5"] is None else f"first 5 tokens hold {s['share_first_5']:.1%}"
    print(f"KL at t=1: {s['kl_position_1']:.4f} nats; {share}; 90% of the mass by t={s['position_holding_90pct']}.")
    print(f"results in {args.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("kl", help="per-position KL(aligned || base) on harmful answers (alignment depth)")
    p.add_argument("--aligned", required=True, help="aligned model: built-in name, folder, .gguf or hub id")
    p.add_argument("--base", required=True, help="base model sharing the aligned model's vocabulary")
    p.add_argument("--data", required=True, help="pairs file (prompt, response): .jsonl, .csv, .json or folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--base-template", default="chat", choices=["chat", "plain", "alpaca", "same"],
                   help="base model's prompt format: its own chat template, plain, alpaca, or the aligned ids")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-positions", type=int, default=64, help="response positions in the profile")
    p.add_argument("--limit", type=int, default=None, help="use only the first N pairs")
    format_args(p)
    runtime_args(p)
    p.set_defaults(func=cmd_kl)
