"""Canonical text: one form for every comparison and hash of texts (docs/methods.md s8).

Two texts that are the same to a reader must compare equal and hash alike (pair_id, prompt_id,
the chosen == rejected check, deduplication, conflict detection), or a pair of identical answers
becomes a "preference" and one prompt can straddle the splits. The canonical form:

1. Unicode NFC (composed "é" and "e" + combining accent are one text);
2. invisible characters removed: Unicode format characters (category Cf: zero-width space
   U+200B, joiners U+200C/U+200D, word joiner U+2060, byte-order mark U+FEFF, soft hyphen
   U+00AD, bidi marks, ...);
3. every run of whitespace (spaces, tabs, newlines, NBSP and other Unicode spaces) becomes one
   space, and leading/trailing whitespace is removed.

The STORED texts are kept as the source wrote them (a model should see the paragraphs and code
indentation); only comparisons and hashes use the canonical form. Tested in
tests/feedback/test_canonical_text.py.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import polars as pl

_WHITESPACE = re.compile(r"\s+")
# text -> canonical form, while a ``canonical_memo()`` block runs (None outside one). A context
# variable, so threads (kedro's ThreadRunner) and nested blocks each see their own / the outer memo.
_MEMO: ContextVar[dict[str, str] | None] = ContextVar("canonical_text_memo", default=None)


def _is_invisible(char: str) -> bool:
    return unicodedata.category(char) == "Cf"


def canonical_text(text: str) -> str:
    """The canonical form of ``text`` (NFC, no invisible characters, whitespace runs collapsed).

    Args:
        text: any Python string.

    Returns:
        The canonical string; ``""`` when the text has no visible content.

    Inside a ``canonical_memo()`` block each distinct text is canonicalised once.

    Source: docs/methods.md s8 ("Canonical text").
    """
    memo = _MEMO.get()
    if memo is None:
        return _canonical(text)
    canonical = memo.get(text)
    if canonical is None:
        canonical = memo[text] = _canonical(text)
    return canonical


def _canonical(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    if not text.isascii():
        text = "".join(c for c in text if not _is_invisible(c))
        text = unicodedata.normalize("NFC", text)  # removing a mark may let two characters compose
    # split() cuts at runs of the same whitespace set as re's \s (Py_UNICODE_ISSPACE) and drops the
    # ends: equal to _WHITESPACE.sub(" ", text).strip(), 3x faster on long texts
    return " ".join(text.split())


@contextmanager
def canonical_memo() -> Iterator[dict[str, str]]:
    """Within the block, ``canonical_text`` (and so every check and id hash built on it) computes
    each distinct text once: one source's ingest (parsing, within-prompt pairs, orientation) and the
    pairs table (conflicts, pair_id, prompt_id) would otherwise canonicalise a text up to four times.

    Yields:
        The memo, text -> canonical form. A block inside another shares the outer memo; the memo is
        dropped when the outermost block ends (it holds every distinct text seen, so scope it to one table).
    """
    outer = _MEMO.get()
    if outer is not None:
        yield outer
        return
    token = _MEMO.set({})
    try:
        yield _MEMO.get()
    finally:
        _MEMO.reset(token)


def has_visible_content(text: str) -> bool:
    """True when ``text`` has at least one character that is not whitespace or invisible.

    Args:
        text: any Python string.

    Returns:
        False when the canonical form (docs/methods.md s8.1) is empty, True otherwise.
    """
    return canonical_text(text) != ""


def same_to_a_reader(a: str, b: str) -> bool:
    """True when the two texts have the same canonical form (docs/methods.md s8.1).

    Args:
        a: one text.
        b: the other text.

    Returns:
        ``canonical_text(a) == canonical_text(b)``.
    """
    return canonical_text(a) == canonical_text(b)


def canonical_expr(column: str | pl.Expr) -> pl.Expr:
    """``canonical_text`` as a vectorised polars expression (the same three steps, run in Rust),
    for whole columns: validation compares millions of texts with it. Matches ``canonical_text``
    on every text except ones holding ASCII information separators (U+001C-U+001F), which Python
    counts as whitespace and Rust's regex does not (validation quarantines such control characters anyway).

    Args:
        column: a column name, or an expression giving a string column.

    Returns:
        A polars string expression: the canonical form of each value (null stays null).

    Source: docs/methods.md s8.1.
    """
    expr = pl.col(column) if isinstance(column, str) else column
    return (expr.str.normalize("NFC").str.replace_all(r"\p{Cf}", "").str.normalize("NFC")
            .str.replace_all(r"\s+", " ").str.strip_chars())
