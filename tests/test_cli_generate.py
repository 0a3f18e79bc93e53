"""`deepalign generate`: a run resumed after a partial one equals a fresh full run."""

from __future__ import annotations

import json


def test_generate_resume_equals_fresh_run(tmp_path, tiny_model, tiny_tokenizer):
    from deepalign.cli import main

    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Hello there {i}"}) + "\n" for i in range(4)))
    common = ["generate", "--model", str(tmp_path / "m"), "--prompts", str(prompts), "--max-new-tokens", "6",
              "--repeats", "2", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "a"), "--limit", "2"]) == 0
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--out", str(tmp_path / "b")]) == 0
    resumed = sorted((tmp_path / "a" / "generations.jsonl").read_text().splitlines())
    fresh = sorted((tmp_path / "b" / "generations.jsonl").read_text().splitlines())
    assert resumed == fresh and len(fresh) == 8
