"""The ``deepalign`` command: each subcommand is a thin shell over one library function.

User errors (bad files, unknown models, offline hub ids) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from deepalign.errors import DeepAlignError


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default: auto)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _format_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--template", default="chat", choices=["chat", "plain", "alpaca"], help="prompt template")
    p.add_argument("--system", default=None, help="system prompt (default: the template's own)")


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


def cmd_organism_build(args: argparse.Namespace) -> int:
    from deepalign.organism.build import OrganismConfig, build_organism

    build_organism(args.out, OrganismConfig(seed=args.seed), progress=not args.no_progress)
    print(f"organism written to {args.out}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from deepalign.reproduce import reproduce

    print(reproduce(args.out, seed=args.seed, progress=not args.no_progress))
    print(f"report: {args.out}/report.md")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from deepalign.judges import judge_file, make_judge

    options = {"sees_prefill": args.sees_prefill or None}
    if args.judge == "keyword":
        options.update(markers_file=args.markers_file, extra_markers_file=args.extra_markers_file)
    elif args.judge == "llm":
        options.update(model=args.judge_model, base_url=args.judge_base_url, concurrency=args.concurrency,
                       timeout=args.timeout, max_retries=args.max_retries, cache_dir=args.cache_dir)
    elif args.judge.startswith("classifier:"):
        options.update(kind=args.classifier_kind, harmful_label=args.harmful_label, batch_size=args.batch_size,
                       device=args.device, trust_remote_code=args.trust_remote_code or None,
                       progress=not args.no_progress)
    judge = make_judge(args.judge, **options)
    s = judge_file(args.results, args.out, judge, batch_size=args.batch_size)
    asr = "n/a" if s["asr"] is None else f"{s['asr']:.1%}"
    print(f"{judge.name}: ASR {asr} ({s['n_harmful']}/{s['n_judged']} judged, {s['n_errors']} errors)")
    print(f"results in {args.out}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from deepalign.chat import ChatFormat, encode_prompt
    from deepalign.data import load_prompts
    from deepalign.generation import GenerationRequest, SamplingConfig, generate
    from deepalign.models import load_model, load_tokenizer, resolve_model_path
    from deepalign.results import ResultsWriter, write_run_metadata

    config = SamplingConfig(
        do_sample=not args.greedy, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        max_new_tokens=args.max_new_tokens, repeats=args.repeats, seed=args.seed, stop_strings=tuple(args.stop),
    )
    records = load_prompts(args.prompts, limit=args.limit)
    fmt = ChatFormat(template=args.template, system=args.system)
    if args.backend == "vllm":
        model, tokenizer = resolve_model_path(args.model), load_tokenizer(args.model)
    else:
        model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device,
                                      trust_remote_code=args.trust_remote_code)
    write_run_metadata(args.out, command="generate", model=args.model, prompts=str(args.prompts),
                       format=fmt.describe(), sampling=vars(config), backend=args.backend)
    by_id = {r.id: r for r in records}
    requests = [GenerationRequest(r.id, encode_prompt(tokenizer, r.prompt, fmt)) for r in records]
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


def build_parser() -> argparse.ArgumentParser:
    from deepalign import __version__

    parser = argparse.ArgumentParser(
        prog="deepalign", description="Measure, deepen and protect the depth of a model's safety alignment."
    )
    parser.add_argument("--version", action="version", version=f"deepalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    _format_args(p)
    _runtime_args(p)
    p.set_defaults(func=cmd_kl)

    org = sub.add_parser("organism", help="the model organism: a tiny model on a harmless synthetic world")
    org_sub = org.add_subparsers(dest="organism_command", required=True, metavar="ACTION")
    p = org_sub.add_parser("build", help="train and save the base and aligned organisms and their data")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_organism_build)

    p = sub.add_parser("reproduce", help="reproduce the paper's depth findings on the model organism (resumable)")
    p.add_argument("--out", default="runs/reproduce", help="run folder (rerun the same command to resume)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("generate", help="generate responses to prompts (batched, seeded, resumable)")
    p.add_argument("--model", required=True, help="built-in name, folder, .gguf or hub id")
    p.add_argument("--prompts", required=True, help="prompts file (id, prompt): jsonl/csv/json/folder or packaged set")
    p.add_argument("--out", required=True, help="output folder (generations.jsonl, meta.json); rerun resumes")
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"], help="vllm needs deepalign[vllm] and a GPU")
    p.add_argument("--greedy", action="store_true", help="greedy decoding (ignores temperature/top-p/top-k)")
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--top-p", type=float, default=0.6)
    p.add_argument("--top-k", type=int, default=50, help="0 disables")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--repeats", type=int, default=1, help="samples per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable); text is cut before it")
    p.add_argument("--batch-size", type=int, default=None, help="default: 16 (hf), 512 (vllm)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    _format_args(p)
    _runtime_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("judge", help="judge responses in a JSONL file (id, prompt, response, prefill) for harm")
    p.add_argument("results", help="JSONL with id, prompt, response and optional prefill fields")
    p.add_argument("--judge", default="keyword", help="keyword | exact | llm | classifier:PATH (default: keyword)")
    p.add_argument("--out", required=True, help="output folder (judged.jsonl, summary.json; rerun resumes)")
    p.add_argument("--sees-prefill", action="store_true", help="judge prefill + response, not the response alone")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--markers-file", default=None, help="keyword: replace the refusal markers (one per line)")
    p.add_argument("--extra-markers-file", default=None, help="keyword: add refusal markers (one per line)")
    p.add_argument("--judge-model", default=None, help="llm: model name (default: $DEEPALIGN_JUDGE_MODEL)")
    p.add_argument("--judge-base-url", default=None, help="llm: endpoint (default: $DEEPALIGN_JUDGE_BASE_URL)")
    p.add_argument("--concurrency", type=int, default=None, help="llm: requests in flight (default: 8)")
    p.add_argument("--timeout", type=float, default=None, help="llm: per-request timeout in s (default: 60)")
    p.add_argument("--max-retries", type=int, default=None, help="llm: retries per item (default: 5)")
    p.add_argument("--cache-dir", default=None, help="llm: folder for the judgment cache")
    p.add_argument("--classifier-kind", default=None, choices=["sequence", "guard"])
    p.add_argument("--harmful-label", default=None, help="classifier: name or index of the harmful class")
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_judge)

    p = sub.add_parser("data", help="check a data source and print its first records")
    p.add_argument("source", help="file (.jsonl/.csv/.json), dataset folder, hf:NAME[:SPLIT], or a packaged set")
    p.add_argument("--kind", default="prompts", choices=["prompts", "pairs", "triplets", "chats"])
    p.add_argument("--field", action="append", default=[], metavar="NAME=COLUMN", help="read NAME from COLUMN")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--show", type=int, default=3, help="records to print")
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "no_progress", False):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except DeepAlignError as e:
        print(f"deepalign: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepalign: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
