"""MarkdownDataset: text in and out unchanged (as text.TextDataset), rendered HTML as its preview."""

from __future__ import annotations

import inspect
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
