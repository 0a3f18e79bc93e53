"""The report: Markdown links the figures; report.html embeds every one, and a browser renders them all."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import pytest
from conftest import image_sources

from deepalign.report.document import Claim, write_report
from deepalign.report.figures import plot_lines


def _claims(tmp_path) -> list[Claim]:
    plot_lines({"a": ([0, 1, 2], [0.1, 0.5, 0.9], None)}, tmp_path / "figures" / "one.png", xlabel="k", ylabel="r",
               title="one")
    plot_lines({"b": ([0, 1], [0.3, 0.2], None)}, tmp_path / "figures" / "two.png", xlabel="k", ylabel="r",
               title="two")
    return [
        Claim("First <claim>", "paper says 42.1%", "ours **12%**", True, "rule one", (["k", "rate"], [["0", "1%"]]),
              ["figures/one.png"]),
        Claim("Second", "paper", "ours", False, figures=["figures/two.png", "figures/one.png"]),
        Claim("Third", "paper", "not run", None),
    ]


def test_markdown_lists_verdicts_and_links_figures(tmp_path):
    text = write_report(tmp_path, "Title", "Intro.", _claims(tmp_path))
    assert "| 1. First <claim> | **reproduced** |" in text
    assert "| 2. Second | **not reproduced** |" in text and "| 3. Third | **not measured** |" in text
    assert "| k | rate |\n|---|---|\n| 0 | 1% |" in text
    assert text.count("](figures/one.png)") == 2 and "](figures/two.png)" in text


def test_html_embeds_every_figure_as_a_valid_png(tmp_path):
    from matplotlib.image import imread

    write_report(tmp_path, "Title", "Intro.", _claims(tmp_path))
    page = (tmp_path / "report.html").read_text()
    sources = image_sources(page)
    assert len(sources) == 3
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        image = imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # a real, non-blank picture
    assert "First &lt;claim&gt;" in page and "<b>12%</b>" in page  # escaped text, bold kept
    assert "figures/" not in page  # nothing points outside the file


def test_missing_figure_is_an_error_not_a_broken_report(tmp_path):
    claims = [Claim("x", "p", "o", True, figures=["figures/absent.png"])]
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path, "T", "I", claims)
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "report.md").exists()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_headless_chromium_renders_every_figure(tmp_path):
    write_report(tmp_path, "Title", "Intro.", _claims(tmp_path))
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
              "document.title='rendered '+im.filter(i=>i.complete&&i.naturalWidth>0).length+' of '+im.length;});"
              "</script>")
    probe.write_text((tmp_path / "report.html").read_text().replace("</body>", script + "</body>"))
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom",
         probe.as_uri()], capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    title = re.search(r"<title>(.*?)</title>", done.stdout).group(1)
    assert title == "rendered 3 of 3"
