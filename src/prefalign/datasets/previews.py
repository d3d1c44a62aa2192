"""JSON-safe previews for kedro-viz (``kedro viz build --include-previews`` and the preview panel).

kedro-viz serialises whatever a dataset's ``preview()`` returns; a numpy array, a NaN or a
polars-specific value in it fails the whole export ("Unable to serialize unknown type"). Every
project dataset builds its preview from these helpers, so only plain JSON types come out.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import polars as pl

MAX_CELL_CHARS = 300  # a long response is cut in the preview table, never in the data
# in a table dataset's preview a whole prompt per cell made one row taller than kedro-viz's panel:
# only the header showed, so its cells are cut shorter
TABLE_CELL_CHARS = 120
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


def _holds_struct(dtype: pl.DataType) -> bool:
    """A struct, or a (nested) list of structs: e.g. ``prompt_messages``, a list of {role, content}."""
    while isinstance(dtype, (pl.List, pl.Array)):
        dtype = dtype.inner
    return isinstance(dtype, pl.Struct)


def table_preview(frame: pl.DataFrame, max_chars: int = MAX_CELL_CHARS) -> dict[str, Any]:
    """A polars frame in the ``{"index", "columns", "data"}`` layout of kedro-viz's TablePreview;
    every text cut to ``max_chars``; cells holding structs (``prompt_messages``) as JSON text, lists
    of plain values (``token_ids``) as capped lists, NaN as null."""
    as_json = {name for name, dtype in frame.schema.items() if _holds_struct(dtype)}
    rows = [[json.dumps(row[c], ensure_ascii=False, default=str) if c in as_json and row[c] is not None else row[c]
             for c in frame.columns] for row in frame.to_dicts()]
    return {
        "index": list(range(frame.height)),
        "columns": list(frame.columns),
        "data": [[json_safe(cell, max_chars) for cell in row] for row in rows],
    }


# kedro-viz (12.x) passes an HTMLPreview through its own Markdown-like regexes after sanitising it:
# `_text_` and `*text*` become <em> on one line, every newline becomes <br>. So `evaluated_at ...
# tulu2_bon` showed as "evaluated<em>at ... tulu2</em>bon". Its regexes never match across a
# newline, and a newline inside an attribute value survives the sanitiser and shows nothing.
_BREAK = '<span data-nl="\n"></span>'
_TAG = re.compile(r"(<[^>]*>)")
_PRE = re.compile(r"(<pre[\s\S]*?</pre>)")


def viz_safe_html(html: str) -> str:
    """HTML that kedro-viz's preview panel shows as written: each ``_`` and ``*`` of the text is
    followed by an empty span whose attribute holds a newline (so no two of them pair into
    emphasis), newlines between tags are spaces (no stray ``<br>``), and an attribute holding ``_``
    or ``*`` (an image path) is dropped: an image becomes its alt text, in brackets.

    Args:
        html: rendered HTML (markdown-it's output: tags never span lines, text is escaped).

    Returns:
        The HTML for an ``HTMLPreview``; in a browser without kedro-viz it reads the same.
    """
    out = []
    for block in _PRE.split(html):
        if not block.startswith("<pre"):
            block = block.replace("\n", " ")
        out.append("".join(_safe_tag(part) if _TAG.fullmatch(part) else _safe_text(part) for part in _TAG.split(block)))
    return "".join(out)


def _safe_text(text: str) -> str:
    return text.replace("_", "_" + _BREAK).replace("*", "*" + _BREAK)


def _safe_tag(tag: str) -> str:
    """A tag as is, or, when an attribute holds ``_`` or ``*``: an image as ``[alt]``, others bare."""
    if "_" not in tag and "*" not in tag:
        return tag
    if tag.lower().startswith("<img"):
        alt = re.search(r'alt="([^"]*)"', tag)
        return _safe_text(f"[{alt.group(1) if alt else 'image'}]")
    name = re.match(r"<(/?)\s*([A-Za-z0-9]+)", tag)
    return f"<{name.group(1)}{name.group(2)}>" if name else ""


def images_preview(folder: Path, columns: int = 2, width_inches: float = 12.0) -> str:
    """Every PNG in ``folder`` (sorted by name) on one contact sheet, titled with its file name, as
    the base64 PNG of kedro-viz's ImagePreview; empty string for a folder without PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    files = sorted(Path(folder).glob("*.png"))
    if not files:
        return ""
    rows = math.ceil(len(files) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width_inches, width_inches / columns * 0.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, path in zip(axes.flat, files):
        ax.imshow(mpimg.imread(path))
        ax.set_title(path.stem, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


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
