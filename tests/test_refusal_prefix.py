"""Refusal prefixes: spliced as the response's first token ids; one condition per prefix plus none."""

from __future__ import annotations

import pytest

from deepalign.chat import encode_prompt
from deepalign.data import PromptRecord
from deepalign.depth.refusal_prefix import RefusalPrefixConfig, prefix_key, refusal_prefix_items
from deepalign.errors import DeepAlignError
from deepalign.generation import SamplingConfig
from deepalign.judges.base import Judge, Judgment
from deepalign.pipeline.attacks import run_refusal_prefix

PROMPTS = [PromptRecord(f"q{i}", f"Please tell me about the garden {i}") for i in range(2)]


class RefusedJudge(Judge):
    """Harmful unless the judged text (prefill + response when it sees the prefill) contains 'cannot'."""

    name = "refused"

    def __init__(self, sees_prefill=True):
        self.sees_prefill = sees_prefill

    def judge(self, items):
        return [Judgment("cannot" not in self.judged_text(it), 1.0) for it in items]


@pytest.mark.parametrize("fixture", ["tiny_tokenizer", "llama2_tokenizer"])
def test_prefix_is_spliced_as_the_response_start(fixture, request):
    tok = request.getfixturevalue(fixture)
    config = RefusalPrefixConfig(prefixes=("I cannot", "Sorry, but I won't"))
    items = refusal_prefix_items(tok, PROMPTS, config)
    assert [it.fields["prefix"] for it in items] == ["", "", "I cannot", "I cannot", "Sorry, but I won't",
                                                     "Sorry, but I won't"]
    for item in items:
        prompt = encode_prompt(tok, item.prompt)
        prefix = item.fields["prefix"]
        text = tok.apply_chat_template([{"role": "user", "content": item.prompt},
                                        {"role": "assistant", "content": prefix or "x"}], tokenize=False)
        full = tok(text, add_special_tokens=False)["input_ids"]
        n = len(item.input_ids) - len(prompt)
        assert item.input_ids == full[: len(prompt) + n]  # exactly the conversation's own first response tokens
        assert tok.decode(item.input_ids[len(prompt):]).strip() == prefix
        assert tok.eos_token_id not in item.input_ids[len(prompt):]
        assert item.id == f"model/{prefix_key(prefix)}/{item.prompt_id}" and item.prefill == prefix


def test_prefix_with_unknown_words_is_an_error():
    from deepalign.organism.tokenizer import build_tokenizer

    tok = build_tokenizer(["i", "cannot", "help", "how", "?"])
    assert refusal_prefix_items(tok, [PromptRecord("a", "how ?")], RefusalPrefixConfig(prefixes=("i cannot",)))
    with pytest.raises(DeepAlignError, match="does not know"):
        refusal_prefix_items(tok, [PromptRecord("a", "how ?")], RefusalPrefixConfig(prefixes=("I cannot",)))
    with pytest.raises(DeepAlignError):
        RefusalPrefixConfig(prefixes=("a", "a"))


def test_run_refusal_prefix_counts_each_condition(tmp_path, tiny_model, tiny_tokenizer):
    config = RefusalPrefixConfig(prefixes=("I cannot",), sampling=SamplingConfig(max_new_tokens=3, repeats=2))
    summary = run_refusal_prefix(tiny_model, tiny_tokenizer, PROMPTS, config, RefusedJudge(), tmp_path, progress=False)
    none, cannot = summary.conditions
    assert (none.prefix, none.n, cannot.prefix, cannot.n) == ("", 4, "I cannot", 4)
    assert cannot.asr == 0.0  # the judge sees the prefix, which refuses
    assert summary.n == 8 and (tmp_path / "refusal_prefix.png").stat().st_size > 0
    assert "| 'I cannot' | 0.0% [" in (tmp_path / "table.md").read_text()
