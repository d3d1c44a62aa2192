"""Every project dataset's kedro-viz preview is plain JSON (json.dumps with allow_nan=False), also
for the tables kedro-datasets' own preview cannot export (a list column such as token_ids)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import polars as pl
from kedro.io.core import Version

from prefalign.datasets.model_checkpoint import ModelCheckpointDataset
from prefalign.datasets.polars_table import PolarsTableDataset
from prefalign.datasets.previews import json_safe
from prefalign.datasets.raw_records import RawRecordsDataset

RAW = Path(__file__).resolve().parents[2] / "data" / "01_raw"


def _strict(value) -> str:
    return json.dumps(value, allow_nan=False)


def test_a_generations_table_with_list_cells_previews_as_plain_json(tmp_path: Path):
    frame = pl.DataFrame({
        "prompt_index": [0, 1], "response": ["ok", "x" * 1000], "token_ids": [[5, 6, 7], list(range(50))],
        "score": [0.5, float("nan")], "finished": [True, False],
    })
    dataset = PolarsTableDataset(filepath=str(tmp_path / "generations.parquet"), file_format="parquet",
                                 version=Version(None, None))
    dataset.save(frame)
    preview = dataset.preview()
    _strict(preview)
    assert preview["columns"] == frame.columns and len(preview["data"]) == 2
    row = preview["data"][1]
    assert row[2][:3] == [0, 1, 2] and row[2][-1] == "… 30 more"  # the list, capped
    assert row[3] is None and len(row[1]) < 400  # NaN -> null, long text cut
    assert PolarsTableDataset(filepath=str(tmp_path / "generations.parquet"), file_format="parquet",
                              version=Version(None, None)).load().equals(frame, null_equal=True)  # data unchanged


def test_json_safe_turns_numpy_into_lists():
    assert json_safe({"a": np.arange(3), "b": np.float32(0.5), "c": (1, "x")}) == {"a": [0, 1, 2], "b": 0.5, "c": [1, "x"]}


def test_raw_records_preview_shows_the_first_records():
    preview = RawRecordsDataset(filepath=str(RAW / "pandalm" / "testset-v1.json")).preview(nrows=3)
    _strict(preview)
    assert preview["columns"] == ["file", "position", "record", "error"] and len(preview["data"]) == 3
    assert '"instruction"' in preview["data"][0][2]


def test_a_checkpoint_without_a_version_says_so(tmp_path: Path):
    preview = ModelCheckpointDataset(filepath=str(tmp_path / "model"), version=Version(None, None)).preview()
    assert "no version saved yet" in json.loads(preview)["status"]


def test_a_pairs_preview_has_short_cells(tmp_path: Path):
    """A whole prompt per cell made the first row taller than kedro-viz's panel, which then showed
    the header alone (issue 23 item 11): cells are cut to 120 characters, nested columns are JSON text."""
    from prefalign.core.schema import PAIRS_SCHEMA
    from prefalign.datasets.polars_table import PolarsTableDataset as PairsTableDataset

    long = "Explain " + "why " * 300
    rows = [{"pair_id": f"p{i}", "prompt_id": "q", "prompt": long, "prompt_messages": [{"role": "user", "content": long}],
             "chosen": "A", "rejected": "B", "margin": None, "p_chosen": 0.75, "source": "hh_rlhf", "feedback": "human",
             "signal": "binary", "true_p": float("nan"), "split": "train"} for i in range(7)]
    dataset = PairsTableDataset(filepath=str(tmp_path / "pairs.parquet"), file_format="parquet", version=Version(None, None))
    dataset.save(pl.DataFrame(rows, schema=PAIRS_SCHEMA))
    preview = dataset.preview()
    _strict(preview)
    assert len(preview["data"]) == 5 and preview["columns"] == list(PAIRS_SCHEMA)
    cells = [cell for row in preview["data"] for cell in row if isinstance(cell, str)]
    assert max(len(cell) for cell in cells) == 121  # 120 characters and the ellipsis
    messages = preview["data"][0][preview["columns"].index("prompt_messages")]
    assert messages.startswith('[{"role": "user", "content": "Explain why why') and messages.endswith("…")
    assert preview["data"][0][preview["columns"].index("true_p")] is None


def test_a_folder_of_plots_previews_as_one_image(tmp_path: Path):
    """`evaluation_plots` saves a dict of figures into a folder; the stock preview opened the folder
    as a file (IsADirectoryError) and the panel had no image."""
    import base64

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from kedro_datasets.matplotlib import MatplotlibDataset

    from prefalign.datasets.plots import PlotsFolderDataset

    figures = {}
    for name in ("win_rates.png", "training_curves.png", "margins_per_source.png"):
        figures[name], ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
    folder = str(tmp_path / "plots")
    dataset = PlotsFolderDataset(filepath=folder, save_args={"format": "png"})
    dataset.save(figures)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(figures)
    with pytest.raises(IsADirectoryError):
        MatplotlibDataset(filepath=folder).preview()
    image = base64.b64decode(dataset.preview())
    assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) > 10_000


def test_viz_stats_are_written_without_kedro_viz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A run made before `pip install -e ".[viz]"` (the README's order) leaves `.viz/stats.json`."""
    import builtins

    from prefalign.hooks import VizStatsHooks

    real_import = builtins.__import__

    def no_kedro_viz(name, *args, **kwargs):
        if name.startswith("kedro_viz"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_kedro_viz)
    hooks = VizStatsHooks()
    hooks.before_pipeline_run(run_params={})
    hooks.after_dataset_saved("pairs", pl.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]}))
    hooks.after_pipeline_run(run_params={"project_path": str(tmp_path)}, catalog=None)
    assert json.loads((tmp_path / ".viz" / "stats.json").read_text()) == {"pairs": {"rows": 3, "columns": 2}}


def test_viz_stats_skip_a_lazy_frame_without_resolving_it():
    """A LazyFrame (the streaming env's pairs) has no row count: it is left out, and its schema is
    not resolved (polars warned "determining the width of a LazyFrame ..." on every streaming run)."""
    import warnings

    from prefalign.hooks import VizStatsHooks

    hooks = VizStatsHooks()
    hooks.before_pipeline_run(run_params={})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hooks.after_dataset_loaded("pairs", pl.LazyFrame({"a": [1, 2, 3]}).with_columns(b=pl.col("a") * 2))
    assert hooks._stats == {}
