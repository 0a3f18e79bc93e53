"""Alignment of a helpful-only model: `align sft` (refusal SFT) and `align dpo` (DPO through TRL)."""

from __future__ import annotations

import argparse
import json

from deepalign.cli.options import add_fields, config_from
from deepalign.train.preference import PreferenceConfig, RefusalSFTConfig


def _load(args: argparse.Namespace):
    from deepalign.data import load_pairs

    harmful = load_pairs(args.harmful, limit=args.limit)
    benign = load_pairs(args.benign) if args.benign else []
    return harmful, benign


def cmd_align(args: argparse.Namespace) -> int:
    from deepalign.io import check_out_dir
    from deepalign.pipeline.builtins import resolve_model_path
    from deepalign.train.preference import dpo_align, refusal_sft

    check_out_dir(args.out)
    harmful, benign = _load(args)
    model = resolve_model_path(args.model)
    progress = not args.no_progress
    if args.method == "dpo":
        result = dpo_align(model, harmful, benign, args.out, config_from(args, PreferenceConfig), progress=progress)
    else:
        result = refusal_sft(model, harmful, benign, args.out, config_from(args, RefusalSFTConfig), progress=progress)
    print(json.dumps(result.to_dict()))
    print(f"aligned model written to {args.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("align", help="align a helpful-only model: refusal SFT, or DPO (TRL) with refusals preferred")
    methods = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    for method, config, what in (
        ("sft", RefusalSFTConfig(), "refusal SFT: harmful prompts -> our refusals, plus benign anchor pairs"),
        ("dpo", PreferenceConfig(), "DPO: our refusal preferred to the harmful answer's first tokens, plus benign "
                                    "anchors (the answer preferred to a refusal)"),
    ):
        m = methods.add_parser(method, help=what)
        m.add_argument("--model", required=True, help="start model: built-in name, folder or hub id")
        m.add_argument("--harmful", required=True, help="harmful (prompt, response) pairs: the base's own answers "
                       "(dpo: the rejected side; sft: only the prompts are used)")
        m.add_argument("--benign", default=None, help="benign (prompt, response) pairs: the base's own answers")
        m.add_argument("--limit", type=int, default=None, help="use only the first N harmful pairs")
        m.add_argument("--out", required=True, help="output folder: the merged model (and OUT.adapter beside it)")
        add_fields(m, config, [f.name for f in config.__dataclass_fields__.values()])
        m.add_argument("--no-progress", action="store_true")
        m.set_defaults(func=cmd_align)
