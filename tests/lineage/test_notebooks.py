"""The notebooks run top to bottom on the `ci` environment against the trained tiny project, and
load everything through the catalog (no hard-coded data paths)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .project_copy import REPO_ROOT, subprocess_env

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
# notebooks whose plots must come out as images
WITH_PLOTS = {"01_pairs_and_margins.ipynb": 2, "03_reward_models.ipynb": 1}
# notebook -> text its outputs must contain (what the reader comes for)
EXPECTED_OUTPUT = {
    "01_pairs_and_margins.ipynb": ["pairs from", "highest p_chosen", "lowest p_chosen"],
    "02_validation_report.ipynb": ["Validation report", "3 quarantined", "failed_expectations"],
    "03_reward_models.ipynb": ["loaded: ['reward_bt', 'reward_mmpo', 'reward_gpm']", "reward_gpm   logits a>b",
                               "whole_cycle_right"],
}


def test_the_notebooks_are_the_ones_this_test_knows():
    assert [p.name for p in NOTEBOOKS] == sorted(EXPECTED_OUTPUT)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_loads_data_through_the_catalog_only(path: Path):
    source = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")
    assert "%load_ext kedro.ipython" in source
    assert not re.search(r"data/0\d_|read_parquet|read_csv|open\(", source), f"{path.name} reads files directly"


def _text(book: nbformat.NotebookNode) -> str:
    parts = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            for mime in ("text/plain", "text/markdown", "text/html"):
                parts.append(str(output.get("data", {}).get(mime, "")))
    return "\n".join(parts)


async def _run_all(paths: list[Path], project: Path) -> dict[str, nbformat.NotebookNode]:
    books = {p.name: nbformat.read(project / "notebooks" / p.name, as_version=4) for p in paths}
    clients = [NotebookClient(book, timeout=300, kernel_name="python3",
                              resources={"metadata": {"path": str(project / "notebooks")}}) for book in books.values()]
    await asyncio.gather(*(client.async_execute() for client in clients))
    return books


def test_notebooks_run_top_to_bottom_on_ci(trained_project: Path, monkeypatch: pytest.MonkeyPatch):
    # The kernels inherit this environment: the ci config, the repository's src.
    for key, value in subprocess_env(KEDRO_ENV="ci").items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    books = asyncio.run(_run_all(NOTEBOOKS, trained_project))  # raises CellExecutionError on any failing cell
    for name, expected in EXPECTED_OUTPUT.items():
        text = _text(books[name])
        for snippet in expected:
            assert snippet in text, f"{name}: output lacks {snippet!r}"
    for name, count in WITH_PLOTS.items():
        images = sum("image/png" in output.get("data", {}) for cell in books[name].cells for output in cell.get("outputs", []))
        assert images >= count, f"{name}: {images} plot image(s), expected at least {count}"


def test_readme_docs_and_notebooks_launch_jupyter_the_same_way():
    """One spelling of the launch command everywhere (issue 23 item 12): `kedro jupyter lab --env ci`
    (Kedro's own option, which sets KEDRO_ENV for the kernel), not `KEDRO_ENV=ci kedro jupyter lab`."""
    texts = {path.name: path.read_text() for path in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")), *NOTEBOOKS]}
    spellings = {match for text in texts.values() for match in re.findall(r"(?:KEDRO_ENV=\w+ )?kedro jupyter lab(?: --env \w+)?", text)}
    assert spellings <= {"kedro jupyter lab", "kedro jupyter lab --env ci"}, spellings
    assert "kedro jupyter lab --env ci" in texts["README.md"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_loads_each_dataset_once_and_uses_no_deprecated_matplotlib_argument(path: Path):
    """Notebook 03 loaded each metrics file once per key (24 load lines): a `catalog.load(...)` inside
    a comprehension whose loop variable the dataset name does not use loads the same dataset again
    and again. And `boxplot(vert=...)` is deprecated in matplotlib 3.11, removed in 3.13."""
    source = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")
    for argument, variable in re.findall(r"catalog\.load\(([^()]*)\)[^\n\[\]{}]*? for (\w+) in ", source):
        assert variable in argument, f"{path.name}: catalog.load({argument}) repeated for every {variable}"
    assert "vert=" not in source, f"{path.name}: boxplot(vert=...)"
