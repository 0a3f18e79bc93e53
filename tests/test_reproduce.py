"""End to end: `deepalign reproduce` on the organism writes a report whose claims are reproduced, and resumes."""

from __future__ import annotations

import pytest

from deepalign.cli import main


@pytest.mark.slow
def test_reproduce_end_to_end_and_resume(tmp_path):
    out = tmp_path / "run"
    assert main(["reproduce", "--out", str(out), "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert report.count("**reproduced**") == 2
    for fig in ("kl/kl_profile.png", "prefill/prefill_asr.png"):
        assert (out / fig).read_bytes()[:4] == b"\x89PNG"
    rows = (out / "prefill" / "rows.jsonl").read_text().splitlines()
    lines = rows[:-7]
    (out / "prefill" / "rows.jsonl").write_text("\n".join(lines) + "\n" + rows[-7][:15])  # killed mid-write
    assert main(["reproduce", "--out", str(out), "--no-progress"]) == 0
    assert sorted((out / "prefill" / "rows.jsonl").read_text().splitlines()) == sorted(rows)
    assert (out / "report.md").read_text() == report
