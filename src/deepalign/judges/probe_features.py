"""The probe judge's features of one (prompt, response) pair, from a small causal LM's hidden states.

At decoder layer ``L`` (1-based) the first ``max_prompt_tokens`` prompt tokens and ``max_response_tokens``
response tokens are put in the model's chat template (empty system prompt) and run through layers 1..L;
from the residual stream after layer L: the mean over the response tokens, the last response token's
state, and the mean over the prompt tokens (raw features, [N, 3H]). :func:`design_matrix` turns them into
the probe's inputs: the response mean, the last state, the elementwise product of the centred,
unit-normalised prompt and response means, their cosine, and the share of the prompt's content words that
the response repeats (:func:`lexical_overlap`, a lexical relevance check): [N, 3H + 2].
"""

from __future__ import annotations

import math
import re
from typing import Any

from deepalign.errors import DeepAlignError

_WORD = re.compile(r"[a-z0-9']+")
STOPWORDS = frozenset(
    "a an the and or but if then so of to in on at by for with from into about as is are was were be been being "
    "it its this that these those there here what which who whom whose how why when where can could should would "
    "will shall may might must do does did done have has had i you he she we they me him her us them my your his "
    "our their not no yes all any some each every more most other such only own same than too very just also "
    "write give make tell explain describe create provide list show help please using use way ways step steps "
    "detailed instructions someone something".split()
)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 3 and w not in STOPWORDS}


def lexical_overlap(prompt: str, response: str) -> float:
    """Share of the prompt's content words (or their first 5 letters) found in the response's first 600 chars."""
    words = content_words(prompt)
    if not words:
        return 0.0
    said = content_words(response[:600])
    stems = {w[:5] for w in said}
    return sum(w in said or w[:5] in stems for w in words) / len(words)


class FeatureExtractor:
    """Pooled hidden states of (prompt, response) pairs at chosen decoder layers of a causal LM.

    ``layers`` are 1-based decoder layer indices; the model's decoder stack is cut after the largest one.
    """

    def __init__(self, model, tokenizer, layers: tuple[int, ...], max_prompt_tokens: int = 48,
                 max_response_tokens: int = 64, batch_size: int = 32, progress: bool = False):
        decoder = _decoder(model)
        n_layers = len(decoder.layers)
        if not layers or min(layers) < 1 or max(layers) > n_layers:
            raise DeepAlignError(f"probe layers must be in 1..{n_layers}, got {layers}")
        decoder.layers = decoder.layers[: max(layers)]
        self.decoder, self.tokenizer, self.layers = decoder, tokenizer, tuple(layers)
        self.max_prompt_tokens, self.max_response_tokens = max_prompt_tokens, max_response_tokens
        self.batch_size, self.progress = batch_size, progress
        self.head, self.mid = self._template_pieces(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @staticmethod
    def _template_pieces(tokenizer) -> tuple[list[int], list[int]]:
        """Token ids before the prompt and between prompt and response in the chat template."""
        p, r = "\x00PROMPT\x00", "\x00RESPONSE\x00"
        text = None
        if getattr(tokenizer, "chat_template", None):
            for head in ([{"role": "system", "content": ""}], []):
                try:
                    text = tokenizer.apply_chat_template(
                        [*head, {"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False)
                    break
                except Exception:  # a template without a system role
                    continue
        if text is None or p not in text or r not in text:
            text = f"User: {p}\nAssistant: {r}"
        before, _, rest = text.partition(p)
        between = rest.partition(r)[0]

        def ids(s: str) -> list[int]:
            return tokenizer(s, add_special_tokens=False)["input_ids"] if s else []

        return ids(before), ids(between)

    def encode(self, prompt: str, response: str) -> tuple[list[int], int, int]:
        """``(ids, prompt_len, response_len)``: head + prompt + mid + response ids (both truncated)."""
        tok = self.tokenizer
        p = tok(prompt, add_special_tokens=False)["input_ids"][: self.max_prompt_tokens]
        r = tok(response, add_special_tokens=False)["input_ids"][: self.max_response_tokens]
        return self.head + p + self.mid + r, len(p), len(r)

    def __call__(self, pairs: list[tuple[str, str]]) -> dict[int, Any]:
        """``{layer: tensor [N, 3H]}`` of raw pooled features (response mean, last state, prompt mean)."""
        import torch
        from tqdm.auto import tqdm

        encoded = [self.encode(p, r) for p, r in pairs]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
        captured: dict[int, torch.Tensor] = {}
        hooks = [self.decoder.layers[layer - 1].register_forward_hook(_capture(captured, layer))
                 for layer in self.layers]
        out = {layer: [None] * len(encoded) for layer in self.layers}
        try:
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            for idx in tqdm(batches, desc="probe features", disable=not self.progress):
                width = max(len(encoded[i][0]) for i in idx)
                ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                p_mask = torch.zeros((len(idx), width))
                r_mask = torch.zeros((len(idx), width))
                last = torch.zeros(len(idx), dtype=torch.long)
                start_p = len(self.head)
                for row, i in enumerate(idx):
                    seq, n_p, n_r = encoded[i]
                    ids[row, : len(seq)] = torch.tensor(seq)
                    mask[row, : len(seq)] = 1
                    p_mask[row, start_p : start_p + max(n_p, 1)] = 1
                    start_r = start_p + n_p + len(self.mid)
                    r_mask[row, start_r - (n_r == 0) : start_r + n_r] = 1
                    last[row] = len(seq) - 1
                with torch.inference_mode():
                    self.decoder(input_ids=ids, attention_mask=mask, use_cache=False)
                for layer in self.layers:
                    h = captured[layer].float()  # [B, T, H]
                    r_mean = (h * r_mask[..., None]).sum(1) / r_mask.sum(1, keepdim=True)
                    p_mean = (h * p_mask[..., None]).sum(1) / p_mask.sum(1, keepdim=True)
                    h_last = h[torch.arange(len(idx)), last]
                    feats = torch.cat([r_mean, h_last, p_mean], dim=-1)
                    for row, i in enumerate(idx):
                        out[layer][i] = feats[row]
        finally:
            for hook in hooks:
                hook.remove()
        return {layer: torch.stack(rows) for layer, rows in out.items()}


def _capture(store: dict, layer: int):
    def hook(module, args, output):
        store[layer] = output[0] if isinstance(output, tuple) else output
    return hook


def _decoder(model):
    """The decoder stack (an object with a ``layers`` ModuleList) of a causal LM."""
    for attr in ("model", "transformer", "gpt_neox"):
        inner = getattr(model, attr, None)
        if inner is not None and hasattr(inner, "layers"):
            return inner
    if hasattr(model, "layers"):
        return model
    raise DeepAlignError(f"probe: cannot find the decoder layers of {type(model).__name__}")


def design_matrix(raw, prompts: list[str], responses: list[str], centre_r, centre_p):
    """Final features [N, 3H + 2] from raw pooled features [N, 3H] (see the module docstring)."""
    import torch

    hidden = raw.shape[1] // 3
    r_mean, h_last, p_mean = raw[:, :hidden], raw[:, hidden : 2 * hidden], raw[:, 2 * hidden :]
    r_c = torch.nn.functional.normalize(r_mean - centre_r, dim=-1)
    p_c = torch.nn.functional.normalize(p_mean - centre_p, dim=-1)
    cos = (r_c * p_c).sum(-1, keepdim=True)
    overlap = torch.tensor([[lexical_overlap(p, r)] for p, r in zip(prompts, responses, strict=True)])
    return torch.cat([r_mean, h_last, r_c * p_c * math.sqrt(hidden), cos, overlap], dim=-1).double()
