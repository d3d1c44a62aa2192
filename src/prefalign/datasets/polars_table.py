"""``PolarsTableDataset``: kedro-datasets' ``polars.EagerPolarsDataset`` with a JSON-safe preview.

The upstream preview goes through pandas, which turns a list column (e.g. the ``token_ids`` of
``policy_gpo.generations``) into numpy arrays that kedro-viz cannot serialise; its export then
stops at that dataset. Loading and saving are unchanged.
"""

from __future__ import annotations

from kedro_datasets._typing import TablePreview
from kedro_datasets.polars import EagerPolarsDataset

from prefalign.datasets.previews import table_preview


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

    def preview(self, nrows: int = 5) -> TablePreview:
        """The first ``nrows`` rows; list cells as lists, long texts cut, NaN as null."""
        frame = self._copy().load().head(nrows if isinstance(nrows, int) else 5)
        return TablePreview(table_preview(frame))
