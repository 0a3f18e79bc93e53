"""GCG adversarial suffixes (Zou et al. 2023) found with nanoGCG, then generation and judging with them.

For each prompt, nanoGCG optimizes the tokens of a suffix appended to the user turn so that the
response starts with a target string; the target is "Sure, here is how to {prompt}" by default, a fixed
text, or the first N tokens of the row's own harmful answer (for vocabularies without "Sure, here is",
like the model organism's). The loss is nanoGCG's: mean cross-entropy of the target tokens [nats].

Token layout (as nanoGCG builds it): ``before`` = the chat template up to the suffix (a BOS added by the
tokenizer if it adds one), ``suffix``, ``after`` = the rest of the template through the assistant header,
``target``.
Generation uses exactly ``before + suffix + after`` as token ids. Each prompt's optimization is a row
of ``suffixes.jsonl`` (resumable per prompt); then every prompt is answered with and without its suffix
(settings ``gcg`` and ``none``, :func:`gcg_items`) by ``deepalign.pipeline.attacks.run_gcg``.

nanoGCG 0.2.x's prefix KV cache does not work with transformers 5 caches, so it is turned off.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from deepalign.chat import ChatFormat, answer_length, encode_example, encode_prompt, require_chat_template
from deepalign.depth.attack import AttackItem, InferenceAttackConfig, check_known_tokens, record_line
from deepalign.errors import DataError, DeepAlignError
from deepalign.generation import request_seed
from deepalign.io import ResultsWriter

OPTIM_PLACEHOLDER = "{optim_str}"
INIT_TOKENS = ("x", "!", ".", "the")  # suffix init: 20 copies of the first single known token (nanoGCG: "x")
SETTINGS = ("none", "gcg")


@dataclass
class GCGAttackConfig(InferenceAttackConfig):
    """Options of the GCG attack (plus :class:`InferenceAttackConfig`; the prompt template must be ``chat``).
    Budget defaults are nanoGCG's; on a CPU use e.g. 20 steps, search width 64."""

    steps: int = field(default=250, metadata={"help": "GCG optimization steps per prompt."})
    search_width: int = field(default=512, metadata={"help": "Candidate suffixes evaluated per step."})
    topk: int = field(default=256, metadata={"help": "Top-k tokens by gradient considered per position."})
    n_replace: int = field(default=1, metadata={"help": "Suffix positions changed per candidate."})
    suffix_init: str | None = field(
        default=None, metadata={"help": "Initial suffix (None: 20 copies of 'x', or '!', '.', 'the' if unknown)."}
    )
    target: str = field(
        default="Sure, here is how to {prompt}",
        metadata={"help": "Target text; '{prompt}' is replaced by the prompt (first letter lower-cased, final "
                  "punctuation dropped)."},
    )
    answer_tokens: int = field(
        default=0, metadata={"help": "> 0: the target is the first N tokens of each row's harmful answer (pairs)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.template != "chat":
            raise DeepAlignError("gcg formats prompts with the model's chat template, as nanoGCG does: --template chat")
        if self.backend != "hf":
            raise DeepAlignError("gcg needs gradients through a transformers model: backend hf only")
        if min(self.steps, self.search_width, self.topk, self.n_replace) < 1 or self.answer_tokens < 0:
            raise DeepAlignError("steps, search width, topk and n_replace must be >= 1, answer tokens >= 0")
        if not self.answer_tokens and not self.target.strip():
            raise DeepAlignError("the GCG target is empty")


@dataclass(frozen=True)
class GCGLayout:
    """Token ids around the suffix, as nanoGCG tokenizes them: ``before`` + suffix + ``after`` + ``target``."""

    before: list[int]
    after: list[int]
    target: list[int]


def messages_for(prompt: str, fmt: ChatFormat) -> list[dict]:
    """The conversation nanoGCG optimizes: the user turn is ``"{prompt} {optim_str}"``."""
    system = [{"role": "system", "content": fmt.system}] if fmt.system is not None else []
    return [*system, {"role": "user", "content": f"{prompt} {OPTIM_PLACEHOLDER}"}]


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer itself puts a BOS token first (Llama) rather than leaving it to the template."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


class _NanoGCGTokenizer:
    """The tokenizer as nanoGCG sees it: the same, except that its BOS text is hidden when the tokenizer
    does not add a BOS itself. nanoGCG deletes every occurrence of the BOS text from the rendered template
    (expecting the tokenizer to add one BOS back), which for ChatML tokenizers whose BOS is
    ``<|im_start|>`` (SmolLM2) would delete every turn header."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.bos_token = tokenizer.bos_token if adds_bos(tokenizer) else None

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)


def gcg_layout(tokenizer, prompt: str, target: str, fmt: ChatFormat) -> GCGLayout:
    """Split the rendered conversation at the suffix as nanoGCG does (seeing :class:`_NanoGCGTokenizer`)."""
    text = tokenizer.apply_chat_template(messages_for(prompt, fmt), tokenize=False, add_generation_prompt=True)
    if adds_bos(tokenizer) and text.startswith(tokenizer.bos_token):
        text = text.replace(tokenizer.bos_token, "")
    parts = text.split(OPTIM_PLACEHOLDER)
    if len(parts) != 2:
        raise DeepAlignError(f"the prompt or system prompt contains {OPTIM_PLACEHOLDER!r}, which GCG reserves")
    ids = lambda s, special: tokenizer(s, add_special_tokens=special)["input_ids"]  # noqa: E731
    return GCGLayout(ids(parts[0], True), ids(parts[1], False), ids(target, False))


def derive_target(tokenizer, record, config: GCGAttackConfig, source: str | None = None, index: int = 0) -> str:
    """The target of one record: its answer's first ``answer_tokens`` tokens, or ``config.target`` filled in."""
    if config.answer_tokens:
        response = getattr(record, "response", None)
        if not response:
            raise DataError(source or "data", record_line(source, index), "response",
                            "missing: targets from answers (answer_tokens) need (prompt, response) pairs")
        enc = encode_example(tokenizer, record.prompt, response, config.fmt)
        ids = enc.response_ids[: min(config.answer_tokens, answer_length(enc))]
        target = tokenizer.decode(ids, skip_special_tokens=True)
    else:
        prompt = record.prompt.strip().rstrip(".?!").strip()
        target = config.target.replace("{prompt}", prompt[:1].lower() + prompt[1:])
    check_known_tokens(tokenizer, tokenizer(target, add_special_tokens=False)["input_ids"], target, "GCG target")
    return target


def suffix_init(tokenizer, config: GCGAttackConfig) -> str:
    if config.suffix_init is not None:
        ids = tokenizer(config.suffix_init, add_special_tokens=False)["input_ids"]
        if not ids:
            raise DeepAlignError("the initial GCG suffix is empty")
        check_known_tokens(tokenizer, ids, config.suffix_init, "initial GCG suffix")
        return config.suffix_init
    for word in INIT_TOKENS:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] != getattr(tokenizer, "unk_token_id", None):
            return " ".join([word] * 20)
    raise DeepAlignError("no default initial GCG suffix fits this tokenizer: set suffix_init (--suffix-init)")


@torch.no_grad()
def target_loss(model, layout: GCGLayout, suffix_ids: Sequence[int]) -> float:
    """Mean cross-entropy [nats] of the target tokens after ``before + suffix + after`` (nanoGCG's loss)."""
    ids = layout.before + list(suffix_ids) + layout.after + layout.target
    logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0]  # [L, V]
    n = len(layout.target)
    pred = logits[-n - 1 : -1].float()  # positions predicting the target tokens, [n, V]
    return torch.nn.functional.cross_entropy(pred, torch.tensor(layout.target, device=pred.device)).item()


def optimize_suffix(model, tokenizer, prompt: str, target: str, config: GCGAttackConfig, seed: int):
    """One nanoGCG run (special tokens are never proposed); returns nanoGCG's ``GCGResult``."""
    from nanogcg.gcg import GCG, GCGConfig

    cfg = GCGConfig(
        num_steps=config.steps, optim_str_init=suffix_init(tokenizer, config), search_width=config.search_width,
        topk=config.topk, n_replace=config.n_replace, use_prefix_cache=False, seed=seed, verbosity="ERROR",
    )
    with _process_settings_restored():
        gcg = GCG(model, _NanoGCGTokenizer(tokenizer), cfg)
        special = torch.tensor(tokenizer.all_special_ids, device=model.device, dtype=torch.long)
        if gcg.not_allowed_ids is not None:
            special = torch.cat([gcg.not_allowed_ids.long(), special]).unique()
        gcg.not_allowed_ids = special
        return gcg.run(messages_for(prompt, config.fmt), target)


@contextmanager
def _process_settings_restored():
    """nanoGCG seeds every global RNG, turns deterministic algorithms on and sets its logger's level for
    the whole process; put all of them back afterwards (its logger quiet meanwhile: CPU / float32
    warnings and per-step buffer logs)."""
    import numpy as np

    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    log = logging.getLogger("nanogcg")
    level = log.level
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        log.setLevel(level)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def find_suffixes(
    model, tokenizer, records: Sequence, config: GCGAttackConfig, path: str | Path, *,
    source: str | None = None, progress: bool = True,
) -> dict[str, dict]:
    """Optimize a suffix per record, one row per prompt in ``path`` (id ``{label}/{prompt id}``; a rerun
    skips finished prompts). Returns rows by prompt id: target, suffix, suffix_ids, initial_loss,
    best_loss (both by :func:`target_loss`), losses (nanoGCG's per-step best candidate), seed. Rows carry no
    timings, so a resumed run's file equals a fresh run's."""
    require_chat_template(tokenizer)  # before any file is written
    targets = [derive_target(tokenizer, r, config, source, i) for i, r in enumerate(records)]
    with ResultsWriter(path) as writer:
        todo = [(r, t) for r, t in zip(records, targets, strict=True) if f"{config.label}/{r.id}" not in writer.done]
        for record, target in tqdm(todo, desc="gcg", unit="prompt", disable=not progress):
            layout = gcg_layout(tokenizer, record.prompt, target, config.fmt)
            init_ids = tokenizer(suffix_init(tokenizer, config), add_special_tokens=False)["input_ids"]
            seed = request_seed(config.sampling.seed, f"gcg/{record.id}", 0) % 2**32
            result = optimize_suffix(model, tokenizer, record.prompt, target, config, seed)
            suffix_ids = tokenizer(result.best_string, add_special_tokens=False)["input_ids"]
            writer.write({
                "id": f"{config.label}/{record.id}", "label": config.label, "prompt_id": record.id, "target": target,
                "suffix": result.best_string, "suffix_ids": suffix_ids, "seed": seed,
                "initial_loss": target_loss(model, layout, init_ids),
                "best_loss": target_loss(model, layout, suffix_ids),
                "losses": [float(x) for x in result.losses],
            })
        wanted = {f"{config.label}/{r.id}" for r in records}
        return {row["prompt_id"]: row for row in writer.rows() if row["id"] in wanted}


def gcg_items(tokenizer, records: Sequence, suffixes: dict[str, dict], config: GCGAttackConfig) -> list[AttackItem]:
    """Per prompt: the plain prompt (setting ``none``) and ``before + suffix + after`` (setting ``gcg``)."""
    items = []
    for r in records:
        s = suffixes[r.id]
        layout = gcg_layout(tokenizer, r.prompt, s["target"], config.fmt)
        fields = {"label": config.label, "target": s["target"]}
        plain = encode_prompt(tokenizer, r.prompt, config.fmt)
        attacked = layout.before + s["suffix_ids"] + layout.after
        items.append(AttackItem(f"{config.label}/none/{r.id}", r.id, r.prompt, plain, "",
                                {**fields, "setting": "none", "suffix": ""}))
        items.append(AttackItem(f"{config.label}/gcg/{r.id}", r.id, r.prompt, attacked, "",
                                {**fields, "setting": "gcg", "suffix": s["suffix"]}))
    return items
