"""One-shot GPU benchmark: a Llama-2-7B-shaped model with random bf16 weights, three sections in one run.

    python bench/gpu.py                          # all sections, Llama-2-7B shape, bf16 on cuda (estimated 5-6 min)
    python bench/gpu.py --only kl train          # some of: kl train generate
    python bench/gpu.py --tiny --device cpu      # the same code on a tiny model of the same family (a smoke run)

Sections (each wrapped: a failure such as OOM or a missing package prints one line and the next runs):
  kl        KL depth profile (deepalign.depth.kl.kl_profile) between two 7B-shaped models, aligned = seed S and
            base = seed S+1 (~27 GB bf16 together), 64 neutral pairs, batch 16: tokens/s through both models,
            profile / two bare batched forwards (target <= 1.15), naive per-example loop / profile (target >= 4)
  train     the real DeepAlignTrainer on one 7B-shaped model, LoRA r=16 on all linear layers (full fine-tuning
            of a 7B with AdamW would crowd the GPU: --full trains all weights), gradient checkpointing off,
            batch 4 x 512 tokens, 10 timed steps x 2 alternating rounds of SFT, constrained (cached reference)
            and stock transformers.Trainer SFT: constrained / SFT median step (target <= 1.05), reference
            pass / bare forward over the same batches (target <= 1.1)
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
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import deepalign  # noqa: F401
except ImportError:  # a plain checkout: import from src/
    sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import print_table  # noqa: E402
from generate import FORMS, SUBJECTS, make_prompts  # noqa: E402
from kl import SENTENCES, make_pairs  # noqa: E402
from train import StepTimer, make_examples, make_trainer, median_step_times  # noqa: E402

from deepalign.chat import encode_prompt, pad_batch  # noqa: E402
from deepalign.data import BENIGN_PROMPTS  # noqa: E402
from deepalign.depth.kl import KLConfig, build_items, kl_profile  # noqa: E402
from deepalign.generation import GenerationRequest, SamplingConfig, generate  # noqa: E402
from deepalign.train.trainer import (  # noqa: E402
    compute_reference_logps,
)

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
GIB = 2**30


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


def build_model(config, seed: int, device: torch.device, dtype: torch.dtype):
    """Random-init LlamaForCausalLM, allocated and initialised directly on ``device`` in ``dtype``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.to(device=device, dtype=dtype).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, inference: bool = True) -> tuple[object, float]:
    """``(fn(), seconds)``, synchronized before and after on cuda; under inference_mode unless told not to."""
    sync(device)
    start = time.perf_counter()
    if inference:
        with torch.inference_mode():
            result = fn()
    else:
        result = fn()
    sync(device)
    return result, time.perf_counter() - start


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


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


# --- kl --------------------------------------------------------------------------------------------


def bare_forward(aligned, base, items, order, batch_size, pad_id, device) -> None:
    """Two plain batched forwards (full logits) over the same batches as the profile."""
    for start in range(0, len(order), batch_size):
        batch = [items[i] for i in order[start : start + batch_size]]
        for model, prompts in ((aligned, [b.aligned_prompt for b in batch]), (base, [b.base_prompt for b in batch])):
            ids, mask = pad_batch([p + b.response for p, b in zip(prompts, batch, strict=True)], pad_id)
            model(input_ids=ids.to(device), attention_mask=mask.to(device))


def per_example_loop(aligned, base, items, device) -> None:
    """The naive baseline: one example at a time, full logits, full float32 log-softmax."""
    for it in items:
        la = F.log_softmax(
            aligned(torch.tensor([it.aligned_prompt + it.response], device=device)).logits[0].float(), -1
        )
        lb = F.log_softmax(base(torch.tensor([it.base_prompt + it.response], device=device)).logits[0].float(), -1)
        pa, pb, t = len(it.aligned_prompt) - 1, len(it.base_prompt) - 1, len(it.response)
        (la[pa : pa + t].exp() * (la[pa : pa + t] - lb[pb : pb + t])).sum(-1).cpu()


def bench_kl(args, tok, config, device, dtype, rec: dict, res: Results) -> None:
    (aligned, base), rec["build_s"] = timed(
        lambda: (build_model(config, args.seed, device, dtype), build_model(config, args.seed + 1, device, dtype)),
        device,
        inference=False,
    )
    rec["params_per_model"] = n_params(aligned)
    kl_cfg = KLConfig(batch_size=args.kl_batch_size, base_template="same")
    items = build_items(tok, tok, make_pairs(args.kl_n), kl_cfg)
    order = sorted(range(len(items)), key=lambda i: (len(items[i].aligned_prompt) + len(items[i].response), i))
    pad = tok.pad_token_id
    n_tokens = sum(len(it.aligned_prompt) + len(it.response) for it in items)
    rec.update(pairs=len(items), tokens_per_model=n_tokens, batch_size=args.kl_batch_size)
    print(f"kl: {len(items)} pairs, {n_tokens} tokens per model, batch {args.kl_batch_size}", flush=True)

    def profile(cfg) -> None:
        kl_profile(aligned, base, items, cfg, pad_id=pad, progress=False)

    warm = order[: args.kl_batch_size]
    timed(lambda: bare_forward(aligned, base, items, warm, args.kl_batch_size, pad, device), device)  # warm-up
    timed(lambda: kl_profile(aligned, base, [items[i] for i in warm], kl_cfg, pad_id=pad, progress=False), device)
    timed(lambda: per_example_loop(aligned, base, items[:2], device), device)
    _, rec["bare_s"] = timed(lambda: bare_forward(aligned, base, items, order, args.kl_batch_size, pad, device), device)
    _, rec["profile_s"] = timed(lambda: profile(kl_cfg), device)
    _, rec["loop_s"] = timed(lambda: per_example_loop(aligned, base, items, device), device)
    _, rec["batch1_profile_s"] = timed(lambda: profile(KLConfig(batch_size=1, base_template="same")), device)
    rec["profile_tokens_per_s"] = 2 * n_tokens / rec["profile_s"]  # tokens through both models
    rec["bare_tokens_per_s"] = 2 * n_tokens / rec["bare_s"]
    rec["profile_over_bare"] = rec["profile_s"] / rec["bare_s"]
    rec["loop_over_profile"] = rec["loop_s"] / rec["profile_s"]
    rec["batch1_over_profile"] = rec["batch1_profile_s"] / rec["profile_s"]
    print_table(
        ["measure", "seconds", "tokens/s (both models)"],
        [
            ["two bare batched forwards", rec["bare_s"], rec["bare_tokens_per_s"]],
            ["KL profile (deepalign)", rec["profile_s"], rec["profile_tokens_per_s"]],
            ["per-example loop (naive)", rec["loop_s"], 2 * n_tokens / rec["loop_s"]],
            ["KL profile with batch size 1", rec["batch1_profile_s"], 2 * n_tokens / rec["batch1_profile_s"]],
        ],
    )
    res.target("kl", "profile / bare", rec["profile_over_bare"], "<=", 1.15)
    res.target("kl", "loop / profile", rec["loop_over_profile"], ">=", 4)
    print(f"kl batch-1 profile / profile = {rec['batch1_over_profile']:.2f}", flush=True)


# --- train -----------------------------------------------------------------------------------------


class SyncStepTimer(StepTimer):
    """bench/train.py's step timer, synchronizing the GPU at both ends so a step's kernels count in full."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device

    def on_step_begin(self, args, state, control, **kwargs):
        sync(self.device)
        super().on_step_begin(args, state, control, **kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        super().on_step_end(args, state, control, **kwargs)


def bench_train(args, tok, config, device, dtype, rec: dict, res: Results) -> None:
    from transformers import PrinterCallback

    model, rec["build_s"] = timed(lambda: build_model(config, args.seed, device, dtype), device, inference=False)
    examples = make_examples(tok, args.train_n, args.seq_len)
    pad = tok.pad_token_id
    bs = args.train_batch_size
    batches = [examples[i : i + bs] for i in range(0, len(examples), bs)]
    padded = [pad_batch([e["input_ids"] for e in b], pad) for b in batches]
    mode = "full" if args.full else "LoRA r=16 all-linear"
    rec.update(mode=mode, batch_size=bs, seq_len=args.seq_len, examples=len(examples), gradient_checkpointing=False)
    print(f"train: {mode}, batch {bs} x {args.seq_len} tokens, {len(examples)} examples", flush=True)

    def bare(ids, mask) -> None:
        model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)

    def reference(batch) -> None:
        compute_reference_logps(model, batch, batch_size=len(batch), pad_id=pad, device=device)

    model.eval()
    timed(partial(bare, *padded[0]), device)  # warm-up
    timed(partial(reference, batches[0]), device)
    t_fwd = t_ref = 0.0
    for _ in range(args.repeats):  # batch by batch, alternating
        for batch, (ids, mask) in zip(batches, padded, strict=True):
            t_fwd += timed(partial(bare, ids, mask), device)[1]
            t_ref += timed(partial(reference, batch), device)[1]
    rec["forward_s"], rec["reference_s"] = t_fwd / args.repeats, t_ref / args.repeats
    rec["reference_over_forward"] = rec["reference_s"] / rec["forward_s"]
    res.target("train", "reference pass / forward", rec["reference_over_forward"], "<=", 1.1)

    if not args.full:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    rec["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tmp = tempfile.mkdtemp(prefix="deepalign-gpu-bench-")  # fresh reference cache: the constrained run computes it
    build = partial(make_trainer, model=model, tokenizer=tok, examples=examples, out_dir=tmp, batch_size=bs,
                    steps=args.steps, use_cpu=device.type == "cpu")

    kinds = ("sft", "constrained", "stock")
    timers = {k: SyncStepTimer(device) for k in kinds}
    trainers = {}
    for k in kinds:  # the constrained one fingerprints the weights and computes its reference here
        trainers[k], rec[f"{k}_trainer_setup_s"] = timed(partial(build, k, timers[k]), device, inference=False)
        trainers[k].remove_callback(PrinterCallback)
    step = median_step_times(trainers, timers, args.rounds)
    for k in kinds:
        rec[f"{k}_step_s"] = step[k]
        rec[f"{k}_steps_timed"] = len(timers[k].times)
    rec["sft_train_tokens_per_s"] = bs * args.seq_len / step["sft"]
    rec["constrained_over_sft"] = step["constrained"] / step["sft"]
    rec["sft_over_stock"] = step["sft"] / step["stock"]
    del trainers
    shutil.rmtree(tmp, ignore_errors=True)
    print_table(
        ["measure", "ms", "samples"],
        [
            ["SFT step (DeepAlignTrainer)", step["sft"] * 1000, len(timers["sft"].times)],
            ["constrained step (cached reference)", step["constrained"] * 1000, len(timers["constrained"].times)],
            ["SFT step (stock transformers.Trainer)", step["stock"] * 1000, len(timers["stock"].times)],
            [f"bare forward over {len(examples)} examples (mean)", rec["forward_s"] * 1000, args.repeats],
            [f"reference pass over {len(examples)} examples (mean)", rec["reference_s"] * 1000, args.repeats],
            ["constrained trainer setup (fingerprint + reference)", rec["constrained_trainer_setup_s"] * 1000, 1],
        ],
    )
    print(f"train SFT tokens/s = {rec['sft_train_tokens_per_s']:.0f}", flush=True)
    res.target("train", "constrained / sft step", rec["constrained_over_sft"], "<=", 1.05)
    print(f"train sft (ours) / stock Trainer = {rec['sft_over_stock']:.3f}", flush=True)


# --- generate --------------------------------------------------------------------------------------


def bench_generate(args, tok, config, device, dtype, rec: dict, res: Results) -> None:
    model, rec["build_s"] = timed(lambda: build_model(config, args.seed, device, dtype), device, inference=False)
    requests = [GenerationRequest(f"b{i}", encode_prompt(tok, p)) for i, p in enumerate(make_prompts(args.gen_n))]
    sampling = SamplingConfig.greedy(args.max_new_tokens)
    rec.update(prompts=len(requests), max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch_size)
    print(f"generate: {len(requests)} prompts, {args.max_new_tokens} new tokens, batch {args.gen_batch_size}")

    def run(batch_size: int):
        return generate(model, tok, requests, sampling, batch_size=batch_size, progress=False)

    timed(lambda: generate(model, tok, requests[:2], SamplingConfig.greedy(4), batch_size=2, progress=False), device)
    batched, t_batched = timed(lambda: run(args.gen_batch_size), device)
    single, t_single = timed(lambda: run(1), device)
    n_batched = sum(len(g.token_ids) for g in batched)
    n_single = sum(len(g.token_ids) for g in single)
    rec.update(
        hf_batched_s=t_batched,
        hf_batched_tokens=n_batched,
        hf_batched_tokens_per_s=n_batched / t_batched,
        hf_single_s=t_single,
        hf_single_tokens=n_single,
        hf_single_tokens_per_s=n_single / t_single,
        identical_responses=sum(b.token_ids == s.token_ids for b, s in zip(batched, single, strict=True)),
    )
    rec["batched_over_single"] = rec["hf_batched_tokens_per_s"] / rec["hf_single_tokens_per_s"]
    print_table(
        ["mode", "seconds", "tokens", "tokens/s"],
        [
            [f"HF batched ({args.gen_batch_size})", t_batched, n_batched, rec["hf_batched_tokens_per_s"]],
            ["HF one at a time", t_single, n_single, rec["hf_single_tokens_per_s"]],
        ],
    )
    print(f"generate identical responses (batched vs one at a time): {rec['identical_responses']}/{len(requests)}")
    res.target("generate", "batched / one-at-a-time tokens/s", rec["batched_over_single"], ">=", 4)
    rec["hf_peak_gpu_gib"] = peak_gib(device)
    res.write()  # the HF figures are kept even if vLLM hangs past the machine's time limit

    # vLLM, in its own guard: its failure keeps the HF figures
    vrec: dict = {}
    rec["vllm"] = vrec
    folder = tempfile.mkdtemp(prefix="deepalign-gpu-vllm-")
    try:
        model.config.save_pretrained(folder)
        tok.save_pretrained(folder)
        if args.vllm_weights and _vllm_available() and device.type == "cuda":
            _, vrec["save_weights_s"] = timed(lambda: model.save_pretrained(folder), device, inference=False)
    finally:
        model = None  # frees the weights (the closures above see None from here on)
        free(device)
    try:
        bench_vllm(args, folder, requests, sampling, device, dtype, vrec)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if vrec.get("status") == "ok":
        rec["vllm_over_hf_batched"] = vrec["tokens_per_s"] / rec["hf_batched_tokens_per_s"]
        print_table(
            ["mode", "seconds", "tokens", "tokens/s"],
            [
                ["vLLM (same prompts)", vrec["s"], vrec["tokens"], vrec["tokens_per_s"]],
                [
                    f"vLLM ({vrec['large_prompts']} prompts)",
                    vrec["large_s"],
                    vrec["large_tokens"],
                    vrec["large_tokens_per_s"],
                ],
            ],
        )
        print(f"generate vllm / hf batched tokens/s = {rec['vllm_over_hf_batched']:.2f}", flush=True)


def _vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def bench_vllm(args, folder: str, requests, sampling, device, dtype, vrec: dict) -> None:
    """vLLM tokens/s on the same prompts, then on 8x as many; fills ``vrec`` (status, figures or error)."""
    try:
        import vllm
    except ImportError:
        vrec["status"] = "not installed"
        print("vllm: not installed", flush=True)
        return
    except Exception as e:  # noqa: BLE001 - installed but broken (e.g. built for another torch or CUDA)
        vrec.update(status="error", error=f"import failed: {_one_line(e)}")
        print(f"vllm: FAILED {vrec['error']}", flush=True)
        return
    vrec["version"] = getattr(vllm, "__version__", None)
    if device.type != "cuda":
        vrec["status"] = "skipped (needs cuda)"
        print("vllm: skipped (needs cuda)", flush=True)
        return
    llm = None
    try:
        load_format = "auto" if "save_weights_s" in vrec else "dummy"
        vrec.update(load_format=load_format, gpu_memory_utilization=args.vllm_memory, enforce_eager=args.vllm_eager)
        llm, vrec["startup_s"] = timed(
            lambda: vllm.LLM(
                model=folder,
                tokenizer=folder,
                dtype=str(dtype).removeprefix("torch."),
                load_format=load_format,
                seed=args.seed,
                gpu_memory_utilization=args.vllm_memory,
                max_model_len=2048,
                enforce_eager=args.vllm_eager,
            ),
            device,
            inference=False,
        )
        free_b, total_b = torch.cuda.mem_get_info(device)
        vrec["device_used_gib"] = (total_b - free_b) / GIB  # vLLM's engine runs in another process
        generate(llm, None, requests[:2], SamplingConfig.greedy(4), backend="vllm", progress=False)  # warm-up
        gens, vrec["s"] = timed(
            lambda: generate(llm, None, requests, sampling, backend="vllm", batch_size=len(requests), progress=False),
            device,
            inference=False,
        )
        vrec["tokens"] = sum(len(g.token_ids) for g in gens)
        vrec["tokens_per_s"] = vrec["tokens"] / vrec["s"]
        large = [GenerationRequest(f"v{i}", r.input_ids) for i, r in enumerate(requests * 8)]
        gens, vrec["large_s"] = timed(
            lambda: generate(llm, None, large, sampling, backend="vllm", batch_size=len(large), progress=False),
            device,
            inference=False,
        )
        vrec["large_prompts"] = len(large)
        vrec["large_tokens"] = sum(len(g.token_ids) for g in gens)
        vrec["large_tokens_per_s"] = vrec["large_tokens"] / vrec["large_s"]
        vrec["status"] = "ok"
        print(
            f"vllm {vrec['version']}: {vrec['tokens_per_s']:.0f} tokens/s on the same prompts, "
            f"{vrec['large_tokens_per_s']:.0f} tokens/s on {len(large)} prompts "
            f"(startup {vrec['startup_s']:.0f} s, load_format={load_format})",
            flush=True,
        )
    except Exception as e:  # noqa: BLE001 - one line and go on
        vrec["status"] = "error"
        vrec["error"] = _one_line(e)
        print(f"vllm: FAILED {vrec['error']}", flush=True)
    finally:
        llm = None  # shuts vLLM's engine down
        free(device)


# --- main ------------------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


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
        error = _one_line(e)
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
