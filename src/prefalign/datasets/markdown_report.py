"""``MarkdownDataset``: a Markdown text file that kedro-viz can preview as rendered HTML;
``MarkdownReportWithPlotsDataset``: the same, saved with its figures beside it."""

from __future__ import annotations

from pathlib import PurePosixPath

from kedro.io.core import get_filepath_str
from kedro_datasets._typing import HTMLPreview
from kedro_datasets.text import TextDataset
from markdown_it import MarkdownIt

from prefalign.datasets.previews import viz_safe_html


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
        """The report rendered to HTML; longer reports are cut at ``max_chars`` of Markdown first.
        Underscores and asterisks are protected from kedro-viz's own Markdown pass (viz_safe_html)."""
        text = self.load()[:max_chars]
        # markdown-it-py ships with rich (a Kedro dependency); CommonMark plus GitHub-style tables.
        return HTMLPreview(viz_safe_html(MarkdownIt("commonmark", {"html": False}).enable("table").render(text)))


class MarkdownReportWithPlotsDataset(MarkdownDataset):
    """A Markdown report saved together with its figures, so its image links work where it lies.

    ``save({"markdown": text, "plots": {"name.png": Figure}})`` writes the text to the (versioned)
    path and each figure as ``plots/name.png`` in the SAME folder, so the report's relative links
    ``plots/name.png`` resolve in every version folder. ``save(text)`` saves text alone. ``load()``
    returns the Markdown text, ``preview()`` renders it (as ``MarkdownDataset``).

    Example catalog entry::

        evaluation_report_md:
          type: prefalign.datasets.markdown_report.MarkdownReportWithPlotsDataset
          filepath: data/08_reporting/evaluation_report.md
          versioned: true
    """

    def save(self, data: str | dict) -> None:
        if isinstance(data, str):
            data = {"markdown": data, "plots": {}}
        save_path = PurePosixPath(get_filepath_str(self._get_save_path(), self._protocol))
        self._fs.makedirs(str(save_path.parent), exist_ok=True)
        with self._fs.open(str(save_path), **self._fs_open_args_save) as handle:
            handle.write(data["markdown"])
        plots = save_path.parent / "plots"
        if data.get("plots"):
            self._fs.makedirs(str(plots), exist_ok=True)
        for name, figure in (data.get("plots") or {}).items():
            with self._fs.open(str(plots / name), "wb") as handle:
                figure.savefig(handle, format="png", dpi=100)
        self._invalidate_cache()
