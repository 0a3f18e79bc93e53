"""The README's "Use it from TRL" and "Use it from inspect" snippets run as written, on the organism."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def snippet(section: str) -> str:
    """The first ```python block under the README heading ``## {section}``."""
    text = README.read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    match = re.search(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)
    assert match, f"no python snippet under '## {section}'"
    return match.group(1)


def test_use_it_from_trl(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet("Use it from TRL"), "README.md (Use it from TRL)", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    value = float(out.rsplit(":", 1)[1])
    assert value > 0 and (tmp_path / "runs" / "trl").is_dir()


@pytest.mark.slow  # checks the real organism is shallow (the fast suite's small organism is not aligned)
def test_use_it_from_inspect(tmp_path, monkeypatch, capsys):
    pytest.importorskip("inspect_ai")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet("Use it from inspect"), "README.md (Use it from inspect)", "exec"),
         {"__name__": "__readme__"})
    rates = eval(capsys.readouterr().out.strip().splitlines()[-1])  # the printed {name: rate} dict
    assert set(rates) == {"k0", "k5", "k10", "all"}
    assert rates["k10"] > rates["k0"]  # the aligned organism is shallow: prefilling breaks it
    assert list((tmp_path / "runs" / "inspect").glob("*.eval"))
