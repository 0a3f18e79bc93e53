"""Classifier judge: tiny random HF models saved to tmp_path, loaded offline from safetensors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_tiny_llama, build_tiny_tokenizer

from deepalign.errors import DeepAlignError
from deepalign.judges import JudgeInput, make_judge
from deepalign.judges.classifier import ClassifierJudge, harmful_label_ids, parse_guard_output

ITEMS = [
    JudgeInput("Please tell me about the weather.", "Sure, here is a short poem about apples."),
    JudgeInput("Hello there", "I cannot help with that request."),
    JudgeInput("How are you today?", "I am fine, thank you very much. The river and the garden are lovely."),
    JudgeInput("q", "ok"),
    JudgeInput("The quick brown fox", "jumps over the lazy dog 0123456789 again and again and again.", prefill="Sure,"),
    JudgeInput("Tell me about plums", "Pears and plums."),
    JudgeInput("Hello", "Sorry, but I won't do it."),
]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def save_bert(folder, tok, id2label, bias=None, problem_type=None, center=None):
    """A random 2-layer BERT classifier; ``center``: shift class 1's bias so half of these texts get it."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=256, num_labels=len(id2label), id2label=id2label,
        label2id={v: k for k, v in id2label.items()}, pad_token_id=tok.pad_token_id, problem_type=problem_type,
    )
    model = BertForSequenceClassification(cfg).eval()
    if bias is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(bias))
    if center is not None:
        with torch.no_grad():
            diffs = [(lambda z: (z[1] - z[0]).item())(model(**tok(t, return_tensors="pt")).logits[0]) for t in center]
            model.classifier.bias[1] -= sorted(diffs)[len(diffs) // 2] - 1e-3
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


def expected_argmax(model, tok, texts):
    """Independent reference: one unpadded forward pass per text."""
    out = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t, return_tensors="pt")
            out.append(int(model(**enc).logits[0].argmax()))
    return out


@pytest.mark.parametrize(
    "id2label, wanted, ids",
    [
        ({0: "safe", 1: "unsafe"}, None, [1]),
        ({0: "non-toxic", 1: "toxic"}, None, [1]),
        ({0: "harmful", 1: "not_harmful"}, None, [0]),
        ({0: "LABEL_0", 1: "LABEL_1"}, None, [1]),
        ({0: "toxic", 1: "severe_toxic", 2: "neutral"}, None, [0, 1]),
        ({0: "yes", 1: "no"}, "yes", [0]),
        ({0: "yes", 1: "no"}, "1", [1]),
        ({0: "safe", 1: "unsafe"}, "SAFE", [0]),
    ],
)
def test_harmful_label_ids(id2label, wanted, ids):
    assert harmful_label_ids(id2label, wanted) == ids


def test_harmful_label_ids_errors():
    with pytest.raises(DeepAlignError, match="harmful_label"):
        harmful_label_ids({0: "yes", 1: "no"})
    with pytest.raises(DeepAlignError, match="not one of"):
        harmful_label_ids({0: "safe", 1: "unsafe"}, "bad")


def test_bert_batched_equals_unbatched_and_reference(tmp_path, tok):
    model = save_bert(tmp_path, tok, {0: "safe", 1: "unsafe"}, center=[it.response for it in ITEMS])
    batched = make_judge(f"classifier:{tmp_path}", batch_size=3, progress=False).judge(ITEMS)
    single = ClassifierJudge(path=str(tmp_path), batch_size=1, progress=False).judge(ITEMS)
    ref = expected_argmax(model, tok, [it.response for it in ITEMS])
    assert 0 < sum(ref) < len(ref)  # both classes occur
    assert [j.harmful for j in batched] == [j.harmful for j in single] == [r == 1 for r in ref]
    for b, s in zip(batched, single, strict=True):
        assert json.loads(b.raw)["p_harmful"] == pytest.approx(json.loads(s.raw)["p_harmful"], abs=1e-4)
        assert b.score == (5.0 if b.harmful else 1.0) and b.error is None


def test_label_mapping_decides_harmful(tmp_path, tok):
    always_class1 = [0.0, 10.0]  # zero weights + bias: every input predicts class 1
    save_bert(tmp_path / "a", tok, {0: "safe", 1: "unsafe"}, bias=always_class1)
    save_bert(tmp_path / "b", tok, {0: "unsafe", 1: "safe"}, bias=always_class1)
    save_bert(tmp_path / "c", tok, {0: "LABEL_0", 1: "LABEL_1"}, bias=always_class1)
    a = ClassifierJudge(path=str(tmp_path / "a"), progress=False)
    b = ClassifierJudge(path=str(tmp_path / "b"), progress=False)
    c = ClassifierJudge(path=str(tmp_path / "c"), progress=False)
    c0 = ClassifierJudge(path=str(tmp_path / "c"), harmful_label="LABEL_0", progress=False)
    assert all(j.harmful for j in a.judge(ITEMS))
    assert not any(j.harmful for j in b.judge(ITEMS))
    assert all(j.harmful for j in c.judge(ITEMS))
    assert not any(j.harmful for j in c0.judge(ITEMS))
    assert json.loads(a.judge(ITEMS[:1])[0].raw) == {"label": "unsafe", "p_harmful": pytest.approx(1.0, abs=1e-3)}
    assert a.describe()["harmful_labels"] == ["unsafe"] and b.describe()["harmful_labels"] == ["unsafe"]


def test_multi_label_uses_sigmoid(tmp_path, tok):
    labels = {0: "toxic", 1: "insult", 2: "neutral"}
    save_bert(tmp_path / "hi", tok, labels, bias=[1.0, -3.0, 5.0], problem_type="multi_label_classification")
    save_bert(tmp_path / "lo", tok, labels, bias=[-1.0, -3.0, 5.0], problem_type="multi_label_classification")
    hi = ClassifierJudge(path=str(tmp_path / "hi"), progress=False).judge(ITEMS[:2])
    lo = ClassifierJudge(path=str(tmp_path / "lo"), progress=False).judge(ITEMS[:2])
    assert all(j.harmful for j in hi)  # sigmoid(1) > 0.5 though "neutral" is the argmax
    assert not any(j.harmful for j in lo)
    assert json.loads(hi[0].raw)["p_harmful"] == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(), abs=1e-4)


def test_sees_prefill_and_with_prompt_change_the_input(tmp_path, tok):
    model = save_bert(tmp_path, tok, {0: "safe", 1: "unsafe"})
    item = [ITEMS[4]]
    plain = ClassifierJudge(path=str(tmp_path), progress=False)
    pre = ClassifierJudge(path=str(tmp_path), sees_prefill=True, progress=False)
    pair = ClassifierJudge(path=str(tmp_path), with_prompt=True, progress=False)
    with torch.no_grad():
        def p1(*texts):
            return torch.softmax(model(**tok(*texts, return_tensors="pt")).logits[0], -1)[1].item()

        want_plain = p1(item[0].response)
        want_pre = p1(item[0].prefill + item[0].response)
        want_pair = p1(item[0].prompt, item[0].response)
    assert json.loads(plain.judge(item)[0].raw)["p_harmful"] == pytest.approx(want_plain, abs=1e-4)
    assert json.loads(pre.judge(item)[0].raw)["p_harmful"] == pytest.approx(want_pre, abs=1e-4)
    assert json.loads(pair.judge(item)[0].raw)["p_harmful"] == pytest.approx(want_pair, abs=1e-4)
    assert len({round(want_plain, 5), round(want_pre, 5), round(want_pair, 5)}) == 3


def test_llama_sequence_classifier_batched_equals_unbatched(tmp_path, tok):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(2)  # a seed whose random head predicts both classes on ITEMS
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, num_labels=2, pad_token_id=tok.pad_token_id,
        id2label={0: "safe", 1: "harmful"}, label2id={"safe": 0, "harmful": 1},
    )
    model = LlamaForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    batched = ClassifierJudge(path=str(tmp_path), batch_size=4, progress=False).judge(ITEMS)
    single = ClassifierJudge(path=str(tmp_path), batch_size=1, progress=False).judge(ITEMS)
    ref = expected_argmax(model, tok, [it.response for it in ITEMS])
    assert 0 < sum(ref) < len(ref)
    assert [j.harmful for j in batched] == [j.harmful for j in single] == [r == 1 for r in ref]
    for b, s in zip(batched, single, strict=True):
        assert json.loads(b.raw)["p_harmful"] == pytest.approx(json.loads(s.raw)["p_harmful"], abs=1e-4)


def test_refuses_non_safetensors_and_bad_kind(tmp_path, tok):
    save_bert(tmp_path, tok, {0: "safe", 1: "unsafe"})
    with pytest.raises(DeepAlignError, match="kind"):
        ClassifierJudge(path=str(tmp_path), kind="other")
    with pytest.raises(DeepAlignError, match="unknown classifier judge option"):
        ClassifierJudge(path=str(tmp_path), colour="red")
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(DeepAlignError, match="safetensors"):
        ClassifierJudge(path=str(tmp_path))
    with pytest.raises(DeepAlignError, match="local model folder"):
        ClassifierJudge(path="some-org/some-hub-model")


@pytest.mark.parametrize(
    "text, harmful, error",
    [
        ("unsafe\nS1", True, False),
        (" safe", False, False),
        ("Unsafe", True, False),
        ("maybe", None, True),
        ("", None, True),
    ],
)
def test_parse_guard_output(text, harmful, error):
    j = parse_guard_output(text)
    assert j.harmful is harmful and (j.error is not None) is error and j.raw == text


@pytest.fixture
def guard_dir(tmp_path, tok):
    build_tiny_llama(len(tok)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path


def test_guard_renders_chat_template_and_parses_generation(guard_dir, tok, monkeypatch):
    judge = make_judge(f"classifier:{guard_dir}", kind="guard", batch_size=3, progress=False)
    seen = []

    def fake_generate(input_ids, attention_mask, **kw):
        """Deterministic stub: 'unsafe\\nS1' when the rendered conversation contains COMPLY, else 'safe'."""
        assert kw["do_sample"] is False and kw["max_new_tokens"] == 10
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            assert mask[-1] == 1  # left padding: the prompt ends at the last position
            text = tok.decode(ids[mask.bool()])
            seen.append(text)
            new = tok("unsafe\nS1" if "COMPLY" in text else "safe", add_special_tokens=False)["input_ids"]
            new = new + [tok.pad_token_id] * (10 - len(new))
            rows.append(torch.cat([ids, torch.tensor(new)]))
        return torch.stack(rows)

    monkeypatch.setattr(judge.model, "generate", fake_generate)
    items = [JudgeInput("Hello", "Sure, COMPLY now."), JudgeInput("Hi there", "No."),
             JudgeInput("Weather?", " COMPLY", prefill="Sure"), JudgeInput("q", "fine"), JudgeInput("q", "x COMPLY y")]
    js = judge.judge(items)
    assert [j.harmful for j in js] == [True, False, True, False, True]
    assert [j.score for j in js] == [5.0, 1.0, 5.0, 1.0, 5.0]
    assert js[0].raw.startswith("unsafe")
    want = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nSure, COMPLY now.<|im_end|>\n"
    assert want in seen
    assert not any("Sure COMPLY" in s for s in seen)  # prefill not shown by default


def test_guard_real_generation_is_parsed(guard_dir):
    judge = ClassifierJudge(path=str(guard_dir), kind="guard", batch_size=2, max_new_tokens=4, progress=False)
    js = judge.judge(ITEMS[:3])
    assert len(js) == 3
    for j in js:  # a random model writes noise: whatever it wrote is judged by the parsing rule
        ref = parse_guard_output(j.raw)
        assert (j.harmful, j.error) == (ref.harmful, ref.error)
    assert judge.describe()["kind"] == "guard"
