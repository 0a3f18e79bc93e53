"""Fuzzing (Hypothesis) of every model command's inputs on a tiny random Llama with its own tokenizer (a
foreign model, not the organism): random data files, answers shorter and longer than every k, k grids,
seeds, lengths. Each run exits 0 with its complete output, or 2 with one line and nothing written."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from conftest import save_tiny_model  # noqa: E402
from fuzz_inputs import check_outcome, examples, good_pairs, jsonl_files, k_grids, records, run_main, texts  # noqa: E402
from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# valid values are drawn most of the time, so that runs also reach their output, not only their errors
seeds = st.one_of(st.integers(0, 100), st.integers(0, 2**32 - 1), st.integers(-3, 2**32 + 3))
new_tokens = st.sampled_from([1, 2, 3, 1, 2, 0, -1])
GOOD_PAIRS = b'{"prompt": "hello there", "response": "sure here is a short poem about the garden"}\n'
GOOD_PROMPTS = b'{"prompt": "hello there"}\n{"id": 7, "prompt": "caf\\u00e9 \\u4e2d\\u6587 the river"}\n'
pairs_files = st.one_of(good_pairs.map(lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()),
                        good_pairs.map(lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()),
                        jsonl_files(records))
prompt_files = st.one_of(
    st.lists(texts.filter(str.strip), min_size=1, max_size=3).map(
        lambda ps: "".join(json.dumps({"prompt": p}) + "\n" for p in ps).encode()),
    st.just(GOOD_PROMPTS),
    jsonl_files(records))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("fuzz") / "model"))


OUTCOMES: dict[str, list[int]] = {}  # command -> [runs, successes], shown by test_fuzzing_reaches_success


def run(capsys, argv: list[str], out: Path, expected: tuple[str, ...]) -> bool:
    capsys.readouterr()
    code = run_main([*argv, "--out", str(out)])
    ok = check_outcome(code, capsys.readouterr().err, out, expected)
    counts = OUTCOMES.setdefault(argv[0], [0, 0])
    counts[0], counts[1] = counts[0] + 1, counts[1] + ok
    return ok


def answer_lengths(model: str, path: Path, *, with_end: bool = False) -> list[int]:
    """Answer tokens of each pair (``with_end``: with the end-of-turn tokens, as the KL profile counts)."""
    from deepalign.chat import answer_length, encode_example
    from deepalign.data import load_pairs
    from deepalign.models import load_tokenizer

    tok = load_tokenizer(model)
    encoded = [encode_example(tok, p.prompt, p.response) for p in load_pairs(path)]
    return [len(e.response_ids) if with_end else answer_length(e) for e in encoded]


@example(data=GOOD_PAIRS, ks=[0, 3, 40], on_short="skip", seed=0, tokens=2)
@examples(8)
@given(data=pairs_files, ks=k_grids, on_short=st.sampled_from(["error", "skip"]), seed=seeds, tokens=new_tokens)
def test_prefill(model, capsys, data, ks, on_short, seed, tokens):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_bytes(data)
        argv = ["prefill", "--model", model, "--data", str(path), "--tokens", *map(str, ks), "--on-short", on_short,
                "--seed", str(seed), "--max-new-tokens", str(tokens), "--judge", "keyword", "--no-progress"]
        if run(capsys, argv, Path(tmp) / "out", ("rows.jsonl", "summary.json", "table.md", "prefill.png",
                                                 "meta.json")):
            lengths = answer_lengths(model, path)
            summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
            assert [p["n_pairs"] for p in summary["points"]] == [sum(n >= k for n in lengths) for k in ks]
            assert on_short == "skip" or max(ks) <= min(lengths)


@example(data=GOOD_PAIRS, ks=[0, 5, 10, 20, 40], seed=0, tokens=2, decoding=1)  # issue 16: k > every answer
@example(data=b'{"prompt": "hello", "response": "hello"}\n', ks=[0], seed=0, tokens=0, decoding=0)  # wrote meta.json
@examples(6)
@given(data=pairs_files, ks=k_grids, seed=seeds, tokens=new_tokens, decoding=st.sampled_from([0, 0, 1]))
def test_audit(model, capsys, data, ks, seed, tokens, decoding):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_bytes(data)
        argv = ["audit", "--model", model, "--data", str(path), "--tokens", *map(str, ks), "--judge", "keyword",
                "--max-new-tokens", str(tokens), "--decoding-prompts", str(decoding), "--no-progress"]
        if run(capsys, argv, Path(tmp) / "out", ("card.json", "rows.jsonl", "prefill.png", "meta.json")):
            lengths = answer_lengths(model, path)
            card = json.loads((Path(tmp) / "out" / "card.json").read_text())
            assert card["skipped_ks"] == sorted(k for k in ks if k > max(lengths))
            assert sorted(map(int, card["prefill"])) == sorted(k for k in ks if k <= max(lengths))


@example(data=GOOD_PROMPTS, seed=0, tokens=2, repeats=2, stop=["the"])
@examples(8)
@given(data=prompt_files, seed=seeds, tokens=new_tokens, repeats=st.integers(0, 2),
       stop=st.lists(st.sampled_from(["the", "\n", "\u00e9", " "]), max_size=2))
def test_generate(model, capsys, data, seed, tokens, repeats, stop):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prompts.jsonl"
        path.write_bytes(data)
        argv = ["generate", "--model", model, "--prompts", str(path), "--seed", str(seed), "--max-new-tokens",
                str(tokens), "--repeats", str(repeats), *[f"--stop={s}" for s in stop], "--no-progress"]
        if run(capsys, argv, Path(tmp) / "out", ("generations.jsonl", "meta.json")):
            from deepalign.data import load_prompts

            rows = (Path(tmp) / "out" / "generations.jsonl").read_text().splitlines()
            assert len(rows) == len(load_prompts(path)) * repeats


@example(data=GOOD_PAIRS, positions=100, batch=2)
@examples(5)
@given(data=pairs_files, positions=st.integers(-1, 100), batch=st.integers(0, 3))
def test_kl(model, capsys, data, positions, batch):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_bytes(data)
        argv = ["kl", "--aligned", model, "--base", model, "--data", str(path), "--max-positions", str(positions),
                "--batch-size", str(batch), "--no-progress"]
        if run(capsys, argv, Path(tmp) / "out", ("kl_profile.jsonl", "kl_profile.png", "summary.json")):
            rows = (Path(tmp) / "out" / "kl_profile.jsonl").read_text().splitlines()
            assert len(rows) == min(positions, max(answer_lengths(model, path, with_end=True)))


@example(data=GOOD_PROMPTS, prefixes=["I cannot"], seed=0, tokens=2)
@examples(5)
@given(data=prompt_files, prefixes=st.lists(texts, max_size=2), seed=seeds, tokens=new_tokens)
def test_refusal_prefix(model, capsys, data, prefixes, seed, tokens):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prompts.jsonl"
        path.write_bytes(data)
        argv = ["refusal-prefix", "--model", model, "--data", str(path),
                *[f"--prefix={p}" for p in prefixes], "--seed", str(seed), "--max-new-tokens", str(tokens),
                "--no-progress"]
        run(capsys, argv, Path(tmp) / "out", ("rows.jsonl", "summary.json", "table.md", "refusal_prefix.png"))


@example(data=GOOD_PROMPTS, temperatures=[0.5], top_ps=[0.9], top_ks=[5], seed=0)
@examples(4)
@given(data=prompt_files, temperatures=st.lists(st.floats(-1, 3), max_size=2),
       top_ps=st.lists(st.floats(-0.5, 1.5), max_size=2), top_ks=st.lists(st.integers(-1, 50), max_size=2),
       seed=seeds)
def test_decoding_attack(model, capsys, data, temperatures, top_ps, top_ks, seed):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prompts.jsonl"
        path.write_bytes(data)
        argv = ["decoding-attack", "--model", model, "--data", str(path), "--temperatures", *map(str, temperatures),
                "--top-ps", *map(str, top_ps), "--top-ks", *map(str, top_ks), "--seed", str(seed),
                "--max-new-tokens", "2", "--no-progress"]
        run(capsys, argv, Path(tmp) / "out", ("rows.jsonl", "summary.json", "table.md", "decoding.png"))


@example(data=GOOD_PAIRS, answer_tokens=3, steps=1, seed=0)
@examples(3)
@given(data=pairs_files, answer_tokens=st.integers(0, 30), steps=st.integers(0, 1), seed=seeds)
def test_gcg(model, capsys, data, answer_tokens, steps, seed):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_bytes(data)
        argv = ["gcg", "--model", model, "--data", str(path), "--answer-tokens", str(answer_tokens), "--steps",
                str(steps), "--search-width", "4", "--topk", "4", "--limit", "1", "--seed", str(seed),
                "--max-new-tokens", "2", "--no-progress"]
        run(capsys, argv, Path(tmp) / "out", ("suffixes.jsonl", "rows.jsonl", "summary.json", "gcg_loss.png"))


triplet_files = st.one_of(
    good_pairs.map(lambda rows: "".join(json.dumps({**r, "refusal": "I cannot help with that."}) + "\n"
                                        for r in rows).encode()),
    jsonl_files(records))


@example(data=GOOD_PAIRS.replace(b'}', b', "refusal": "I cannot"}'), p_plain=0.5, max_prefix=10, seed=0, n=3)
@examples(8)
@given(data=triplet_files, p_plain=st.floats(-0.5, 1.5), max_prefix=st.integers(-1, 50), seed=seeds,
       n=st.integers(0, 5))
def test_augment(model, capsys, data, p_plain, max_prefix, seed, n):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "triplets.jsonl"
        path.write_bytes(data)
        argv = ["augment", "--triplets", str(path), "--model", model, "--p-plain", str(p_plain), "--max-prefix",
                str(max_prefix), "--seed", str(seed), "--n-preview", str(n), "--no-progress"]
        if run(capsys, argv, Path(tmp) / "out", ("preview.jsonl", "meta.json")):
            assert len((Path(tmp) / "out" / "preview.jsonl").read_text().splitlines()) == n


@example(data=GOOD_PAIRS, objective="constrained", max_length=64, seed=0)
@examples(4)
@given(data=st.one_of(triplet_files, pairs_files), objective=st.sampled_from(["sft", "constrained"]),
       max_length=st.integers(1, 64), seed=st.integers(0, 2**32 - 1))
def test_train(model, capsys, data, objective, max_length, seed):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_bytes(data)
        argv = ["train", "--model", model, "--data", str(path), "--objective", objective, "--max_steps", "1",
                "--max_length", str(max_length), "--seed", str(seed), "--use_cpu", "--report_to", "none",
                "--ref_cache_dir", str(Path(tmp) / "ref"), "--no-progress"]
        run(capsys, argv, Path(tmp) / "out", ("model.safetensors", "training_log.jsonl", "meta.json"))


@example(data=b'{"prompt": "hello", "response": "hello"}\n', recipe="harmful", n_train=0, objective="sft", seed=0,
         tokens=1)  # found by the fuzzer: the run failed after writing meta.json and the initial evaluation
@example(data=GOOD_PAIRS * 2, recipe="harmful", n_train=2, objective="constrained", seed=0, tokens=2)
@example(data=GOOD_PAIRS * 12, recipe="benign", n_train=3, objective="sft", seed=1, tokens=2)
@examples(4)
@given(data=pairs_files, recipe=st.sampled_from(["harmful", "identity", "backdoor", "benign"]),
       n_train=st.integers(0, 4), objective=st.sampled_from(["sft", "constrained"]), seed=seeds, tokens=new_tokens)
def test_finetune(model, capsys, data, recipe, n_train, objective, seed, tokens):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_bytes(data)
        argv = ["finetune", "--model", model, "--recipe", recipe, "--objective", objective, "--data", str(path),
                "--n-train", str(n_train), "--n-eval", "1", "--max-steps", "1", "--max-new-tokens", str(tokens),
                "--seed", str(seed), "--judge", "keyword", "--device", "cpu", "--no-progress"]
        if run(capsys, argv, Path(tmp) / "out", ("summary.json", "eval.jsonl", "meta.json", "model/meta.json")):
            summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
            assert summary["steps"] == 1 and summary["after"]["asr"]["n"] >= 1


def test_fuzzing_reaches_success():
    """Every command above ran to completion on some generated input, not only into its errors (run after
    them, in file order)."""
    ran = {command: counts for command, counts in OUTCOMES.items()}
    if len(ran) < 10:
        pytest.skip("the fuzz tests above were not all run")
    assert all(ok > 0 for _, ok in ran.values()), ran
