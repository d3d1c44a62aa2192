"""``MarkdownDataset``: a Markdown text file that kedro-viz can preview as rendered HTML."""

from __future__ import annotations

from kedro_datasets._typing import HTMLPreview
from kedro_datasets.text import TextDataset
from markdown_it import MarkdownIt


class MarkdownDataset(TextDataset):
    """Loads and saves a Markdown report as a ``str``, exactly like ``text.TextDataset``; in addition
    ``preview()`` renders it (tables included) so the report reads as a page in kedro-viz's
    preview panel, not as raw pipes and asterisks.

    Example catalog entry::

        validation_report:
          type: prefalign.datasets.markdown_report.MarkdownDataset
          filepath: data/08_reporting/validation_report.md
          versioned: true

    Example usage::

        dataset = MarkdownDataset(filepath="report.md")
        dataset.save("# Report\\n\\n| a | b |\\n|---|---|\\n| 1 | 2 |\\n")
        dataset.load()      # the Markdown text, unchanged
        dataset.preview()   # '<h1>Report</h1>\\n<table>...'  (what kedro-viz shows)
    """

    def preview(self, max_chars: int = 200_000) -> HTMLPreview:
        """The report rendered to HTML; longer reports are cut at ``max_chars`` of Markdown first."""
        text = self.load()[:max_chars]
        # markdown-it-py ships with rich (a Kedro dependency); CommonMark plus GitHub-style tables.
        return HTMLPreview(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))
