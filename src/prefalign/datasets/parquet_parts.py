"""``ParquetPartsDataset``: a table saved as a folder of parquet files, loaded as a polars scan.

For the tables of the streaming feedback path (``feedback.engine: streaming``, conf/streaming):
``save`` takes a ``LazyFrame`` and runs it with polars' streaming engine straight into the folder
(``sink_parquet`` with ``pl.PartitionBy``: at most ``max_rows_per_file`` rows per file), so a table
of tens of millions of pairs is never held in memory; a ``DataFrame`` is written the same way.
``load`` returns a ``LazyFrame`` over every file (``lazy: false`` collects it), so a notebook gets
the whole table with ``catalog.load("pairs")`` and reads only what it selects.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version
from kedro_datasets._typing import TablePreview

from prefalign.datasets.previews import table_preview


class ParquetPartsDataset(AbstractVersionedDataset[pl.DataFrame | pl.LazyFrame, pl.DataFrame | pl.LazyFrame]):
    """A folder of parquet files (``part-*.parquet``), written by polars' streaming engine.

    Examples:
        Using the YAML API:

        ```yaml
        pairs:
          type: prefalign.datasets.parquet_parts.ParquetPartsDataset
          filepath: data/03_primary/pairs
          versioned: true
          max_rows_per_file: 200000
        ```

        Using the Python API:

        >>> import tempfile
        >>> import polars as pl
        >>> from prefalign.datasets.parquet_parts import ParquetPartsDataset
        >>> folder = tempfile.mkdtemp() + "/table"
        >>> dataset = ParquetPartsDataset(filepath=folder, max_rows_per_file=2)
        >>> dataset.save(pl.LazyFrame({"x": [1, 2, 3]}))
        >>> sorted(p.name for p in __import__("pathlib").Path(folder).iterdir())
        ['00000000.parquet', '00000001.parquet']
        >>> dataset.load().collect()["x"].to_list()
        [1, 2, 3]
    """

    def __init__(self, *, filepath: str, max_rows_per_file: int = 200_000, lazy: bool = True, file_format: str = "parquet",
                 version: Version | None = None, metadata: dict[str, Any] | None = None) -> None:
        """Creates a new ``ParquetPartsDataset``.

        Args:
            filepath: the folder (local); with ``versioned: true``, ``<filepath>/<version>/<name>``.
            max_rows_per_file: rows per parquet file written (the sink buffers one file: at ~3 KB a
                pair, 200,000 rows hold ~600 MB).
            lazy: load as a ``LazyFrame`` (True) or collect it into a ``DataFrame`` (False).
            file_format: ``parquet`` only (accepted so that an environment can override a
                ``PolarsTableDataset`` entry, whose ``file_format`` the catalog's soft merge keeps).
            version: kedro's version (from ``versioned: true``).
            metadata: free-form metadata (e.g. the kedro-viz layer); not used by the dataset.

        Raises:
            DatasetError: max_rows_per_file < 1, or a file_format other than parquet.
        """
        if file_format != "parquet":
            raise DatasetError(f"{type(self).__name__} writes parquet files; file_format={file_format!r} is not supported")
        if max_rows_per_file < 1:
            raise DatasetError(f"max_rows_per_file={max_rows_per_file} must be >= 1")
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=os.path.exists,
                         glob_function=lambda pattern: sorted(glob.glob(pattern)))
        self._max_rows = max_rows_per_file
        self._lazy = lazy
        self.metadata = metadata

    def _files(self, folder: Path) -> list[str]:
        return sorted(str(p) for p in folder.rglob("*.parquet"))

    def load(self) -> pl.DataFrame | pl.LazyFrame:
        folder = Path(self._get_load_path())
        files = self._files(folder)
        if not files:
            raise DatasetError(f"{folder} holds no parquet file; run the pipeline that writes it")
        frame = pl.scan_parquet(files, hive_partitioning=False)
        return frame if self._lazy else frame.collect(engine="streaming")

    def save(self, data: pl.DataFrame | pl.LazyFrame) -> None:
        if not isinstance(data, (pl.DataFrame, pl.LazyFrame)):
            raise DatasetError(f"{type(self).__name__} saves a polars DataFrame or LazyFrame, not {type(data).__name__}")
        folder = Path(self._get_save_path())
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        data.lazy().sink_parquet(pl.PartitionBy(str(folder), max_rows_per_file=self._max_rows), row_group_size=20_000,
                                 engine="streaming", mkdir=True)
        if not self._files(folder):  # an empty table: one file holding the schema
            data.lazy().head(0).collect().write_parquet(folder / "00000000.parquet")

    def _exists(self) -> bool:
        try:
            return bool(self._files(Path(self._get_load_path())))
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version, "max_rows_per_file": self._max_rows,
                "lazy": self._lazy}

    def preview(self, nrows: int = 5) -> TablePreview:
        """kedro-viz preview: the first ``nrows`` rows, JSON-safe (nested values as JSON text)."""
        data = self.load()
        head = (data.head(nrows if isinstance(nrows, int) else 5).collect() if isinstance(data, pl.LazyFrame)
                else data.head(nrows if isinstance(nrows, int) else 5))
        return TablePreview(table_preview(head, 120, nested_as_json=True))


__all__ = ["ParquetPartsDataset"]
