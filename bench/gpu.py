"""One-shot GPU benchmark: a Llama-2-7B-shaped model with random bf16 weights, three sections in one run.

    python bench/gpu.py                          # all sections, Llama-2-7B shape, bf16 on cuda (estimated 5-6 min)
    python bench/gpu.py --only kl train          # some of: kl train generate
    python bench/gpu.py --tiny --device cpu      # the same code on a tiny model of the same family (a smoke run)

Sections (bench/gpu_sections.py; each wrapped: a failure such as OOM or a missing package prints one line and
the next runs):
  kl        KL depth profile (deepalign.depth.kl.kl_profile) between two 7B-shaped models, aligned = seed S and
            base = seed S+1 (~27 GB bf16 together), 64 neutral pairs, batch 16: tokens/s through both models,
            profile / two bare batched forwards (target <= 1.15), naive per-example loop / profile (target >= 4)
  train     the real DeepAlignTrainer on one 7B-shaped model, LoRA r=16 on all linear layers (full fine-tuning
            of a 7B with AdamW would crowd the GPU: --full trains all weights), gradient checkpointing off,
            batch 4 x 512 tokens, 10 timed steps x 2 alternating rounds of SFT, constrained (cached reference)
            and stock transformers.Trainer SFT: constrained / stock Trainer SFT median step and constrained /
            SFT (targets <= 1.05), reference pass / bare forward over the same batches (target <= 1.1)
  generate  greedy generation of 128 new tokens for 16 neutral prompts with deepalign.generation.generate:
            HF batched vs one at a time tokens/s (target >= 4); then, if `import vllm` works, the same prompts
            (and 8x as many) through the vllm backend; otherwise it prints `vllm: not installed`

Model: transformers' LlamaForCausalLM with Llama-2-7B's shape (hidden 4096, 32 layers, 32 heads, intermediate
11008, 4096 positions, vocab 32000, untied head), random init with fixed seeds, built directly on the device
in the chosen dtype (bf16 on cuda, float32 on cpu). `--tiny`: hidden 64, 2 layers, 4 heads, vocab 32000.
Random weights make the outputs meaningless: only the timings are figures.

Tokenizer: a word-level tokenizer built here from the benchmark's own texts (ChatML chat template, EOS
`<|im_end|>`, pad `<|endoftext|>`), filled up with placeholder tokens to exactly the model's vocabulary
(32000). It needs no download and no cache, so the script runs on a bare offline machine. It gives one token
per word (Llama-2's BPE would give more per text); the cost is set by the token counts, which are reported.

vLLM: the model folder handed to vLLM holds the config and the tokenizer, and vLLM builds its own random
weights (`load_format="dummy"`, no 13 GB write and read); `--vllm-weights` saves the HF model's random
weights as safetensors into the folder and loads those instead. The HF model is freed before vLLM starts.

Timing: torch.cuda.synchronize() around every timed call on cuda (also inside the training step timer),
one warm-up before each measure. Prints the peak GPU memory (torch's allocator, this process) per section,
lines `<measure> = <value>   (target <= X)` as the other bench scripts do, and a final summary table;
writes everything as JSON to --out (default $OUT/gpu_bench.json when $OUT is set, else ./gpu_bench.json),
rewritten after each section so that a run cut short keeps what it measured. Exit status 1 when a section
failed, 0 otherwise (a missed target is a result, not a failure).

On the GPU machine deepalign's dependencies must be installed (pip install -e '.[vllm]' or without the
extra); deepalign itself is imported from src/ when it is not installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import deepalign  # noqa: F401
except ImportError:  # a plain checkout: import from src/
    sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
from _common import print_table  # noqa: E402
from generate import FORMS, SUBJECTS  # noqa: E402
from gpu_sections import GIB, bench_generate, bench_kl, bench_train, free, one_line, peak_gib  # noqa: E402
from kl import SENTENCES  # noqa: E402

from deepalign.data import BENIGN_PROMPTS  # noqa: E402

SECTIONS = ("kl", "train", "generate")
LLAMA2_7B = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "vocab_size": 32000,
    "rms_norm_eps": 1e-5,
}
TINY = {
    **LLAMA2_7B,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 172,
}
# settings: (default run, --tiny)
PRESETS = {
    "kl_n": (64, 16),
    "kl_batch_size": (16, 8),
    "seq_len": (512, 128),
    "train_n": (32, 8),
    "train_batch_size": (4, 4),
    "steps": (10, 2),
    "rounds": (2, 2),
    "repeats": (3, 1),
    "gen_n": (16, 4),
    "max_new_tokens": (128, 16),
    "gen_batch_size": (16, 4),
}


def build_tokenizer(vocab_size: int):
    """Word-level ChatML tokenizer over the benchmark's texts (the organism's builder), padded with
    placeholder words to exactly ``vocab_size`` ids."""
    from deepalign.organism.tokenizer import build_tokenizer as word_tokenizer

    texts = [p for group in BENIGN_PROMPTS.values() for p in group] + list(SENTENCES)
    texts += [form.format(subject) for form in FORMS for subject in SUBJECTS]
    words = sorted({w for t in texts for w in t.split()})
    missing = vocab_size - len(word_tokenizer(words))
    if missing < 0:
        raise SystemExit(f"the benchmark texts need {vocab_size - missing} tokens, more than {vocab_size}")
    tok = word_tokenizer(words + [f"<w{i}>" for i in range(missing)])
    assert len(tok) == vocab_size
    return tok


def model_config(shape: dict, tok):
    from transformers import LlamaConfig

    return LlamaConfig(
        **shape,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        architectures=["LlamaForCausalLM"],
    )


class Results:
    """Every figure of the run, with the target lines; written to ``path`` as JSON after each section."""

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.data: dict = {"meta": meta, "sections": {}, "targets": []}

    def target(self, section: str, measure: str, value: float, op: str, goal: float) -> None:
        ok = value <= goal if op == "<=" else value >= goal
        print(f"{section} {measure} = {value:.3f}   (target {op} {goal:g})", flush=True)
        self.data["targets"].append(
            {"section": section, "measure": measure, "value": value, "op": op, "target": goal, "pass": ok}
        )

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)


# --- main ------------------------------------------------------------------------------------------


def run_section(name: str, fn, args, tok, config, device, dtype, res: Results) -> bool:
    print(f"\n== {name} ==", flush=True)
    rec: dict = {"status": "running"}
    res.data["sections"][name] = rec
    free(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    error = None
    try:
        fn(args, tok, config, device, dtype, rec, res)
        rec["status"] = "ok"
    except (Exception, SystemExit) as e:  # OOM, a missing package, ...: one line, then the next section
        error = one_line(e)
        rec.update(status="error", error=error)
    free(device)  # outside the except block: the traceback (and the models it holds) is gone by now
    rec["peak_gpu_gib"] = peak_gib(device)
    rec["wall_s"] = time.perf_counter() - start
    if error:
        print(f"{name}: FAILED {error}", flush=True)
    peak = "n/a (cpu)" if rec["peak_gpu_gib"] is None else f"{rec['peak_gpu_gib']:.1f} GiB"
    print(f"{name}: peak GPU memory {peak}, {rec['wall_s']:.0f} s", flush=True)
    res.write()
    return error is None


def environment(device: torch.device, args, shape: dict, dtype: torch.dtype) -> dict:
    import transformers

    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "shape": shape,
        "tiny": args.tiny,
        "args": {k: v for k, v in vars(args).items() if k != "out"},
    }
    if device.type == "cuda":
        meta["device_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / GIB
        meta["cuda"] = torch.version.cuda
    for pkg in ("peft", "vllm"):  # installed versions, without importing vllm here
        try:
            meta[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            meta[pkg] = None
    return meta


def default_out() -> Path:
    return Path(os.environ["OUT"], "gpu_bench.json") if os.environ.get("OUT") else Path("gpu_bench.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    ap.add_argument("--tiny", action="store_true", help="a tiny model of the same family (smoke run, e.g. on cpu)")
    ap.add_argument("--device", default=None, help="cuda (default when available), cuda:1, cpu")
    ap.add_argument(
        "--dtype",
        default=None,
        choices=["bfloat16", "float16", "float32"],
        help="default: bfloat16 on cuda, float32 on cpu",
    )
    ap.add_argument("--seed", type=int, default=0, help="model seed (the KL base model uses seed + 1)")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: $OUT/gpu_bench.json or ./)")
    ap.add_argument("--full", action="store_true", help="train: all weights instead of LoRA")
    ap.add_argument(
        "--vllm-weights",
        action="store_true",
        help="save the random HF weights as safetensors and load them in vLLM (default: dummy weights)",
    )
    ap.add_argument("--vllm-memory", type=float, default=0.7, help="vLLM gpu_memory_utilization")
    ap.add_argument("--vllm-eager", action="store_true", help="vLLM enforce_eager (faster startup, no CUDA graphs)")
    for name, (full, tiny) in PRESETS.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {full} (--tiny: {tiny})")
    args = ap.parse_args(argv)
    for name, (full, tiny) in PRESETS.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in a captured log as it happens
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny --device cpu for a smoke run")
    if device.type == "cpu" and not args.tiny:
        raise SystemExit("the 7B-shaped model needs a GPU: pass --tiny for a smoke run on cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    shape = TINY if args.tiny else LLAMA2_7B
    tok = build_tokenizer(shape["vocab_size"])
    config = model_config(shape, tok)
    out = args.out or default_out()
    res = Results(out, environment(device, args, shape, dtype))
    label = "tiny Llama" if args.tiny else "Llama-2-7B shape"
    print(
        f"{label}: {shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, vocab {shape['vocab_size']}, "
        f"{res.data['meta']['dtype']}, random weights (seed {args.seed}); device {device} "
        f"({res.data['meta']['device_name']}); results -> {out}",
        flush=True,
    )
    start = time.perf_counter()
    benches = {"kl": bench_kl, "train": bench_train, "generate": bench_generate}
    ok = True
    for name in SECTIONS:
        if name in args.only:
            ok &= run_section(name, benches[name], args, tok, config, device, dtype, res)
    res.data["meta"]["wall_s"] = time.perf_counter() - start
    res.write()

    print("\n== summary ==")
    rows = []
    for name in args.only:
        rec = res.data["sections"][name]
        peak = "-" if rec.get("peak_gpu_gib") is None else f"{rec['peak_gpu_gib']:.1f}"
        targets = [t for t in res.data["targets"] if t["section"] == name]
        for t in targets:
            rows.append(
                [
                    name,
                    t["measure"],
                    f"{t['value']:.3g}",
                    f"{t['op']} {t['target']:g}",
                    "pass" if t["pass"] else "FAIL",
                    peak,
                ]
            )
        figures = {
            "kl": [("KL profile tokens/s (both models)", "profile_tokens_per_s")],
            "train": [("SFT step (ms)", "sft_step_s"), ("constrained step (ms)", "constrained_step_s")],
            "generate": [
                ("HF batched tokens/s", "hf_batched_tokens_per_s"),
                ("HF one-at-a-time tokens/s", "hf_single_tokens_per_s"),
            ],
        }[name]
        for measure, key in figures:
            if key in rec:
                value = rec[key] * 1000 if key.endswith("_step_s") else rec[key]
                rows.append([name, measure, f"{value:.4g}", "-", "-", peak])
        if name == "generate" and "vllm" in rec:
            v = rec["vllm"]
            value = f"{v['tokens_per_s']:.4g}" if v.get("status") == "ok" else v.get("status", "-")
            rows.append([name, "vLLM tokens/s (same prompts)", value, "-", "-", "-"])
        if rec["status"] != "ok":
            rows.append([name, "(section)", "-", "-", f"ERROR {rec.get('error', '')}"[:120], peak])
    print_table(["section", "measure", "measured", "target", "result", "peak GiB"], rows)
    print(f"total {res.data['meta']['wall_s']:.0f} s; results written to {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
