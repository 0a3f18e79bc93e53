"""Training: `augment`, `train`, `finetune`.

`train` takes every ``DeepAlignConfig`` option (transformers ``TrainingArguments`` plus objective and
augmentation options) and the LoRA flags (``LoraArguments``, turned into a PEFT ``LoraConfig``) under their
own names, e.g. ``--objective constrained --use-lora --learning_rate 2e-5``. Several devices:
``accelerate launch --config_file configs/accelerate/ddp.yaml $(which deepalign) train ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json

from deepalign.chat import TEMPLATES
from deepalign.cli.common import format_args, judge_args, make_judge_from_args, runtime_args
from deepalign.cli.options import add_field, add_fields, config_from, dataclass_parser
from deepalign.errors import DeepAlignError
from deepalign.results.validation import format_asr
from deepalign.train.augment import AugmentConfig
from deepalign.train.config import DeepAlignConfig, LoraArguments

KINDS = ("auto", "triplets", "chats", "pairs")
TRIPLET_TOKENS = 128  # new tokens per generated harmful answer when making triplets


def _load_training_data(source: str, kind: str):
    from deepalign.data import load_training_records

    return load_training_records(source, kind)


def cmd_augment(args: argparse.Namespace) -> int:
    from pathlib import Path

    from deepalign.chat import ChatFormat
    from deepalign.data import load_prompts, load_triplets
    from deepalign.generation import SamplingConfig
    from deepalign.io import atomic_write_jsonl
    from deepalign.meta import write_run_metadata
    from deepalign.pipeline.builtins import load_model, load_tokenizer
    from deepalign.pipeline.triplets import make_triplets
    from deepalign.train.augment import SafetyRecoveryDataset

    if (args.prompts is None) == (args.triplets is None):
        raise DeepAlignError("pass exactly one of --prompts (make triplets) or --triplets (preview them)")
    out = Path(args.out)
    fmt = ChatFormat(args.template, args.system)
    if args.prompts is not None:
        if args.base_model is None:
            raise DeepAlignError("--prompts needs --base-model (its generations are the harmful answers)")
        base, base_tok = load_model(args.base_model, dtype=args.dtype, device=args.device,
                                    trust_remote_code=args.trust_remote_code)
        aligned = aligned_tok = None
        if args.model is not None:
            aligned, aligned_tok = load_model(args.model, dtype=args.dtype, device=args.device,
                                              trust_remote_code=args.trust_remote_code)
        triplets = make_triplets(
            load_prompts(args.prompts, limit=args.limit), base, base_tok,
            base_format=ChatFormat(args.base_template, None) if args.base_template else fmt,
            aligned_model=aligned, aligned_tokenizer=aligned_tok, aligned_format=fmt,
            judge=make_judge_from_args(args) if aligned is not None else None,
            sampling=SamplingConfig.greedy(args.max_new_tokens, seed=args.seed), seed=args.seed,
            progress=not args.no_progress,
        )
        atomic_write_jsonl(out / "triplets.jsonl", [dataclasses.asdict(t) for t in triplets])
        tokenizer = aligned_tok or base_tok
        print(f"{len(triplets)} triplets in {out / 'triplets.jsonl'}")
    else:
        triplets = load_triplets(args.triplets, limit=args.limit)
        tokenizer = load_tokenizer(args.model or "organism-aligned", trust_remote_code=args.trust_remote_code)
    config = config_from(args, AugmentConfig, anchors_per_safety=0)
    dataset = SafetyRecoveryDataset(tokenizer, triplets, fmt, config)
    path = dataset.write_preview(out / "preview.jsonl", args.n_preview)
    write_run_metadata(out, command="augment", model=args.model, base_model=args.base_model, prompts=args.prompts,
                       triplets=args.triplets, format=fmt.describe(), augment=dataclasses.asdict(config),
                       trust_remote_code=args.trust_remote_code)
    print(f"{args.n_preview} augmented examples in {path}")
    return 0


@contextlib.contextmanager
def _processes(backend: str | None = None):
    """accelerate's process state for a training command (``backend``: the ``--ddp_backend``, gloo for
    DeepSpeed on CPU processes): yields it, and destroys the process group at the end, error or not."""
    import os

    from accelerate import PartialState

    launched = "LOCAL_RANK" in os.environ  # a backend means something only under a launcher
    state = PartialState(**({"backend": backend} if backend and launched else {}))
    try:
        yield state
    finally:
        state.destroy_process_group()


def _resolve(state, name: str) -> str:
    """The model folder of ``name``; a first-use build (organism, SmolLM2) runs on the main process first."""
    from deepalign.pipeline.builtins import resolve_model_path

    with state.main_process_first():
        return resolve_model_path(name)


def cmd_train(args: argparse.Namespace) -> int:
    from deepalign.data import load_pairs
    from deepalign.train.run import train

    with _processes(args.ddp_backend) as state:
        config = config_from(args, DeepAlignConfig, output_dir=args.output_dir or args.out,
                             disable_tqdm=args.disable_tqdm or args.no_progress)
        peft_config = config_from(args, LoraArguments).peft_config()
        records = _load_training_data(args.data, args.kind)
        anchors = load_pairs(args.anchors) if args.anchors else None
        out = train(_resolve(state, args.model), records, config, anchors=anchors, out_dir=args.out,
                    peft_config=peft_config)
        if state.is_main_process:
            print(f"model written to {out}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    with _processes(args.ddp_backend) as state:
        s = _finetune(args, state)
        if not state.is_main_process:
            return 0
    _print_finetune(s, args.out)
    return 0


def _finetune(args: argparse.Namespace, state):
    from deepalign.pipeline.attack_plan import FinetuneAttackConfig, target_defaults
    from deepalign.pipeline.finetune import finetune_attack

    auto = args.beta_schedule == "auto"
    config = config_from(args, FinetuneAttackConfig, auto_beta=auto)
    defaults = target_defaults(_resolve(state, args.model))
    overrides = {k: v for k, v in {
        "learning_rate": args.learning_rate, "num_train_epochs": args.epochs, "max_steps": args.max_steps,
        "per_device_train_batch_size": args.batch_size, "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "beta_schedule": None if auto else args.beta_schedule, "model_dtype": args.model_dtype,
        "template": args.template, "system": args.system, "seed": args.seed, "use_cpu": args.device == "cpu" or None,
        "save_steps": args.save_steps,
        "bf16": args.bf16, "fp16": args.fp16, "ddp_backend": args.ddp_backend,
    }.items() if v is not None}
    training = defaults.training_args(args.recipe, f"{args.out}/model", **overrides)
    return finetune_attack(args.model, args.recipe, args.objective, args.out, config, training=training,
                           peft_config=config_from(args, LoraArguments).peft_config(), progress=not args.no_progress)


def _print_finetune(s, out: str) -> None:
    def line(stage: str) -> str:
        ev = getattr(s, stage)
        if ev is None:
            return ""
        parts = [format_asr(ev.asr.asr, ev.asr.low, ev.asr.high, s.judge.get("judge", "unknown"), s.validation)]
        if ev.asr_trigger is not None:
            parts.append(f"with trigger {ev.asr_trigger.asr:.1%}")
        if ev.task is not None:
            parts.append(f"{ev.task.metric} {ev.task.score:.3f}")
        return f"{stage}: " + ", ".join(parts)

    print("\n".join(x for x in (line("initial"), line("after")) if x))
    print(json.dumps({"steps": s.steps, "n_train": s.n_train, "n_eval": s.n_eval}))
    print(f"results in {out}")


def _preset_reparser(train_parser: argparse.ArgumentParser):
    """``(parser, argv) -> args`` parsed again with ``--preset``'s values as the train command's defaults."""
    def reparse(parser: argparse.ArgumentParser, argv: list[str] | None, args: argparse.Namespace):
        from deepalign.train.recipes import preset

        train_parser.set_defaults(**preset(args.preset).values)
        return parser.parse_args(argv)

    return reparse


def register(sub) -> None:
    from deepalign.pipeline.attack_plan import FinetuneAttackConfig
    from deepalign.train.config import OBJECTIVES
    from deepalign.train.recipes import PRESETS, RECIPES

    augment = AugmentConfig()
    p = sub.add_parser("augment", help="make triplets from prompts and/or preview safety-recovery examples")
    p.add_argument("--out", required=True, help="output folder (triplets.jsonl, preview.jsonl, meta.json)")
    p.add_argument("--triplets", default=None, help="triplets file (prompt, response, refusal) to preview")
    p.add_argument("--prompts", default=None, help="harmful prompts (file or packaged set) to make triplets from")
    p.add_argument("--base-model", default=None, help="--prompts: model whose answers are the harmful answers")
    p.add_argument("--base-template", default=None, choices=TEMPLATES,
                   help="--prompts: the base model's prompt template (default: --template)")
    p.add_argument("--model", default=None,
                   help="aligned model: its own refusals (--prompts) and its tokenizer (default organism-aligned)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts or triplets")
    p.add_argument("--max-new-tokens", type=int, default=TRIPLET_TOKENS,
                   help=f"--prompts: tokens per generated answer (default: {TRIPLET_TOKENS})")
    p.add_argument("--n-preview", type=int, default=20, help="augmented examples written to preview.jsonl")
    add_fields(p, augment, ["p_plain", "max_prefix", "seed"])
    format_args(p)
    judge_args(p)
    runtime_args(p)
    p.set_defaults(func=cmd_augment)

    p = sub.add_parser(
        "train", help="fine-tune any model: augmentation (triplets), SFT or constrained, full or LoRA",
        description="Options after the first group are DeepAlignConfig's (transformers TrainingArguments plus "
        "--objective, --beta_schedule, --p_plain, ...) and LoraArguments' (--use_lora, --lora_r, ...), with - or _ "
        "in their names.", parents=[dataclass_parser(DeepAlignConfig, LoraArguments)],
    )
    p.add_argument("--model", required=True, help="built-in name, folder, .gguf or hub id")
    p.add_argument("--data", required=True, help="triplets (augmentation), chats or pairs: file or dataset folder")
    p.add_argument("--kind", default="auto", choices=KINDS, help="record kind of --data (default: detect)")
    p.add_argument("--anchors", default=None, help="utility anchor pairs (prompt, response) mixed with triplets")
    p.add_argument("--out", required=True, help="output folder: model or adapter, training_log.jsonl, meta.json")
    p.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="named recipe whose values become the defaults (options given here still win): "
                   + "; ".join(f"{x.name}: {x.description}" for x in PRESETS.values()))
    p.add_argument("--no-progress", action="store_true", help="hide progress bars and log lines")
    p.set_defaults(func=cmd_train, reparse=_preset_reparser(p))

    attack = FinetuneAttackConfig()
    p = sub.add_parser("finetune", help="run a fine-tuning attack (SFT or constrained) and measure ASR")
    p.add_argument("--model", required=True, help="built-in name, folder or hub id (organism: built-in data)")
    p.add_argument("--recipe", required=True, choices=RECIPES)
    p.add_argument("--objective", default=OBJECTIVES[0], choices=OBJECTIVES)
    p.add_argument("--out", required=True, help="output folder (model/, eval.jsonl, summary.json); rerun resumes")
    add_fields(p, attack, ["data", "eval_data", "eval_prompts", "n_train", "n_eval", "n_safety", "safety_data",
                           "trigger", "persona", "system_prompt", "metric", "judge", "max_new_tokens", "repeats",
                           "greedy"])
    add_field(p, attack, "eval_initial", "--no-eval-initial")
    add_fields(p, attack, ["eval_batch_size"])
    p.add_argument("--learning-rate", type=float, default=None, help="default: 2e-5 (paper) / 3e-4 (organism)")
    p.add_argument("--epochs", type=float, default=None, help="default: 25 attacks, 3 benign / organism 10, 3")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--batch-size", type=int, default=None, help="per device (default 8 x 8 accumulation / 16)")
    p.add_argument("--gradient-accumulation-steps", type=int, default=None)
    p.add_argument("--save-steps", type=int, default=None, help="checkpoint every N optimizer steps into "
                   "OUT/model/checkpoint-N; a rerun of a killed run continues from the newest (default 10 / 20)")
    p.add_argument("--beta-schedule", default=None,
                   help="constrained: beta_1,beta_2,... (default the paper's 0.5,2,2,2,2,0.1), or auto: the paper's "
                   "with beta_1 raised to what the model's measured refusal margin needs (see deepalign audit)")
    add_fields(p, LoraArguments(), ["use_lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"])
    p.add_argument("--model-dtype", default=None, help="float32, bfloat16 or float16 weights for training")
    p.add_argument("--bf16", action="store_const", const=True, default=None,
                   help="train under bf16 autocast (must match accelerate launch's mixed_precision)")
    p.add_argument("--fp16", action="store_const", const=True, default=None,
                   help="train under fp16 autocast (must match accelerate launch's mixed_precision)")
    p.add_argument("--ddp-backend", default=None,
                   help="torch.distributed backend under accelerate launch (gloo: DeepSpeed on CPU, docs/scaling.md)")
    add_fields(p, attack, ["seed"])
    format_args(p)
    p.add_argument("--device", default="auto", help="cpu forces CPU training (default: what accelerate finds)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_finetune)
