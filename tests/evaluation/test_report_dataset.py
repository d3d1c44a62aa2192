"""The Markdown report is saved with its plots in its own version folder, so its image links work there."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from kedro.io import Version  # noqa: E402

from prefalign.datasets.markdown_report import MarkdownReportWithPlotsDataset  # noqa: E402


def test_versioned_report_links_resolve_inside_its_version_folder(tmp_path: Path):
    dataset = MarkdownReportWithPlotsDataset(filepath=str(tmp_path / "report.md"), version=Version(None, None))
    figure, axis = plt.subplots()
    axis.plot([0, 1], [0, 1])
    text = "# Report\n\n![curve](plots/curve.png)\n"
    dataset.save({"markdown": text, "plots": {"curve.png": figure}})
    (saved,) = list((tmp_path / "report.md").glob("*/report.md"))  # report.md/<version>/report.md
    for link in re.findall(r"\]\(([^)]+)\)", saved.read_text()):
        assert (saved.parent / link).read_bytes().startswith(b"\x89PNG")
    assert dataset.load() == text
    assert "<h1>Report</h1>" in dataset.preview()
