"""``PairsTableDataset``: a polars table (the pairs contract) whose kedro-viz preview can show
nested columns. ``prompt_messages`` is a list of {role, content} structs; the stock polars
preview hands numpy arrays of dicts to the JSON export and the preview is lost."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from kedro.io.core import get_filepath_str
from kedro_datasets._typing import TablePreview
from kedro_datasets.polars import EagerPolarsDataset

from prefalign.datasets.previews import table_preview

PREVIEW_CELL_CHARS = 120  # a whole prompt in a cell made one row taller than kedro-viz's panel: only the header showed


class PairsTableDataset(EagerPolarsDataset):
    """``polars.EagerPolarsDataset`` with a JSON-safe preview: nested columns (lists, structs) are
    shown as JSON text. Loading and saving are the parent's, unchanged.

    Examples:
        ```yaml
        pairs:
          type: prefalign.datasets.pairs_table.PairsTableDataset
          file_format: parquet
          filepath: data/03_primary/pairs.parquet
        ```
    """

    def save(self, data: pl.DataFrame | pl.LazyFrame) -> None:
        """Save a DataFrame as the parent does; a LazyFrame (the streaming feedback path) is run by
        polars' streaming engine straight into the local parquet file, never held whole."""
        if not isinstance(data, pl.LazyFrame):
            return super().save(data)
        if self._file_format != "parquet" or self._protocol not in ("file", ""):
            return super().save(data.collect(engine="streaming"))
        path = Path(get_filepath_str(self._get_save_path(), self._protocol))
        path.parent.mkdir(parents=True, exist_ok=True)
        data.sink_parquet(path, engine="streaming", **self._save_args)
        self._invalidate_cache()
        return None

    def preview(self, nrows: int = 5) -> TablePreview:
        """The first ``nrows`` rows as {index, columns, data}: nested values as JSON text, texts cut
        to ``PREVIEW_CELL_CHARS``, NaN as null."""
        data = self._copy().load().limit(nrows if type(nrows) is int else 5)
        return TablePreview(table_preview(data, PREVIEW_CELL_CHARS, nested_as_json=True))


__all__ = ["PairsTableDataset"]
