"""MarkdownDataset: text in and out unchanged (as text.TextDataset), rendered HTML as its preview."""

from __future__ import annotations

import inspect
import re
from html.parser import HTMLParser
from pathlib import Path

from kedro.io import Version

from prefalign.datasets.markdown_report import MarkdownDataset

REPORT = "# Validation report: pairs\n\n**Verdict: PASSED**\n\n| expectation | result |\n|---|---|\n| <b>x</b> | pass |\n"


def test_round_trip_is_the_text_unchanged(tmp_path: Path):
    dataset = MarkdownDataset(filepath=str(tmp_path / "report.md"))
    dataset.save(REPORT)
    assert dataset.load() == REPORT
    assert (tmp_path / "report.md").read_text() == REPORT


def test_preview_renders_headings_tables_and_escapes_html(tmp_path: Path):
    dataset = MarkdownDataset(filepath=str(tmp_path / "report.md"), version=Version(None, None))
    dataset.save(REPORT)
    html = dataset.preview()
    assert "<h1>Validation report: pairs</h1>" in html
    assert "<strong>Verdict: PASSED</strong>" in html
    assert "<th>expectation</th>" in html and "<td>pass</td>" in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html  # raw HTML in a report is shown, not run
    # kedro-viz picks the preview panel from the return annotation's name.
    annotation = inspect.signature(MarkdownDataset.preview).return_annotation
    assert getattr(annotation, "__name__", str(annotation)) == "HTMLPreview"


def test_preview_cuts_long_reports(tmp_path: Path):
    dataset = MarkdownDataset(filepath=str(tmp_path / "report.md"))
    dataset.save("word " * 1000)
    assert len(dataset.preview(max_chars=50)) < 100


def kedro_viz_markdown_pass(html: str) -> str:
    """The inline steps kedro-viz 12.5's preview panel applies to an HTMLPreview after sanitising it
    (html/assets/index-*.js, function `Zae`), ported to Python: emphasis by `**`, `__`, `*`, `_`
    within a line (JavaScript's `.` stops at a newline, as Python's), then every newline a <br>."""
    for pattern, tag in ((r"\*\*(.*?)\*\*", "strong"), (r"__(.*?)__", "strong"), (r"\*(.*?)\*", "em"), (r"_(.*?)_", "em")):
        html = re.sub(pattern, rf"<{tag}>\1</{tag}>", html)
    html = re.sub(r"\n\s*\n", "</p><p>", html)
    return html.replace("\n", "<br>")


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text, self.tags, self.in_pre = [], [], False

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_starttag(self, tag: str, attrs) -> None:
        self.in_pre = self.in_pre or tag == "pre"
        if not (tag == "br" and self.in_pre):  # a line break inside a code block is right
            self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self.in_pre = self.in_pre and tag != "pre"


def test_preview_keeps_underscores_and_asterisks_through_kedro_viz(tmp_path: Path):
    """`evaluated_at ... tulu2_bon` showed as `evaluatedat ... tulu2bon` in kedro-viz (issue 23 item 11)."""
    report = ("# Run\n\nevaluated_at: 2026-12-07 · sources: hh_rlhf 40, tulu2_bon 15\n\n"
              "| model | p<0.05* |\n|---|---|\n| reward_gpm_synthetic | 0.5 |\n\n![reliability_p_chosen](plots/reliability_p_chosen.png)\n\n"
              "```\nkedro run --pipelines reward_x\n```\n")
    dataset = MarkdownDataset(filepath=str(tmp_path / "report.md"))
    dataset.save(report)
    shown = _Text()
    shown.feed(kedro_viz_markdown_pass(dataset.preview()))
    text = "".join(shown.text)
    for phrase in ("evaluated_at: 2026-12-07", "hh_rlhf 40, tulu2_bon 15", "reward_gpm_synthetic", "p<0.05*",
                   "[reliability_p_chosen]", "kedro run --pipelines reward_x"):
        assert phrase in text, (phrase, text)
    assert "em" not in shown.tags and "strong" not in shown.tags and "br" not in shown.tags, shown.tags
    assert {"h1", "table", "th", "td", "pre"} <= set(shown.tags)
