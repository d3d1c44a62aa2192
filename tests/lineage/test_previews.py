"""Every project dataset's kedro-viz preview is plain JSON (json.dumps with allow_nan=False), also
for the tables kedro-datasets' own preview cannot export (a list column such as token_ids)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
