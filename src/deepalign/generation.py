"""Batched generation from token ids: ``hf`` (transformers ``generate``, default) and ``vllm`` (optional extra).

Prompts arrive as token ids (prompt + any prefill) and are never decoded and re-encoded. Each
(request id, repeat) pair samples from its own random stream, seeded from ``(seed, id, repeat)``:

- hf: a logits processor draws every row's next token by inverse-CDF sampling with that row's own
  ``random.Random`` (one uniform per row per step) and hands ``generate`` a one-hot score row, which
  its greedy step then picks. A row's draws therefore never depend on its batch-mates.
- vllm: one request per pair with ``SamplingParams(seed=...)`` (vLLM keeps a generator per request).

So a sample does not depend on which other requests share its batch or its run, and a killed run
resumes by skipping the pairs already done. What batching can still change is floating-point rounding
(left padding changes the shapes of the matmuls): on CPU in float32 that is below anything that flips
a token in our tests; in bf16 on a GPU a long generation can occasionally diverge at a near-tie.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from deepalign.chat import pad_batch
from deepalign.errors import DeepAlignError
from deepalign.io import iter_batches

BACKENDS = ("hf", "vllm")
# hf: 64 sequences decode 1.8x faster than 16 per token on a CPU (greedy outputs identical; bench/generation.py)
DEFAULT_BATCH_SIZE = {"hf": 64, "vllm": 512}
VLLM_HINT = ("the vllm backend needs vLLM: pip install 'deepalign[vllm]' on a GPU machine, or the CPU build in "
             "its own venv (make install-vllm; docs/scaling.md)")


@dataclass
class SamplingConfig:
    """Decoding settings; the defaults are the paper's evaluation sampling (Qi et al., 2025)."""

    do_sample: bool = field(default=True, metadata={"help": "Sample (True) or decode greedily (False)."})
    temperature: float = field(default=0.9, metadata={"help": "Softmax temperature (> 0) when sampling."})
    top_p: float = field(default=0.6, metadata={"help": "Nucleus mass in [0, 1]; 1 disables, 0 keeps the top token."})
    top_k: int = field(default=50, metadata={"help": "Keep the k most likely tokens; 0 disables."})
    max_new_tokens: int = field(default=512, metadata={"help": "Most tokens generated per response."})
    repeats: int = field(default=1, metadata={"help": "Independent samples per prompt."})
    seed: int = field(default=0, metadata={"help": "Seed; each (request id, repeat) derives its own stream."})
    stop_strings: tuple[str, ...] = field(
        default=(), metadata={"help": "Strings that end a response; the text is cut before the first one."}
    )

    def __post_init__(self) -> None:
        self.stop_strings = tuple(self.stop_strings)
        if self.do_sample and not self.temperature > 0:
            raise DeepAlignError(f"temperature must be > 0 when sampling (got {self.temperature}); use greedy")
        if not 0 <= self.top_p <= 1:
            raise DeepAlignError(f"top_p must be in [0, 1] (got {self.top_p})")
        if self.top_k < 0 or self.max_new_tokens < 1 or self.repeats < 1:
            raise DeepAlignError("top_k must be >= 0, max_new_tokens and repeats >= 1")
        if any(not s for s in self.stop_strings):
            raise DeepAlignError("stop strings must be non-empty")

    @classmethod
    def greedy(cls, max_new_tokens: int = 512, **kwargs) -> SamplingConfig:
        return cls(do_sample=False, max_new_tokens=max_new_tokens, **kwargs)


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt as token ids (prompt, plus prefill tokens if any), with a stable id."""

    id: str
    input_ids: list[int]


@dataclass(frozen=True)
class Generation:
    """One response. ``token_ids``: generated ids through the EOS or the token completing a stop string.
    ``text``: decoded without special tokens, cut before the first stop string. ``finished``: stopped on
    EOS or a stop string (False: hit ``max_new_tokens``)."""

    id: str
    repeat: int
    text: str
    token_ids: list[int]
    finished: bool


def request_seed(seed: int, request_id: str, repeat: int) -> int:
    """A 63-bit seed for one (request id, repeat), stable across processes and platforms."""
    digest = hashlib.sha256(f"{seed}\0{request_id}\0{repeat}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def generate(
    model,
    tokenizer,
    requests: Sequence[GenerationRequest],
    config: SamplingConfig,
    *,
    batch_size: int | None = None,
    backend: str = "hf",
    progress: bool = True,
    on_batch: Callable[[list[Generation]], None] | None = None,
    skip: Collection[tuple[str, int]] = frozenset(),
) -> list[Generation]:
    """Generate ``config.repeats`` responses per request, except the (id, repeat) pairs in ``skip``.

    ``model``: a transformers causal LM (hf), or a ``vllm.LLM`` / model path (vllm; ``tokenizer`` may then
    be None). Work is sorted by prompt length (longest first, less padding) and split into batches of
    ``batch_size`` (default 16 for hf, 512 prompts per vLLM call); ``on_batch`` gets each batch's results
    as soon as they exist. Returns the new generations in input order (request, then repeat).
    """
    if backend not in BACKENDS:
        raise DeepAlignError(f"unknown generation backend '{backend}': choose one of {', '.join(BACKENDS)}")
    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        raise DeepAlignError("generation request ids must be unique")
    if any(not r.input_ids for r in requests):
        raise DeepAlignError("a generation request has no input ids")
    order = {rid: i for i, rid in enumerate(ids)}
    work = [(r, k) for r in requests for k in range(config.repeats) if (r.id, k) not in skip]
    work.sort(key=lambda w: (-len(w[0].input_ids), order[w[0].id], w[1]))
    run_batch = _vllm_runner(model, tokenizer, config) if backend == "vllm" else _hf_runner(model, tokenizer, config)
    results: list[Generation] = []
    with tqdm(total=len(work), disable=not progress, desc="generate", unit="seq") as bar:
        for batch in iter_batches(work, batch_size or DEFAULT_BATCH_SIZE[backend]):
            gens = run_batch(batch)
            if on_batch is not None:
                on_batch(gens)
            results.extend(gens)
            bar.update(len(batch))
    return sorted(results, key=lambda g: (order[g.id], g.repeat))


# --- hf backend ---------------------------------------------------------------------------------


class RowSampler(LogitsProcessor):
    """Samples each row's next token with that row's own RNG (temperature, top-k, top-p applied first).

    Returns scores [B, V] that are 0 at the drawn token and -inf elsewhere, so ``generate`` run with
    ``do_sample=False`` takes exactly the drawn token.
    """

    def __init__(self, config: SamplingConfig, seeds: list[int]):
        self.warpers = LogitsProcessorList()
        if config.temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k > 0:
            self.warpers.append(TopKLogitsWarper(config.top_k))
        if config.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(config.top_p))
        self.rngs = [random.Random(s) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = self.warpers(input_ids, scores).float().softmax(-1)  # [B, V]
        cdf = probs.cumsum(-1)
        u = torch.tensor([[r.random()] for r in self.rngs], dtype=cdf.dtype, device=cdf.device)  # [B, 1]
        drawn = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # first token whose cdf exceeds u
        last_kept = probs.shape[1] - 1 - (probs > 0).flip(-1).int().argmax(-1, keepdim=True)  # rounding guard
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, torch.minimum(drawn, last_kept), 0.0)


def _as_list(x) -> list[int]:
    if x is None:
        return []
    return [int(i) for i in x] if isinstance(x, list | tuple) else [int(x)]


def eos_ids(model, tokenizer) -> list[int]:
    """EOS ids from the model's generation config and the tokenizer (chat models may list several)."""
    gen_cfg = getattr(model, "generation_config", None)
    found = _as_list(getattr(gen_cfg, "eos_token_id", None)) + _as_list(getattr(tokenizer, "eos_token_id", None))
    return sorted(set(found))


def _pad_id(model, tokenizer, eos: list[int]) -> int:
    for pad in (getattr(tokenizer, "pad_token_id", None), getattr(model.generation_config, "pad_token_id", None)):
        if pad is not None:
            return int(pad)
    return eos[0] if eos else 0


def _stop_cut(tokenizer, tokens: list[int], stops: tuple[str, ...]) -> tuple[list[int], str] | None:
    """If the decoded tokens contain a stop string: (shortest token prefix containing it, text before it)."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not hits:
        return None
    lo, hi = 1, len(tokens)  # smallest n whose decoded prefix contains a stop string
    while lo < hi:
        mid = (lo + hi) // 2
        prefix = tokenizer.decode(tokens[:mid], skip_special_tokens=True)
        lo, hi = (lo, mid) if any(s in prefix for s in stops) else (mid + 1, hi)
    return tokens[:lo], text[: min(hits)]


def finish(tokenizer, request_id: str, repeat: int, tokens: list[int], eos: list[int], config: SamplingConfig):
    """Trim raw generated ids after the first EOS / stop string and build the :class:`Generation`."""
    eos_pos = next((i for i, t in enumerate(tokens) if t in eos), None)
    finished = eos_pos is not None
    if finished:
        tokens = tokens[: eos_pos + 1]
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    if config.stop_strings and (cut := _stop_cut(tokenizer, tokens, config.stop_strings)) is not None:
        (tokens, text), finished = cut, True
    return Generation(id=request_id, repeat=repeat, text=text, token_ids=tokens, finished=finished)


def _hf_runner(model, tokenizer, config: SamplingConfig):
    eos = eos_ids(model, tokenizer)
    pad = _pad_id(model, tokenizer, eos)
    gen_cfg = GenerationConfig(
        max_new_tokens=config.max_new_tokens,
        do_sample=False,  # sampling is done by RowSampler, one RNG per row
        temperature=1.0,  # neutral values, so the model's own sampling defaults are not merged in
        top_p=1.0,
        top_k=50,
        eos_token_id=eos or None,
        pad_token_id=pad,
        stop_strings=list(config.stop_strings) or None,
    )

    def run(batch: list[tuple[GenerationRequest, int]]) -> list[Generation]:
        input_ids, mask = pad_batch([r.input_ids for r, _ in batch], pad, side="left")  # [B, L] each
        processors = LogitsProcessorList()
        if config.do_sample:
            processors.append(RowSampler(config, [request_seed(config.seed, r.id, k) for r, k in batch]))
        out = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=mask.to(model.device),
            generation_config=gen_cfg,
            logits_processor=processors,
            tokenizer=tokenizer if config.stop_strings else None,
        )
        new = out[:, input_ids.shape[1] :].tolist()  # [B, T] generated ids, padded after a row stops
        return [finish(tokenizer, r.id, k, toks, eos, config) for (r, k), toks in zip(batch, new, strict=True)]

    return run


# --- vllm backend -------------------------------------------------------------------------------


def vllm_sampling_kwargs(config: SamplingConfig, seed: int, stop_token_ids: Sequence[int] = ()) -> dict:
    """Keyword arguments for ``vllm.SamplingParams`` equivalent to ``config`` for one (request, repeat)."""
    kwargs = {
        "n": 1,
        "max_tokens": config.max_new_tokens,
        "seed": seed,
        "stop": list(config.stop_strings),
        "stop_token_ids": list(stop_token_ids),
        "skip_special_tokens": True,
    }
    if not config.do_sample:
        return {**kwargs, "temperature": 0.0}
    top_k = 1 if config.top_p == 0 else (config.top_k or -1)  # vLLM: top_p in (0, 1]; -1 = all tokens
    return {**kwargs, "temperature": config.temperature, "top_p": config.top_p or 1.0, "top_k": top_k}


def load_vllm(model: str | os.PathLike, *, dtype: str = "auto", trust_remote_code: bool = False, seed: int = 0,
              **llm_kwargs):
    """A ``vllm.LLM`` for a model folder or hub id, built once and reused for every :func:`generate` call.

    ``dtype`` means what it means for the hf backend: "auto" is float32 on a CPU build of vLLM and vLLM's
    own choice elsewhere (bf16 for a float32 checkpoint on a GPU); vLLM's "auto" alone would downcast a
    float32 checkpoint to bf16 on CPU too, so the two backends would not compute the same numbers.
    """
    try:
        import vllm
        from vllm.platforms import current_platform
    except ImportError as e:
        raise DeepAlignError(VLLM_HINT) from e
    if dtype == "auto" and current_platform.is_cpu():
        dtype = "float32"
    llm = vllm.LLM(model=str(model), dtype=dtype, trust_remote_code=trust_remote_code, seed=seed, **llm_kwargs)
    llm.name_or_path = str(model)  # what run metadata records, as for a transformers model
    return llm


def _vllm_runner(model, tokenizer, config: SamplingConfig):
    try:
        import vllm
        from vllm.inputs import TokensPrompt
    except ImportError as e:
        raise DeepAlignError(VLLM_HINT) from e
    if isinstance(model, str | os.PathLike):
        model = load_vllm(model)
    if tokenizer is None:
        tokenizer = model.get_tokenizer()
    eos = _as_list(getattr(tokenizer, "eos_token_id", None))

    def run(batch: list[tuple[GenerationRequest, int]]) -> list[Generation]:
        prompts = [TokensPrompt(prompt_token_ids=list(r.input_ids)) for r, _ in batch]
        params = [
            vllm.SamplingParams(**vllm_sampling_kwargs(config, request_seed(config.seed, r.id, k), eos))
            for r, k in batch
        ]
        outputs = model.generate(prompts, params, use_tqdm=False)
        gens = []
        for (r, k), o in zip(batch, outputs, strict=True):
            gen = finish(tokenizer, r.id, k, list(o.outputs[0].token_ids), eos, config)
            # vLLM knows every EOS id it stopped on (incl. generation_config's): trust its finish reason
            gens.append(replace(gen, finished=o.outputs[0].finish_reason == "stop"))
        return gens

    return run
