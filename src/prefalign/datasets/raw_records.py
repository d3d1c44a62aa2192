"""``RawRecordsDataset``: raw feedback files (JSON lines, JSON arrays, gzipped or not), one file
or a folder of files, loaded as records that keep their file and position and any decode error.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

import polars as pl
from kedro.io.core import AbstractDataset, DatasetError
from kedro_datasets._typing import TablePreview

from prefalign.core.feedback.records import (
    RawFileError,
    RawRecord,
    decode_records,
    infer_file_format,
    iter_json_lines_chunks,
)
from prefalign.datasets.previews import table_preview


class RawRecordsDataset(AbstractDataset[None, "RawReader"]):
    """Loads raw feedback records, lazily and without losing a bad one.

    ``load()`` returns a function (as ``PartitionedDataset`` does) that reads and decodes the
    file(s) when called, so a source that is disabled in parameters never touches its files.
    Calling it returns one ``RawRecord`` per record: ``file`` (relative to ``filepath`` for a
    folder), ``position`` (0-based index in that file), ``record`` (the decoded JSON object) or
    ``error`` (why this record could not be decoded: invalid UTF-8, not JSON, not an object). A
    whole-file failure (unreadable, truncated, corrupt gzip, no readable record) raises
    ``RawFileError`` naming the file.

    Examples:
        Using the YAML API:

        ```yaml
        raw_alpaca_eval:
          type: prefalign.datasets.raw_records.RawRecordsDataset
          filepath: ${runtime_params:raw_data_dir, data/01_raw}/alpaca_eval
          glob: "*.json"            # a folder: every matching file, sorted by name
        raw_hh_rlhf:
          type: prefalign.datasets.raw_records.RawRecordsDataset
          filepath: ${runtime_params:raw_data_dir, data/01_raw}/hh_rlhf/harmless_base_test.jsonl.gz
        ```

        Using the Python API:

        >>> import tempfile
        >>> from pathlib import Path
        >>> from prefalign.datasets.raw_records import RawRecordsDataset
        >>> tmp_path = Path(tempfile.mkdtemp())
        >>> _ = (tmp_path / "a.jsonl").write_bytes(b'{"x": 1}\\n[2]\\n{"x": 3}\\n')
        >>> records = RawRecordsDataset(filepath=str(tmp_path / "a.jsonl")).load()()
        >>> [r.record for r in records]
        [{'x': 1}, None, {'x': 3}]
        >>> print(records[1].error)
        record is a JSON list, expected an object
    """

    # load() hands the node a reader; the files are read only if the node calls it (an enabled
    # source), so the pre-run input check (pipelines/input_checks.py) does not require them.
    loaded_on_demand = True

    def __init__(self, *, filepath: str, glob: str | None = None, file_format: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        """Creates a new ``RawRecordsDataset``.

        Args:
            filepath: a local file, or a folder (then ``glob`` selects its files).
            glob: pattern of the files to read in a folder, e.g. ``"*.jsonl"`` or ``"**/*.jsonl"``
                (recursive). Files are read in sorted order. Required when filepath is a folder.
            file_format: ``json_lines``, ``json_array``, ``json_lines.gz``, ``json_array.gz``,
                ``parquet``, ``csv``, ``arrow_stream`` or ``hf_dataset`` (a folder written by
                Hugging Face ``datasets``' ``save_to_disk``: its Arrow shards are read with pyarrow,
                the ``datasets`` package is not needed); by default inferred from each file's
                name (.jsonl, .json, .jsonl.gz, .json.gz, .parquet, .csv, .arrow).
            metadata: free-form metadata (e.g. the kedro-viz layer); not used by the dataset.
        """
        self._filepath = PurePosixPath(filepath)
        self._glob = glob
        self._file_format = file_format
        self.metadata = metadata

    def _files(self) -> list[tuple[Path, str]]:
        root = Path(self._filepath)
        if not root.exists():
            raise RawFileError(f"raw data path {root} does not exist; check the catalog entry or "
                               "--params raw_data_dir=<folder holding the raw source folders>")
        if root.is_file():
            return [(root, root.name)]
        if self._file_format == "hf_dataset":
            return hf_dataset_files(root)
        if not self._glob:
            raise RawFileError(f"raw data path {root} is a folder; give its catalog entry a glob such as '*.jsonl'")
        files = sorted(p for p in root.glob(self._glob) if p.is_file())
        if not files:
            raise RawFileError(f"raw data folder {root} has no files matching {self._glob!r}")
        return [(p, p.relative_to(root).as_posix()) for p in files]

    def _read(self) -> list[RawRecord]:
        records: list[RawRecord] = []
        for path, name in self._files():
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise RawFileError(f"raw file {path} cannot be read: {exc}") from exc
            fmt = "arrow_stream" if self._file_format == "hf_dataset" else self._file_format or infer_file_format(path.name)
            try:
                records.extend(decode_records(data, name, fmt))
            except RawFileError as exc:
                raise RawFileError(f"{exc} (full path: {path})") from exc
        return records

    def _chunks(self, chunk_records: int) -> Iterator[list[RawRecord]]:
        """The records file by file, at most ``chunk_records`` at a time: JSON-lines files are
        read line by line (never whole); other formats are decoded whole, then handed out in slices."""
        for path, name in self._files():
            fmt = "arrow_stream" if self._file_format == "hf_dataset" else self._file_format or infer_file_format(path.name)
            try:
                if fmt in ("json_lines", "json_lines.gz"):
                    yield from iter_json_lines_chunks(str(path), name, chunk_records, gzipped=fmt.endswith(".gz"))
                    continue
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise RawFileError(f"raw file {path} cannot be read: {exc}") from exc
                records = decode_records(data, name, fmt)
            except RawFileError as exc:
                if "(full path:" in str(exc):
                    raise
                raise RawFileError(f"{exc} (full path: {path})") from exc
            for start in range(0, len(records), chunk_records):
                yield records[start:start + chunk_records]

    def load(self) -> "RawReader":
        return RawReader(self)

    def save(self, data: None) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only: raw data is never written by the pipeline")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "glob": self._glob, "file_format": self._file_format}

    def preview(self, nrows: int = 5) -> TablePreview:
        """kedro-viz preview: the first ``nrows`` records (file, position, the record as JSON text
        or the decode error), JSON-safe."""
        rows = [{"file": r.file, "position": r.position, "record": r.excerpt() if r.error is None else None, "error": r.error}
                for r in self._read()[:nrows]]
        frame = pl.DataFrame(rows, schema={"file": pl.String, "position": pl.Int64, "record": pl.String, "error": pl.String})
        return TablePreview(table_preview(frame))

    def _exists(self) -> bool:
        return Path(self._filepath).exists()


class RawReader:
    """What ``RawRecordsDataset.load()`` returns: call it for every record of the file(s) (the
    in-memory path), or iterate ``chunks(n)`` for at most n records at a time (the streaming path)."""

    def __init__(self, dataset: RawRecordsDataset) -> None:
        self._dataset = dataset

    def __call__(self) -> list[RawRecord]:
        return self._dataset._read()

    def chunks(self, chunk_records: int) -> Iterator[list[RawRecord]]:
        return self._dataset._chunks(chunk_records)


def hf_dataset_files(root: Path) -> list[tuple[Path, str]]:
    """The Arrow shards of a ``save_to_disk`` folder: a Dataset (state.json lists its
    ``_data_files``) or a DatasetDict (dataset_dict.json lists its splits, one such folder each)."""
    import json

    def shards(folder: Path) -> list[Path]:
        state = folder / "state.json"
        if not state.is_file():
            raise RawFileError(f"raw data folder {folder} is not a saved Hugging Face dataset (no state.json or "
                               "dataset_dict.json); save it with Dataset.save_to_disk or set another file_format")
        try:
            files = [folder / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RawFileError(f"raw file {state} is not a readable datasets state.json ({exc})") from exc
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise RawFileError(f"saved dataset {folder} lacks its shard files {missing}")
        return files

    index = root / "dataset_dict.json"
    if index.is_file():
        try:
            splits = json.loads(index.read_text())["splits"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RawFileError(f"raw file {index} is not a readable dataset_dict.json ({exc})") from exc
        files = [f for split in splits for f in shards(root / split)]
    else:
        files = shards(root)
    return [(f, f.relative_to(root).as_posix()) for f in files]


class RawTablesDataset(AbstractDataset[None, Callable[..., list[RawRecord]]]):
    """A folder of user preference tables (the generic ``preference_table`` parser's input).

    ``load()`` returns ``read(table, file_format=None, glob=None)``: the records of the file or
    folder ``table`` (relative to ``filepath``), decoded as ``RawRecordsDataset`` does. Nothing is
    read until a configured source asks for its table, so the folder may be absent when no user
    table is enabled.

    Examples:
        ```yaml
        raw_tables:
          type: prefalign.datasets.raw_records.RawTablesDataset
          filepath: ${runtime_params:raw_data_dir, data/01_raw}/tables
        ```

        >>> import tempfile
        >>> from pathlib import Path
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "mine.csv").write_text("prompt,chosen,rejected\\nHi?,Hello!,Go away.\\n")
        >>> read = RawTablesDataset(filepath=str(folder)).load()
        >>> [r.record for r in read("mine.csv")]
        [{'prompt': 'Hi?', 'chosen': 'Hello!', 'rejected': 'Go away.'}]
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    @property
    def folder(self) -> str:
        """The tables folder (``<raw_data_dir>/tables``)."""
        return str(self._filepath)

    def _exists(self) -> bool:
        return True  # the loader works without the folder: it is read only for a configured table

    def load(self) -> Callable[..., list[RawRecord]]:
        def read(table: str, file_format: str | None = None, glob: str | None = None) -> list[RawRecord]:
            return RawRecordsDataset(filepath=str(self._filepath / table), glob=glob, file_format=file_format).load()()
        return read

    def save(self, data: None) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only: raw data is never written by the pipeline")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

