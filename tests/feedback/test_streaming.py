"""The streaming feedback engine equals the in-memory one: the same pairs (ids, splits, conflicts
and duplicates resolved alike), rejected records, summary, and the same validated and quarantined
rows; its chunked reader gives the same records and whole-file failures as the whole-file decode."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from prefalign.core.feedback.records import RawFileError, decode_records, iter_json_lines_chunks
from tests.feedback.streaming_equality import ROOT, differences, load_config, run_engine


def test_streaming_engine_equals_in_memory_on_the_samples(tmp_path):
    params, catalog = load_config(str(ROOT / "data" / "01_raw"), "ci")
    memory = run_engine("in_memory", params, catalog, tmp_path)
    # chunks of 37 records: every source is cut into many parts, duplicates and conflicts cross them
    streaming = run_engine("streaming", params, catalog, tmp_path, chunk_records=37, batch_rows=300)
    assert memory["pairs"].height > 1000 and memory["rejected"].height > 0
    assert memory["resolution"]["conflicts"]["_total"]["within_source"] > 0
    assert sum(memory["resolution"]["duplicates"].values()) > 0
    assert differences(memory, streaming) == []
    assert len(list((tmp_path / "streaming" / "parts" / "ultrafeedback").glob("part-*.parquet"))) > 5


def test_differences_sees_a_changed_split():
    """The comparison itself can fail: one pair moved to another split is found."""
    pairs = pl.DataFrame({"pair_id": ["a", "b"], "split": ["train", "val"]})
    outputs = {"pairs": pairs, "quarantined": pairs.head(0), "validated": pairs, "rejected": pairs.head(0),
               "resolution": {}, "summary": {}, "report": "",
               "results": {"passed": True, "failures": [], "rows": {}, "quarantined_fraction": 0.0, "sources": {},
                           "expectations": []}}
    moved = dict(outputs, pairs=pairs.with_columns(split=pl.lit("test")))
    assert differences(outputs, outputs) == []
    assert differences(outputs, moved) == ["pairs: 2 vs 2 rows, or different values"]


GOOD = b'{"a": 1}\n'
FILES = {
    "plain": GOOD * 5,
    "blank_lines_and_errors": b'{"a": 1}\n\n[1]\nnot json\n\xff\xfe\n{"a": 2}\n',
    "no_final_newline": GOOD * 3 + b'{"a": 9}',
    "cut_last_line": GOOD * 3 + b'{"a": ',
    "cut_last_line_alone": b'{"a": ',
    "empty": b"",
    "blank": b"\n\n",
    "all_bad": b"x\ny\nz\n",
}


def _outcome(read):
    try:
        return [(r.file, r.position, r.record, r.error, r.raw) for r in read()]
    except RawFileError as exc:
        return str(exc)


@pytest.mark.parametrize("name", sorted(FILES))
@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
@pytest.mark.parametrize("gzipped", [False, True])
def test_chunked_reader_equals_whole_file_decode(tmp_path, name, chunk, gzipped):
    data = FILES[name]
    path = tmp_path / ("f.jsonl.gz" if gzipped else "f.jsonl")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    fmt = "json_lines.gz" if gzipped else "json_lines"
    whole = _outcome(lambda: decode_records(path.read_bytes(), "f", fmt))
    chunked = _outcome(lambda: [r for c in iter_json_lines_chunks(str(path), "f", chunk, gzipped) for r in c])
    assert chunked == whole


@pytest.mark.parametrize("damage", ["not_gzip", "truncated", "corrupt", "two_members"])
def test_chunked_gzip_failures_equal_gunzip(tmp_path, damage):
    packed = gzip.compress(GOOD * 50)
    data = {"not_gzip": GOOD, "truncated": packed[:-12], "corrupt": packed[:20] + b"\x00" * 8 + packed[28:],
            "two_members": packed + gzip.compress(b'{"b": 2}\n')}[damage]
    path = tmp_path / "f.jsonl.gz"
    path.write_bytes(data)
    whole = _outcome(lambda: decode_records(data, "f", "json_lines.gz"))
    chunked = _outcome(lambda: [r for c in iter_json_lines_chunks(str(path), "f", 7, True) for r in c])
    assert chunked == whole
    if damage != "two_members":
        assert isinstance(whole, str)  # a whole-file failure, named
    else:
        assert len(whole) == 51


def test_parquet_parts_dataset_round_trip(tmp_path):
    from kedro.io.core import DatasetError, Version

    from prefalign.datasets.parquet_parts import ParquetPartsDataset

    frame = pl.DataFrame({"pair_id": list("abcde"), "p": [0.5, 0.6, 0.7, 0.8, 0.9]})
    dataset = ParquetPartsDataset(filepath=str(tmp_path / "pairs"), max_rows_per_file=2, version=Version(None, None))
    dataset.save(frame.lazy())
    saved = sorted((tmp_path / "pairs").rglob("*.parquet"))
    assert len(saved) == 3  # 5 rows, at most 2 a file
    loaded = ParquetPartsDataset(filepath=str(tmp_path / "pairs"), version=Version(None, None)).load()
    assert isinstance(loaded, pl.LazyFrame) and loaded.collect().equals(frame)
    eager = ParquetPartsDataset(filepath=str(tmp_path / "pairs"), lazy=False, version=Version(None, None)).load()
    assert isinstance(eager, pl.DataFrame) and eager.equals(frame)
    empty = ParquetPartsDataset(filepath=str(tmp_path / "empty"))
    empty.save(frame.head(0))
    assert empty.load().collect().schema == frame.schema
    with pytest.raises(DatasetError, match="file_format='csv'"):
        ParquetPartsDataset(filepath=str(tmp_path / "x"), file_format="csv")
