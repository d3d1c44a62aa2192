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

import polars as pl

_WHITESPACE = re.compile(r"\s+")


def _is_invisible(char: str) -> bool:
    return unicodedata.category(char) == "Cf"


def canonical_text(text: str) -> str:
    """The canonical form of ``text`` (NFC, no invisible characters, whitespace runs collapsed).

    Args:
        text: any Python string.

    Returns:
        The canonical string; ``""`` when the text has no visible content.

    Source: docs/methods.md s8 ("Canonical text").
    """
    text = unicodedata.normalize("NFC", text)
    if not text.isascii():
        text = "".join(c for c in text if not _is_invisible(c))
        text = unicodedata.normalize("NFC", text)  # removing a mark may let two characters compose
    return _WHITESPACE.sub(" ", text).strip()


def has_visible_content(text: str) -> bool:
    """True when ``text`` has at least one character that is not whitespace or invisible."""
    return canonical_text(text) != ""


def same_to_a_reader(a: str, b: str) -> bool:
    """True when the two texts have the same canonical form (section 8)."""
    return canonical_text(a) == canonical_text(b)


def canonical_expr(column: str | pl.Expr) -> pl.Expr:
    """``canonical_text`` as a vectorised polars expression (the same three steps, run in Rust),
    for whole columns: validation compares millions of texts with it. Matches ``canonical_text``
    on every text except ones holding ASCII information separators (U+001C-U+001F), which Python
    counts as whitespace and Rust's regex does not (validation quarantines such control characters anyway)."""
    expr = pl.col(column) if isinstance(column, str) else column
    return (expr.str.normalize("NFC").str.replace_all(r"\p{Cf}", "").str.normalize("NFC")
            .str.replace_all(r"\s+", " ").str.strip_chars())
