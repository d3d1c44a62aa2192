"""``PairsTableDataset``: a polars table (the pairs contract) whose kedro-viz preview can show
nested columns. ``prompt_messages`` is a list of {role, content} structs; the stock polars
preview hands numpy arrays of dicts to the JSON export and the preview is lost."""

from __future__ import annotations

import json

from kedro_datasets._typing import TablePreview
from kedro_datasets.polars import EagerPolarsDataset


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

    def preview(self, nrows: int = 5) -> TablePreview:
        """The first ``nrows`` rows as {index, columns, data}, nested values as JSON text."""
        data = self._copy().load().limit(nrows if type(nrows) is int else 5)
        nested = {name for name, dtype in data.schema.items() if dtype.is_nested()}
        rows = [[json.dumps(row[c], ensure_ascii=False) if c in nested else row[c] for c in data.columns]
                for row in data.to_dicts()]
        return TablePreview({"index": list(range(len(rows))), "columns": data.columns, "data": rows})


__all__ = ["PairsTableDataset"]
