"""The sections of bench/gpu.py: kl, train and generate (with vLLM when it imports); see its docstring.

Each section takes ``(args, tok, config, device, dtype, rec, res)``: it fills ``rec`` with its figures and
records its targets in ``res``. Timing is ``_common.timed`` synchronized on the device.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from functools import partial

import torch
from _common import print_table, timed
from generate import make_prompts
from kl import bare_forward, make_pairs, per_example_loop
from train import StepTimer, make_examples, make_trainer, median_step_times, reference_and_forward
from transformers import PrinterCallback

from deepalign.chat import encode_prompt
from deepalign.depth.kl import KLConfig, build_items, kl_profile
from deepalign.generation import GenerationRequest, SamplingConfig, generate

GIB = 2**30


def sync_of(device: torch.device):
    """A synchronize of ``device`` for the timers (None on cpu)."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None


def build_model(config, seed: int, device: torch.device, dtype: torch.dtype):
    """Random-init LlamaForCausalLM, allocated and initialised directly on ``device`` in ``dtype``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.to(device=device, dtype=dtype).eval()


def built(config, seed: int, device: torch.device, dtype: torch.dtype, rec: dict):
    """:func:`build_model`, its build time recorded in ``rec["build_s"]``."""
    model, rec["build_s"] = timed(lambda: build_model(config, seed, device, dtype), sync=sync_of(device))
    return model


def free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


# --- kl --------------------------------------------------------------------------------------------


def bench_kl(args, tok, config, device, dtype, rec: dict, res) -> None:
    sync = sync_of(device)
    (aligned, base), rec["build_s"] = timed(
        lambda: (build_model(config, args.seed, device, dtype), build_model(config, args.seed + 1, device, dtype)),
        sync=sync,
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
    timed(lambda: bare_forward(aligned, base, items, warm, args.kl_batch_size, pad, device), sync=sync,
          inference=True)  # warm-up
    timed(lambda: kl_profile(aligned, base, [items[i] for i in warm], kl_cfg, pad_id=pad, progress=False), sync=sync,
          inference=True)
    timed(lambda: per_example_loop(aligned, base, items[:2], device), sync=sync, inference=True)
    _, rec["bare_s"] = timed(lambda: bare_forward(aligned, base, items, order, args.kl_batch_size, pad, device),
                             sync=sync, inference=True)
    _, rec["profile_s"] = timed(lambda: profile(kl_cfg), sync=sync, inference=True)
    _, rec["loop_s"] = timed(lambda: per_example_loop(aligned, base, items, device), sync=sync, inference=True)
    _, rec["batch1_profile_s"] = timed(lambda: profile(KLConfig(batch_size=1, base_template="same")), sync=sync,
                                       inference=True)
    rec["profile_tokens_per_s"] = 2 * n_tokens / rec["profile_s"]  # tokens through both models
    rec["bare_tokens_per_s"] = 2 * n_tokens / rec["bare_s"]
    rec["profile_over_bare"] = rec["profile_s"] / rec["bare_s"]
    rec["loop_over_profile"] = rec["loop_s"] / rec["profile_s"]
    rec["batch1_over_profile"] = rec["batch1_profile_s"] / rec["profile_s"]
    timings = {"two bare batched forwards": rec["bare_s"], "KL profile (deepalign)": rec["profile_s"],
               "per-example loop (naive)": rec["loop_s"], "KL profile with batch size 1": rec["batch1_profile_s"]}
    print_table(["measure", "seconds", "tokens/s (both models)"],
                [[name, t, 2 * n_tokens / t] for name, t in timings.items()])
    res.target("kl", "profile / bare", rec["profile_over_bare"], "<=", 1.15)
    res.target("kl", "loop / profile", rec["loop_over_profile"], ">=", 4)
    print(f"kl batch-1 profile / profile = {rec['batch1_over_profile']:.2f}", flush=True)


# --- train ---------------------------------------------------------------------------------------


def bench_train(args, tok, config, device, dtype, rec: dict, res) -> None:
    examples = make_examples(tok, args.train_n, args.seq_len)
    model = built(config, args.seed, device, dtype, rec)
    sync = sync_of(device)
    bs = args.train_batch_size
    mode = "full" if args.full else "LoRA r=16 all-linear"
    rec.update(mode=mode, batch_size=bs, seq_len=args.seq_len, examples=len(examples), gradient_checkpointing=False)
    print(f"train: {mode}, batch {bs} x {args.seq_len} tokens, {len(examples)} examples", flush=True)
    rec["forward_s"], rec["reference_s"] = reference_and_forward(model, examples, bs, tok.pad_token_id, args.repeats,
                                                                 device=device, sync=sync)
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
    timers = {k: StepTimer(sync) for k in kinds}
    trainers = {}
    for k in kinds:  # the constrained one fingerprints the weights and computes its reference here
        trainers[k], rec[f"{k}_trainer_setup_s"] = timed(partial(build, k, timers[k]), sync=sync)
        trainers[k].remove_callback(PrinterCallback)
    step = median_step_times(trainers, timers, args.rounds)
    for k in kinds:
        rec[f"{k}_step_s"] = step[k]
        rec[f"{k}_steps_timed"] = len(timers[k].times)
    rec["sft_train_tokens_per_s"] = bs * args.seq_len / step["sft"]
    rec["constrained_over_sft"] = step["constrained"] / step["sft"]
    rec["constrained_over_stock"] = step["constrained"] / step["stock"]
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
    res.target("train", "constrained / stock Trainer sft step", rec["constrained_over_stock"], "<=", 1.05)
    res.target("train", "constrained / sft step", rec["constrained_over_sft"], "<=", 1.05)
    print(f"train sft (ours) / stock Trainer = {rec['sft_over_stock']:.3f}", flush=True)


# --- generate ------------------------------------------------------------------------------------


def bench_generate(args, tok, config, device, dtype, rec: dict, res) -> None:
    model = built(config, args.seed, device, dtype, rec)
    sync = sync_of(device)
    requests = [GenerationRequest(f"b{i}", encode_prompt(tok, p)) for i, p in enumerate(make_prompts(args.gen_n))]
    sampling = SamplingConfig.greedy(args.max_new_tokens)
    rec.update(prompts=len(requests), max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch_size)
    print(f"generate: {len(requests)} prompts, {args.max_new_tokens} new tokens, batch {args.gen_batch_size}")

    def run(batch_size: int):
        return generate(model, tok, requests, sampling, batch_size=batch_size, progress=False)

    warm = SamplingConfig.greedy(4)
    timed(lambda: generate(model, tok, requests[:2], warm, batch_size=2, progress=False), sync=sync, inference=True)
    batched, t_batched = timed(lambda: run(args.gen_batch_size), sync=sync, inference=True)
    single, t_single = timed(lambda: run(1), sync=sync, inference=True)
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
            _, vrec["save_weights_s"] = timed(lambda: model.save_pretrained(folder), sync=sync)
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
    sync = sync_of(device)
    try:
        import vllm
    except ImportError:
        vrec["status"] = "not installed"
        print("vllm: not installed", flush=True)
        return
    except Exception as e:  # noqa: BLE001 - installed but broken (e.g. built for another torch or CUDA)
        vrec.update(status="error", error=f"import failed: {one_line(e)}")
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
            sync=sync,
        )
        free_b, total_b = torch.cuda.mem_get_info(device)
        vrec["device_used_gib"] = (total_b - free_b) / GIB  # vLLM's engine runs in another process
        generate(llm, None, requests[:2], SamplingConfig.greedy(4), backend="vllm", progress=False)  # warm-up
        gens, vrec["s"] = timed(
            lambda: generate(llm, None, requests, sampling, backend="vllm", batch_size=len(requests), progress=False),
            sync=sync,
        )
        vrec["tokens"] = sum(len(g.token_ids) for g in gens)
        vrec["tokens_per_s"] = vrec["tokens"] / vrec["s"]
        large = [GenerationRequest(f"v{i}", r.input_ids) for i, r in enumerate(requests * 8)]
        gens, vrec["large_s"] = timed(
            lambda: generate(llm, None, large, sampling, backend="vllm", batch_size=len(large), progress=False),
            sync=sync,
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
        vrec["error"] = one_line(e)
        print(f"vllm: FAILED {vrec['error']}", flush=True)
    finally:
        llm = None  # shuts vLLM's engine down
        free(device)


