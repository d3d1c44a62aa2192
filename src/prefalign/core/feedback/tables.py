"""Which files of the user-tables folder (``data/01_raw/tables/``) the configured sources read.

A ``preference_table`` source names its file or folder with ``table:`` (relative to that folder;
README, "Bring your own preference table"). Two mistakes cost a user time and are found here,
before a run starts: a ``table:`` that names nothing (a typo), and a file that no source reads (a
block written in ``conf/local`` is not loaded under ``--env ci``: Kedro reads ``conf/base`` and the
one named environment, so the table is silently left out).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TABLE_PARSER = "preference_table"
IGNORED_NAMES = (".gitkeep", "README.md", "README.txt", "README")


def table_sources(sources: Mapping[str, Any] | None, enabled: bool | None = True) -> dict[str, Mapping[str, Any]]:
    """The ``preference_table`` blocks under feedback.sources: the enabled ones (``enabled=True``),
    the disabled ones (False) or all (None).

    Args:
        sources: feedback.sources.
        enabled: True, False or None (all).

    Returns:
        name -> block of the preference_table sources selected.
    """
    out = {}
    for name, body in (sources or {}).items():
        if not isinstance(body, Mapping) or body.get("parser") != TABLE_PARSER:
            continue
        if enabled is None or bool(body.get("enabled", True)) == enabled:
            out[str(name)] = body
    return out


def _files_under(folder: Path) -> list[Path]:
    """Every regular file below ``folder``, hidden files and READMEs left out, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in IGNORED_NAMES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _read_by(folder: Path, source: str, body: Mapping[str, Any]) -> list[Path]:
    """The files one table block reads; ValueError naming the key when it reads nothing."""
    table = body.get("table")
    key = f"feedback.sources.{source}"
    if not isinstance(table, str) or not table.strip():
        raise ValueError(f"{key}.table={table!r}: a preference_table source needs `table:`, the path of its "
                         f"file or folder under {folder}")
    path = folder / table
    if path.is_file():
        return [path]
    if not path.is_dir():
        present = [p.relative_to(folder).as_posix() for p in _files_under(folder)] if folder.is_dir() else []
        close = difflib.get_close_matches(table, present, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else (f"; files there: {', '.join(present[:10])}" if present
                                                               else f"; {folder} holds no file")
        raise ValueError(f"{key}.table={table!r}: no such file or folder under {folder}{hint}")
    if body.get("file_format") == "hf_dataset":
        return _files_under(path)
    glob = body.get("glob")
    if not glob:
        raise ValueError(f"{key}.table={table!r} is a folder: set {key}.glob (e.g. '*.jsonl') or, for a folder saved "
                         f"by datasets' save_to_disk, {key}.file_format: hf_dataset")
    files = sorted(p for p in path.glob(str(glob)) if p.is_file())
    if not files:
        raise ValueError(f"{key}: no file in {path} matches glob {glob!r}")
    return files


def check_user_tables(sources: Mapping[str, Any] | None, folder: str | Path) -> list[str]:
    """Check every enabled table block against the tables folder, and find the files none reads.

    Args:
        sources: the ``feedback.sources`` mapping (all sources; only ``preference_table`` ones are read).
        folder: the user-tables folder (``<raw_data_dir>/tables``, the ``raw_tables`` catalog entry).

    Returns:
        The files under ``folder`` (relative POSIX paths) that no ``preference_table`` source reads,
        enabled or disabled (a disabled block is a deliberate choice, not a forgotten table).

    Raises:
        ValueError: the first enabled block whose ``table`` is missing, names nothing under
            ``folder``, or is a folder without ``glob``/``file_format: hf_dataset``; the message
            names the key and the value (and a close file name when there is one).
    """
    folder = Path(folder)
    read: set[Path] = set()
    for source, body in table_sources(sources, enabled=True).items():
        read.update(_read_by(folder, source, body))
    for source, body in table_sources(sources, enabled=False).items():
        try:
            read.update(_read_by(folder, source, body))
        except ValueError:
            continue  # a disabled block is not checked
    if not folder.is_dir():
        return []
    return [p.relative_to(folder).as_posix() for p in _files_under(folder) if p not in read]
