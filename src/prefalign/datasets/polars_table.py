"""``PolarsTableDataset``: kedro-datasets' ``polars.EagerPolarsDataset`` with a JSON-safe preview,
the project's one dataset for polars tables (the pairs tables, generations, evaluation tables).

The upstream preview goes through pandas, which turns a list column (the ``token_ids`` of
``policy_gpo.generations``) into numpy arrays and the ``prompt_messages`` structs of the pairs
contract into numpy arrays of dicts, which kedro-viz cannot serialise; its export then stops at
that dataset. Loading is unchanged; saving also takes a LazyFrame (the streaming feedback path),
run by polars' streaming engine straight into a local parquet file.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from kedro.io.core import get_filepath_str
from kedro_datasets._typing import TablePreview
from kedro_datasets.polars import EagerPolarsDataset

from prefalign.datasets.previews import TABLE_CELL_CHARS, table_preview


class PolarsTableDataset(EagerPolarsDataset):
    """``polars.EagerPolarsDataset`` (same arguments: ``filepath``, ``file_format``, ``versioned``,
    ``load_args``, ``save_args``, ``metadata``) whose ``preview`` returns plain JSON types only.

    Example catalog entry:

    .. code-block:: yaml

        pairs:
          type: prefalign.datasets.polars_table.PolarsTableDataset
          filepath: data/03_primary/pairs.parquet
          file_format: parquet
          versioned: true
    """

    def save(self, data: pl.DataFrame | pl.LazyFrame) -> None:
        """Save a DataFrame as the parent does; a LazyFrame (``feedback.engine: streaming``) is run by
        polars' streaming engine straight into the local parquet file, never held whole (other
        formats and remote paths collect it first)."""
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
        """The first ``nrows`` rows as {index, columns, data}: texts cut to ``TABLE_CELL_CHARS``
        (with an ellipsis), struct cells (``prompt_messages``) as JSON text, list cells as capped
        lists, NaN as null."""
        frame = self._copy().load().head(nrows if type(nrows) is int else 5)
        return TablePreview(table_preview(frame, TABLE_CELL_CHARS))


__all__ = ["PolarsTableDataset"]
