"""JSON-safe previews for kedro-viz (``kedro viz build --include-previews`` and the preview panel).

kedro-viz serialises whatever a dataset's ``preview()`` returns; a numpy array, a NaN or a
polars-specific value in it fails the whole export ("Unable to serialize unknown type"). Every
project dataset builds its preview from these helpers, so only plain JSON types come out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl

MAX_CELL_CHARS = 300  # a long response is cut in the preview table, never in the data
MAX_LIST_ITEMS = 20


def json_safe(value: Any, max_chars: int = MAX_CELL_CHARS) -> Any:
    """``value`` as plain JSON types: lists/tuples/arrays become lists (first ``MAX_LIST_ITEMS``),
    non-finite floats None, long strings cut to ``max_chars`` (with an ellipsis), other objects str."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value if len(value) <= max_chars else value[:max_chars] + "…"
    if isinstance(value, dict):
        return {str(k): json_safe(v, max_chars) for k, v in value.items()}
    if isinstance(value, pl.Series):
        value = value.to_list()
    if hasattr(value, "tolist") and not isinstance(value, (bytes, bytearray)):  # numpy arrays and scalars
        value = value.tolist()
        if not isinstance(value, list):
            return json_safe(value, max_chars)
    if isinstance(value, (list, tuple, set)):
        items = list(value)
        head = [json_safe(v, max_chars) for v in items[:MAX_LIST_ITEMS]]
        return head + [f"… {len(items) - MAX_LIST_ITEMS} more"] if len(items) > MAX_LIST_ITEMS else head
    return json_safe(str(value), max_chars)


def table_preview(frame: pl.DataFrame) -> dict[str, Any]:
    """A polars frame in the ``{"index", "columns", "data"}`` layout of kedro-viz's TablePreview."""
    return {
        "index": list(range(frame.height)),
        "columns": list(frame.columns),
        "data": [[json_safe(cell) for cell in row] for row in frame.iter_rows()],
    }


def checkpoint_summary(directory: Path, marker_file: str) -> dict[str, Any]:
    """What a saved checkpoint directory is, read from its small JSON files (weights stay unread):
    kind and metadata (the marker), the architecture, the files and their sizes."""
    summary: dict[str, Any] = {"path": str(directory)}
    marker = directory / marker_file
    if marker.is_file():
        summary.update(json.loads(marker.read_text()))
    config = directory / "config.json"
    if config.is_file():
        keys = ("model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "vocab_size", "max_position_embeddings", "tie_word_embeddings", "torch_dtype", "dtype")
        summary["config"] = {k: v for k, v in json.loads(config.read_text()).items() if k in keys}
    summary["files"] = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
    return json_safe(summary)
