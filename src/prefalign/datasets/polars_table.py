"""``PolarsTableDataset``: kedro-datasets' ``polars.EagerPolarsDataset`` with a JSON-safe preview,
the project's one dataset for polars tables (the pairs tables, generations, evaluation tables).

The upstream preview goes through pandas, which turns a list column (the ``token_ids`` of
``policy_gpo.generations``) into numpy arrays and the ``prompt_messages`` structs of the pairs
contract into numpy arrays of dicts, which kedro-viz cannot serialise; its export then stops at
that dataset. Loading and saving are unchanged.
"""

from __future__ import annotations

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

    def preview(self, nrows: int = 5) -> TablePreview:
        """The first ``nrows`` rows as {index, columns, data}: texts cut to ``TABLE_CELL_CHARS``
        (with an ellipsis), struct cells (``prompt_messages``) as JSON text, list cells as capped
        lists, NaN as null."""
        frame = self._copy().load().head(nrows if type(nrows) is int else 5)
        return TablePreview(table_preview(frame, TABLE_CELL_CHARS))


__all__ = ["PolarsTableDataset"]
