"""The run report: claims with our numbers beside the paper's, written as Markdown and as one HTML file.

A report is a title, an introduction and a list of :class:`Claim` sections. ``report.md`` links the
figures by relative path (read it inside the run folder); ``report.html`` embeds every figure as a
base64 PNG, so the single file can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepalign.io import atomic_write_text
from deepalign.report.tables import markdown_table


@dataclass
class Claim:
    """One finding of the paper, checked on our models."""

    title: str
    paper: str  # what the paper reports (figure/table and numbers)
    ours: str  # our measurement in one or two sentences
    reproduced: bool | None  # None: not measured in this run
    rule: str = ""  # the rule that decides the verdict, stated for the reader
    table: tuple[Sequence[str], Sequence[Sequence[str]]] | None = None  # (header, rows)
    figures: Sequence[str] = field(default_factory=tuple)  # paths relative to the run folder
    status: str | None = None  # a verdict other than the three (e.g. the judge this claim needs); wins when set
    numbers: dict = field(default_factory=dict)  # our numbers, machine-readable (rates: Rate.to_dict())
    paper_numbers: dict = field(default_factory=dict)  # the paper's numbers the claim compares against

    @property
    def verdict(self) -> str:
        if self.status:
            return self.status
        return {True: "reproduced", False: "not reproduced", None: "not measured"}[self.reproduced]


@dataclass
class Section:
    """A measurement beyond the paper's claims (no verdict), shown after the claims."""

    title: str
    text: str
    table: tuple[Sequence[str], Sequence[Sequence[str]]] | None = None
    figures: Sequence[str] = field(default_factory=tuple)


def render_markdown(title: str, intro: str, claims: Sequence[Claim], sections: Sequence[Section] = ()) -> str:
    lines = [f"# {title}", "", intro, "", "| claim | verdict |", "|---|---|"]
    lines += [f"| {i}. {c.title} | **{c.verdict}** |" for i, c in enumerate(claims, 1)]
    for i, c in enumerate(claims, 1):
        lines += ["", f"## {i}. {c.title}", "", f"**Paper.** {c.paper}", "", f"**Ours.** {c.ours}", ""]
        if c.table:
            lines += markdown_table(*c.table).splitlines() + [""]
        rule = f" ({c.rule})" if c.rule else ""
        lines.append(f"Verdict: **{c.verdict}**{rule}.")
        lines += [f"\n![{c.title}]({fig})" for fig in c.figures]
    for s in sections:
        lines += ["", f"### {s.title}", "", s.text, ""]
        if s.table:
            lines += markdown_table(*s.table).splitlines()
        lines += [f"\n![{s.title}]({fig})" for fig in s.figures]
    return "\n".join(lines) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}
table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
th{background:#f3f3f3}img{max-width:100%;display:block;margin:.8rem 0}.reproduced{color:#15692c}
.not-reproduced{color:#a3161b}.not-measured{color:#777}section{border-top:1px solid #ddd;margin-top:1.5rem}"""


def _inline(text: str) -> str:
    """Escape ``text`` and turn Markdown **bold** into <b>."""
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_inline(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _embedded_png(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(title: str, intro: str, claims: Sequence[Claim], run_dir: str | Path,
                sections: Sequence[Section] = ()) -> str:
    """A self-contained page; raises FileNotFoundError if a figure is missing (a report never lies)."""
    run_dir = Path(run_dir)
    css_class = {True: "reproduced", False: "not-reproduced", None: "not-measured"}
    summary = [(f"{i}. {c.title}", f'<b class="{css_class[c.reproduced]}">{html.escape(c.verdict)}</b>')
               for i, c in enumerate(claims, 1)]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{_inline(intro)}</p>",
             "<table><tr><th>claim</th><th>verdict</th></tr>"
             + "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td></tr>" for a, b in summary) + "</table>"]
    for i, c in enumerate(claims, 1):
        parts.append(f"<section><h2>{i}. {html.escape(c.title)}</h2><p><b>Paper.</b> {_inline(c.paper)}</p>"
                     f"<p><b>Ours.</b> {_inline(c.ours)}</p>")
        if c.table:
            parts.append(_html_table(*c.table))
        rule = f" ({_inline(c.rule)})" if c.rule else ""
        parts.append(f'<p>Verdict: <b class="{css_class[c.reproduced]}">{html.escape(c.verdict)}</b>{rule}.</p>')
        parts += [_embedded_png(run_dir / fig, c.title) for fig in c.figures]
        parts.append("</section>")
    for s in sections:
        parts.append(f"<section><h3>{html.escape(s.title)}</h3><p>{_inline(s.text)}</p>")
        if s.table:
            parts.append(_html_table(*s.table))
        parts += [_embedded_png(run_dir / fig, s.title) for fig in s.figures]
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(run_dir: str | Path, title: str, intro: str, claims: Sequence[Claim],
                 sections: Sequence[Section] = ()) -> str:
    """Write ``report.md`` and ``report.html`` into ``run_dir`` (``sections`` after the claims); returns the
    Markdown."""
    text = render_markdown(title, intro, claims, sections)
    page = render_html(title, intro, claims, run_dir, sections)
    atomic_write_text(Path(run_dir) / "report.md", text)
    atomic_write_text(Path(run_dir) / "report.html", page)
    return text
