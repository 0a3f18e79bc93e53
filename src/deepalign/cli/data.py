"""Data in and out: `data`, `generate`, `judge`."""

from __future__ import annotations

import argparse

from deepalign.cli.common import (
    check_max_failure_share,
    format_args,
    judge_args,
    judge_exit_status,
    load_for_backend,
    make_judge_from_args,
    runtime_args,
)
from deepalign.cli.options import add_fields
from deepalign.data.schemas import KINDS
from deepalign.errors import DeepAlignError
from deepalign.generation import BACKENDS, DEFAULT_BATCH_SIZE, SamplingConfig


def cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from deepalign.chat import ChatFormat, encode_prompt
    from deepalign.data import load_prompts
    from deepalign.generation import GenerationRequest, generate
    from deepalign.io import ResultsWriter, check_out_dir
    from deepalign.meta import write_run_metadata

    check_out_dir(args.out)
    if args.batch_size is not None and args.batch_size < 1:
        raise DeepAlignError(f"--batch-size must be >= 1, got {args.batch_size}")
    config = SamplingConfig(
        do_sample=not args.greedy, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        max_new_tokens=args.max_new_tokens, repeats=args.repeats, seed=args.seed, stop_strings=tuple(args.stop),
    )
    records = load_prompts(args.prompts, limit=args.limit)
    fmt = ChatFormat(template=args.template, system=args.system)
    model, tokenizer = load_for_backend(args)
    by_id = {r.id: r for r in records}
    requests = [GenerationRequest(r.id, encode_prompt(tokenizer, r.prompt, fmt)) for r in records]
    write_run_metadata(args.out, command="generate", model=args.model, prompts=str(args.prompts),
                       format=fmt.describe(), sampling=vars(config), backend=args.backend,
                       trust_remote_code=args.trust_remote_code)
    with ResultsWriter(Path(args.out) / "generations.jsonl") as writer:
        done = {(rid, int(k)) for rid, _, k in (d.rpartition("#r") for d in writer.done)}

        def write(gens) -> None:
            for g in gens:
                writer.write({"id": f"{g.id}#r{g.repeat}", "prompt_id": g.id, "repeat": g.repeat,
                              "prompt": by_id[g.id].prompt, "response": g.text, "finished": g.finished,
                              "n_tokens": len(g.token_ids)})

        generate(model, tokenizer, requests, config, batch_size=args.batch_size, backend=args.backend,
                 progress=not args.no_progress, on_batch=write, skip=done)
        print(f"{len(writer.done)} responses in {writer.path}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from deepalign.io import check_out_dir
    from deepalign.judges.apply import judge_file
    from deepalign.results.validation import format_asr

    if args.compare:
        from deepalign.cli.judges import cmd_compare

        return cmd_compare(args)
    check_out_dir(args.out)
    check_max_failure_share(args)
    judge = make_judge_from_args(args)
    s = judge_file(args.results, args.out, judge, batch_size=args.judge_batch_size)
    asr = "n/a" if s.asr is None else f"{s.asr:.1%}"
    print(f"{judge.name}: ASR {asr} ({s.n_harmful}/{s.n_judged} judged, {s.n_errors} failed)")
    print(format_asr(s.asr, s.low, s.high, judge.name, s.validation))
    print(f"results in {args.out}")
    return judge_exit_status(s, args)


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from deepalign.io import atomic_write_json
    from deepalign.judges.apply import read_judge_rows
    from deepalign.results.interop import export_rows

    rows = read_judge_rows(Path(args.rows))
    atomic_write_json(args.out, export_rows(rows, args.format))
    print(f"{len(rows)} rows as {args.format} JSON in {args.out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from deepalign.results.schemas import validate_file

    for path in args.files:
        print(f"{path}: a valid {validate_file(path)} file")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from deepalign.data import load_records

    fields = {}
    for item in args.field:
        name, sep, column = item.partition("=")
        if not sep:
            raise DeepAlignError(f"--field expects NAME=COLUMN, got {item!r}")
        fields[name] = column
    records = load_records(args.source, args.kind, fields=fields or None, limit=args.limit)
    for record in records[: args.show]:
        print(json.dumps(dataclasses.asdict(record), ensure_ascii=False))
    print(f"{len(records)} {args.kind} records OK")
    return 0


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate responses to prompts (batched, seeded, resumable)")
    p.add_argument("--model", required=True, help="built-in name, folder, .gguf or hub id")
    p.add_argument("--prompts", required=True, help="prompts file (id, prompt): jsonl/csv/json/folder or packaged set")
    p.add_argument("--out", required=True, help="output folder (generations.jsonl, meta.json); rerun resumes")
    p.add_argument("--backend", default=BACKENDS[0], choices=BACKENDS, help="vllm needs vLLM (docs/scaling.md)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding (ignores temperature/top-p/top-k)")
    add_fields(p, SamplingConfig(), ["temperature", "top_p", "top_k", "max_new_tokens", "repeats", "seed"])
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable); text is cut before it")
    batch = ", ".join(f"{n} ({b})" for b, n in DEFAULT_BATCH_SIZE.items())
    p.add_argument("--batch-size", type=int, default=None, help=f"default: {batch}")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    format_args(p)
    runtime_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("judge", help="judge responses in a JSONL file (id, prompt, response, prefill) for harm")
    p.add_argument("results", help="JSONL with id, prompt, response and optional prefill fields, or a "
                   "HarmBench / JailbreakBench-style .json file")
    p.add_argument("--out", required=True, help="output folder (judged.jsonl, summary.json; rerun resumes)")
    judge_args(p)
    p.add_argument("--compare", nargs="+", default=None, metavar="JUDGE",
                   help="judge the file with each of these judges (e.g. keyword keyword:paper probe) and print their "
                        "pairwise agreement and Cohen's kappa (out/compare.md)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_judge)

    p = sub.add_parser("export", help="attack rows (rows.jsonl, judged.jsonl) as HarmBench/JailbreakBench JSON")
    p.add_argument("rows", help="JSONL rows with id, prompt, response (and prefill, verdict fields)")
    p.add_argument("--format", default="harmbench", choices=["harmbench", "jailbreakbench"])
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("validate", help="check card.json / claims.json files against their schemas")
    p.add_argument("files", nargs="+", help="card.json (deepalign audit) or claims.json (deepalign reproduce)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("data", help="check a data source and print its first records")
    p.add_argument("source", help="file (.jsonl/.csv/.json), dataset folder, hf:NAME[:SPLIT], or a packaged set")
    p.add_argument("--kind", default="prompts", choices=list(KINDS))
    p.add_argument("--field", action="append", default=[], metavar="NAME=COLUMN", help="read NAME from COLUMN")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--show", type=int, default=3, help="records to print")
    p.set_defaults(func=cmd_data)
