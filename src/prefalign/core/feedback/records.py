"""Raw records: decoding raw feedback files record by record, and reading fields with clear errors.

A raw file is split into records without ever dropping one silently:

* a file that cannot be read at all (missing, not gzip, not a JSON array, no files in a folder)
  raises ``RawFileError`` naming the file and the problem: the run stops;
* a record that cannot be decoded (invalid UTF-8, not JSON, a truncated last line, not a JSON
  object) becomes a ``RawRecord`` with ``error`` set, so the parser can route it to the rejected
  records with its file and position, and every good record around it is kept.

``position`` is the 0-based index of the record in its file: the line index for JSON lines
(blank lines count as lines but yield no record), the element index for a JSON array.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Any, Iterator

from prefalign.core.text import has_visible_content

EXCERPT_CHARS = 200
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, after surrogateescape


class RawFileError(ValueError):
    """A raw file that cannot be read at all; the message names the file and the problem."""


class RecordError(ValueError):
    """One record that cannot be used; the message is the reason stored with the rejected record."""


@dataclass(frozen=True)
class RawRecord:
    file: str  # path as the catalog gave it (relative to the source folder for multi-file sources)
    position: int  # 0-based record index in the file
    record: dict[str, Any] | None  # the decoded JSON object, or None when it could not be decoded
    error: str | None = None  # why it could not be decoded
    raw: str = ""  # an excerpt of the undecodable bytes (only set when error is set)

    def excerpt(self) -> str:
        """The excerpt stored with a rejected record.

        Returns:
            The first EXCERPT_CHARS characters of the record (JSON) or of its undecodable bytes.
        """
        if self.raw:
            return self.raw[:EXCERPT_CHARS]
        return json.dumps(self.record, ensure_ascii=False, default=str)[:EXCERPT_CHARS]


def gunzip(data: bytes, file: str) -> bytes:
    """Decompress gzip bytes. A whole-file failure (not gzip, a corrupt or truncated stream) raises
    RawFileError naming the file: the records after the break would be lost silently.

    Args:
        data: the file's bytes.
        file: its name, for the message.

    Returns:
        The decompressed bytes of every member.

    Raises:
        RawFileError: not gzip, corrupt, or truncated.
    """
    if data[:2] != b"\x1f\x8b":
        raise RawFileError(f"raw file {file} is not a gzip file (it does not start with the gzip magic bytes); "
                           "point the catalog at the .gz file or change its file_format")
    out: list[bytes] = []
    rest = data
    while rest:  # a .gz file may hold several gzip members, one after another
        stream = zlib.decompressobj(wbits=31)
        try:
            out.append(stream.decompress(rest))
        except zlib.error as exc:
            raise RawFileError(f"raw file {file} is a corrupt gzip file (member {len(out) + 1}: {exc}); "
                               "re-download or re-compress it") from exc
        if not stream.eof:
            raise RawFileError(f"raw file {file} is a truncated gzip file (the stream ends before its end marker, "
                               f"after {sum(map(len, out))} decompressed bytes); re-download it")
        rest = stream.unused_data
    return b"".join(out)


def decode_json_lines(data: bytes, file: str) -> list[RawRecord]:
    """One record per non-blank line. Each line is decoded on its own, so one bad line (invalid
    UTF-8, broken JSON) is one error record and the rest are kept. A last line without its
    newline that is not valid JSON is a truncated FILE: RawFileError naming it.

    Args:
        data: the file's bytes.
        file: its name (stored in each record).

    Returns:
        One RawRecord per non-blank line (position = line index), error set where it cannot be decoded.

    Raises:
        RawFileError: a cut last line after earlier records (a truncated file).
    """
    lines = data.split(b"\n")
    ends_with_newline = data.endswith(b"\n")
    records: list[RawRecord] = []
    for index, line in enumerate(lines):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        excerpt = line[:EXCERPT_CHARS].decode("utf-8", errors="replace")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            records.append(RawRecord(file, index, None, f"invalid UTF-8 (byte 0x{line[exc.start]:02x} at offset {exc.start} of the line)", excerpt))
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            reason = f"not valid JSON ({exc.msg} at column {exc.colno})"
            if index == len(lines) - 1 and not ends_with_newline and records:
                raise RawFileError(f"raw file {file} is truncated: its last line (line {index + 1}) is cut short, "
                                   f"{reason}; re-download the file (the records after the cut are missing)")
            records.append(RawRecord(file, index, None, reason, excerpt))
            continue
        if not isinstance(value, dict):
            records.append(RawRecord(file, index, None, f"record is a JSON {type(value).__name__}, expected an object", excerpt))
            continue
        records.append(RawRecord(file, index, value))
    return records


def decode_json_array(data: bytes, file: str) -> list[RawRecord]:
    """One record per element of a top-level JSON array, decoded element by element so that a
    bad element (not an object, invalid UTF-8 inside it) is one error record. If the document
    itself breaks (truncated, or a syntax error that hides the records after it), RawFileError
    names the file: the rest of the file would otherwise be lost silently.

    Args:
        data: the file's bytes.
        file: its name (stored in each record).

    Returns:
        One RawRecord per array element (position = element index).

    Raises:
        RawFileError: empty, not an array, truncated or broken document.
    """
    try:
        text, any_bad_bytes = data.decode("utf-8"), False
    except UnicodeDecodeError:  # keep going; the records holding the bad bytes are found below
        text, any_bad_bytes = data.decode("utf-8", errors="surrogateescape"), True
    text = text.lstrip("\ufeff")
    decoder = json.JSONDecoder()
    at = _skip_ws(text, 0)
    if at >= len(text):
        raise RawFileError(f"raw file {file} is empty; expected a JSON array of records")
    if text[at] != "[":
        raise RawFileError(f"raw file {file} does not hold a JSON array (it starts with {text[at:at + 20]!r}); "
                           "use file_format: json_lines if it has one JSON object per line")
    records: list[RawRecord] = []
    at = _skip_ws(text, at + 1)
    if at < len(text) and text[at] == "]":
        return records
    index = 0
    while True:
        try:
            value, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            rest = text[at:]
            what = "is truncated" if not text.rstrip().endswith("]") else "breaks"
            raise RawFileError(f"raw file {file} {what}: not valid JSON at record {index} ({exc.msg} at char {exc.pos}); "
                               f"its remaining {len(rest)} characters cannot be split into records, so they would be "
                               "lost: re-download or repair the file") from exc
        if any_bad_bytes and _SURROGATE.search(text, at, end):
            records.append(RawRecord(file, index, None, "invalid UTF-8 bytes inside the record", _printable(text[at:end])))
        elif not isinstance(value, dict):
            records.append(RawRecord(file, index, None, f"record is a JSON {type(value).__name__}, expected an object", _printable(text[at:end])))
        else:
            records.append(RawRecord(file, index, value))
        index += 1
        at = _skip_ws(text, end)
        if at < len(text) and text[at] == ",":
            at = _skip_ws(text, at + 1)
            continue
        if at < len(text) and text[at] == "]":
            return records
        raise RawFileError(f"raw file {file} is truncated: the JSON array ends without ']' after record {index - 1}; "
                           "re-download the file")


def decode_records(data: bytes, file: str, file_format: str) -> list[RawRecord]:
    """Decode one file's bytes; file_format is json_lines, json_array, or either with `.gz`.

    Raises:
        RawFileError: a whole-file failure, naming the file: unknown format, corrupt or truncated
            gzip, truncated or broken JSON document, or no readable record at all (empty file,
            binary garbage, every record undecodable).

    Args:
        data: the file's bytes.
        file: its name (stored in each record).
        file_format: one of FILE_FORMATS.

    Returns:
        The file's records (check_readable).
    """
    if file_format.endswith(".gz"):
        data, file_format = gunzip(data, file), file_format[: -len(".gz")]
    if file_format == "json_lines":
        return check_readable(decode_json_lines(data, file), file)
    if file_format == "json_array":
        return check_readable(decode_json_array(data, file), file)
    if file_format in TABLE_FORMATS:
        return check_readable(decode_table(data, file, file_format), file)
    raise RawFileError(f"unknown file_format {file_format!r} for {file}; use one of {', '.join(FILE_FORMATS)}")


TABLE_FORMATS = ("parquet", "csv", "arrow_stream")
FILE_FORMATS = ("json_lines", "json_array", "json_lines.gz", "json_array.gz", *TABLE_FORMATS)


def decode_table(data: bytes, file: str, file_format: str) -> list[RawRecord]:
    """One record per row of a Parquet file, a CSV file (every cell read as text; numbers in text
    are accepted where a number is expected) or an Arrow IPC stream (the shards a Hugging Face
    ``datasets`` folder is saved as). Nested values (lists of {role, content} turns) stay lists of
    dicts. A file that cannot be read as that format raises RawFileError naming it.

    Args:
        data: the file's bytes.
        file: its name.
        file_format: parquet, csv or arrow_stream.

    Returns:
        One RawRecord per row (position = row index).

    Raises:
        RawFileError: not readable as that format.
    """
    import io

    import pyarrow as pa

    try:
        if file_format == "parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(pa.BufferReader(data)).to_pylist()
        elif file_format == "arrow_stream":
            rows = pa.ipc.open_stream(pa.BufferReader(data)).read_all().to_pylist()
        else:
            import polars as pl

            rows = pl.read_csv(io.BytesIO(data), infer_schema=False).to_dicts()
    except Exception as exc:  # pyarrow/polars raise many types for a broken file; all mean the same here
        raise RawFileError(f"raw file {file} is not a readable {file_format} file ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); check the file or its file_format") from exc
    return [RawRecord(file, i, row) for i, row in enumerate(rows)]


def check_readable(records: list[RawRecord], file: str) -> list[RawRecord]:
    """The records, or RawFileError when the file holds no readable record (empty, binary
    garbage, or every record undecodable): a whole-file failure, never a silent empty source.

    Args:
        records: a file's decoded records.
        file: its name.

    Returns:
        The records, unchanged.

    Raises:
        RawFileError: no record, or no decodable one.
    """
    if not records:
        raise RawFileError(f"raw file {file} holds no records (it is empty or blank); check the file or its catalog entry")
    if all(r.error is not None for r in records):
        first = records[0]
        raise RawFileError(f"raw file {file} has no readable record: all {len(records)} fail to decode "
                           f"(first, at position {first.position}: {first.error}); is it the right file and format?")
    return records


def infer_file_format(path: str) -> str:
    """The file_format of a raw file from its name.

    Args:
        path: a file name.

    Returns:
        The file_format its suffix names.

    Raises:
        RawFileError: an unknown suffix (set file_format in the catalog).
    """
    for suffix, fmt in ((".jsonl.gz", "json_lines.gz"), (".json.gz", "json_array.gz"),
                        (".jsonl", "json_lines"), (".json", "json_array"), (".parquet", "parquet"),
                        (".csv", "csv"), (".arrow", "arrow_stream")):
        if path.endswith(suffix):
            return fmt
    raise RawFileError(f"cannot tell the format of {path} from its name; set file_format in its catalog entry")


def _skip_ws(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _printable(text: str) -> str:
    return text[:EXCERPT_CHARS].encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


# --- reading fields of one record: each failure is a RecordError whose message is the reason ---

def field(record: dict[str, Any], path: str) -> Any:
    """The value at a dotted path ("metadata.score_chosen"); a missing key is a RecordError.

    Args:
        record: a decoded JSON object.
        path: dotted field path.

    Returns:
        The value.

    Raises:
        RecordError: a missing key (the record is rejected with this reason).
    """
    value: Any = record
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise RecordError(f"missing field '{path}'")
        value = value[key]
    return value


def text_field(record: dict[str, Any], path: str) -> str:
    """A non-empty string field.

    Args:
        record: a decoded JSON object.
        path: dotted field path.

    Returns:
        The text, as written.

    Raises:
        RecordError: missing, null, not text, or no visible character.
    """
    value = field(record, path)
    if value is None:
        raise RecordError(f"field '{path}' is null, expected text")
    if not isinstance(value, str):
        raise RecordError(f"field '{path}' has type {type(value).__name__}, expected text")
    if not has_visible_content(value):  # whitespace and invisible characters only (core/text.py)
        raise RecordError(f"field '{path}' is empty text (no visible character)")
    return value


def as_number(value: Any, name: str, low: float | None = None, high: float | None = None) -> float:
    """A finite number within [low, high]; numeric strings ("8.5") are accepted, as judges write them.

    Args:
        value: the raw value (number or numeric text).
        name: how the reason names it.
        low, high: the source's range (None = unbounded).

    Returns:
        The float.

    Raises:
        RecordError: null, not a number, not finite, or outside [low, high].
    """
    if value is None:
        raise RecordError(f"{name} is null (no score was given)")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RecordError(f"{name} has type {type(value).__name__}, expected a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise RecordError(f"{name} is unparseable: {value[:40]!r} is not a number") from None
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise RecordError(f"{name} is {number} (not a finite number)")
    if (low is not None and number < low) or (high is not None and number > high):
        raise RecordError(f"{name} = {number:g} is outside the source's range [{low:g}, {high:g}]")
    return number


def number_field(record: dict[str, Any], path: str, low: float | None = None, high: float | None = None) -> float:
    """A number field within the source's range.

    Args:
        record: a decoded JSON object.
        path: dotted field path.
        low, high: the source's range.

    Returns:
        The float (as_number).

    Raises:
        RecordError: as field and as_number.
    """
    return as_number(field(record, path), f"field '{path}'", low, high)


def iter_json_lines_chunks(path: str, file: str, chunk_records: int, gzipped: bool = False) -> Iterator[list[RawRecord]]:
    """The records of one JSON-lines file, ``chunk_records`` lines at a time, without reading the
    whole file: the same records, positions, errors and whole-file failures as
    ``decode_records(data, file, "json_lines")`` (the streaming path's reader).

    Args:
        path: the file on disk.
        file: the name records carry (as RawRecordsDataset gives it).
        chunk_records: lines per chunk (blank lines count, as positions do).
        gzipped: the file is gzip (``json_lines.gz``): decompressed as it is read (GunzipReader).

    Returns:
        An iterator of record lists; their concatenation equals the whole-file decode.

    Raises:
        ValueError: ``chunk_records`` < 1.
        RawFileError: a truncated last line, or a file with no readable record (check_readable).
    """
    if chunk_records < 1:
        raise ValueError(f"chunk_records={chunk_records} must be >= 1 (feedback.streaming.chunk_records)")
    seen, readable, first = 0, 0, None
    with (GunzipReader(path, file) if gzipped else open(path, "rb")) as handle:
        offset, lines = 0, []
        line = handle.readline()
        while line:
            following = handle.readline()
            lines.append(line)
            if len(lines) == chunk_records or not following:
                data = b"".join(lines)
                cut = not data.endswith(b"\n")  # only the file's last line can lack its newline
                records = decode_json_lines(data + b"\n" if cut else data, file)
                if cut and seen + len(records) > 1 and records[-1].position == len(lines) - 1 \
                        and (records[-1].error or "").startswith("not valid JSON"):
                    # the whole-file rule: a cut last line after earlier records is a truncated file
                    raise RawFileError(f"raw file {file} is truncated: its last line (line {offset + len(lines)}) is cut "
                                       f"short, {records[-1].error}; re-download the file (the records after the cut are missing)")
                if offset:
                    records = [RawRecord(r.file, r.position + offset, r.record, r.error, r.raw) for r in records]
                if records and first is None:
                    first = records[0]
                seen += len(records)
                readable += sum(r.error is None for r in records)
                offset += len(lines)
                lines = []
                if records:
                    yield records
            line = following
    if not seen:
        raise RawFileError(f"raw file {file} holds no records (it is empty or blank); check the file or its catalog entry")
    if not readable:
        raise RawFileError(f"raw file {file} has no readable record: all {seen} fail to decode "
                           f"(first, at position {first.position}: {first.error}); is it the right file and format?")


class GunzipReader:
    """A gzip file read line by line as it is decompressed, with ``gunzip``'s whole-file errors
    (not gzip, corrupt, truncated: RawFileError naming the file) and its several members."""

    BLOCK = 1 << 20

    def __init__(self, path: str, file: str) -> None:
        self._handle = open(path, "rb")
        self._file = file
        self._buffer = b""
        self._pos = 0
        self._stream: Any = None
        self._members = 0
        self._out = 0
        self._done = False
        head = self._handle.read(2)
        if head != b"\x1f\x8b":
            self._handle.close()
            raise RawFileError(f"raw file {file} is not a gzip file (it does not start with the gzip magic bytes); "
                               "point the catalog at the .gz file or change its file_format")
        self._pending = head

    def __enter__(self) -> "GunzipReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.close()

    def _fill(self) -> bool:
        """Decompress the next block into the buffer; False at the end of the file."""
        while not self._done:
            data = self._pending + self._handle.read(self.BLOCK)
            self._pending = b""
            if self._stream is None:
                if not data:
                    self._done = True
                    return False
                self._stream = zlib.decompressobj(wbits=31)
                self._members += 1
            try:
                out = self._stream.decompress(data)
            except zlib.error as exc:
                raise RawFileError(f"raw file {self._file} is a corrupt gzip file (member {self._members}: {exc}); "
                                   "re-download or re-compress it") from exc
            self._out += len(out)
            if self._stream.eof:
                self._pending, self._stream = self._stream.unused_data, None
            elif not data:
                raise RawFileError(f"raw file {self._file} is a truncated gzip file (the stream ends before its end "
                                   f"marker, after {self._out} decompressed bytes); re-download it")
            if out:
                self._buffer += out
                return True
        return False

    def readline(self) -> bytes:
        """The next line of the decompressed text.

        Returns:
            The line with its newline (the file's last line may lack it); b"" at the end.

        Raises:
            RawFileError: the gzip stream is corrupt or ends before its end marker.
        """
        while True:
            cut = self._buffer.find(b"\n", self._pos)
            if cut >= 0:
                line, self._pos = self._buffer[self._pos:cut + 1], cut + 1
                return line
            self._buffer, self._pos = self._buffer[self._pos:], 0
            if not self._fill():
                line, self._buffer = self._buffer, b""
                return line
