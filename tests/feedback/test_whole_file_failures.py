"""A whole-file failure stops the feedback run naming the file and the reason, for every raw format
the project reads; good files lose 0 records (issue 11, class 3; case 12_whole_file_truncated_json)."""

from __future__ import annotations

import gzip
import io
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from prefalign.core.feedback.ingest import ingest_source
from prefalign.core.feedback.records import RawFileError
from prefalign.datasets.raw_records import RawRecordsDataset
from tests.conftest import PROJECT_ROOT

ROWS = [{"prompt": f"Q{i}", "chosen": f"Good answer {i}.", "rejected": f"Bad {i}.", "metadata": {"score_chosen": 8, "score_rejected": 3}}
        for i in range(6)]
FLAT = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "score_chosen": 8, "score_rejected": 3} for r in ROWS]


def _json_lines(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _parquet(rows) -> bytes:
    buffer = io.BytesIO()
    pl.DataFrame(rows).write_parquet(buffer)
    return buffer.getvalue()


def _csv(rows) -> bytes:
    return pl.DataFrame(rows).write_csv().encode()


def _arrow(rows) -> bytes:
    import pyarrow as pa

    sink = io.BytesIO()
    table = pa.Table.from_pylist(rows)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


# format -> (file name, encoder of a list of rows)
FORMATS = {
    "json_lines": ("t.jsonl", lambda rows: _json_lines(rows)),
    "json_array": ("t.json", lambda rows: json.dumps(rows).encode()),
    "json_lines.gz": ("t.jsonl.gz", lambda rows: gzip.compress(_json_lines(rows))),
    "json_array.gz": ("t.json.gz", lambda rows: gzip.compress(json.dumps(rows).encode())),
    "parquet": ("t.parquet", lambda rows: _parquet(FLAT[: len(rows)])),
    "csv": ("t.csv", lambda rows: _csv(FLAT[: len(rows)])),
    "arrow_stream": ("t.arrow", lambda rows: _arrow(FLAT[: len(rows)])),
}
GARBAGE = bytes(range(256)) * 8  # binary garbage: no newline-free JSON, no magic bytes


def _defect(fmt: str, defect: str) -> bytes:
    good = FORMATS[fmt][1](ROWS)
    if defect == "truncated":
        if fmt == "csv":
            pytest.skip("a CSV cut between rows is indistinguishable from a shorter CSV; cut inside a quoted cell below")
        return good[: len(good) * 2 // 3 + 5]  # off any record boundary
    if defect == "garbage":
        return GARBAGE
    if defect == "empty":
        return FORMATS[fmt][1]([]) if fmt not in ("parquet", "csv", "arrow_stream") else b""
    raise AssertionError(defect)


def _read(tmp_path: Path, name: str, data: bytes):
    (tmp_path / name).write_bytes(data)
    return RawRecordsDataset(filepath=str(tmp_path / name)).load()()


@pytest.mark.parametrize("defect", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_and_whole_file_defect_stops_naming_the_file(tmp_path, fmt, defect):
    name = FORMATS[fmt][0]
    with pytest.raises(RawFileError, match=rf"raw (file|data path) {name}|raw file .*{name}") as failure:
        _read(tmp_path, name, _defect(fmt, defect))
    assert name in str(failure.value)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_good_files_lose_no_record(tmp_path, fmt):
    name, encode = FORMATS[fmt]
    records = _read(tmp_path, name, encode(ROWS))
    assert len(records) == len(ROWS) and all(r.error is None for r in records)
    assert [r.position for r in records] == list(range(len(ROWS)))


def test_csv_cut_inside_a_quoted_cell_stops(tmp_path):
    data = _csv(FLAT).replace(b"Good answer 5.", b'"Good answer, cut')
    with pytest.raises(RawFileError, match="raw file t.csv is not a readable csv file"):
        _read(tmp_path, "t.csv", data[:-3])


def test_a_file_whose_records_all_fail_to_decode_stops(tmp_path):
    with pytest.raises(RawFileError, match=r"raw file t.jsonl has no readable record: all 2 fail to decode"):
        _read(tmp_path, "t.jsonl", b"not json\n[1, 2]\n")


UF = {"parser": "ultrafeedback_pairs", "signal": "score_gap", "feedback": "ai", "gamma": 0.3, "score_range": [1, 10]}


def _with_bad(n_bad: int) -> bytes:
    bad = [dict(r, metadata={"score_chosen": 11, "score_rejected": 3}) for r in ROWS[:n_bad]]
    return _json_lines(bad + ROWS[n_bad:])


def test_rejection_rate_above_the_limit_stops_naming_file_counts_and_reason(tmp_path):
    records = _read(tmp_path, "uf.jsonl", _with_bad(4))
    with pytest.raises(RawFileError, match=r"raw file uf.jsonl \(source ultrafeedback, role records\): 4 of 6 records rejected "
                                           r"\(67%\), above feedback.max_rejected_fraction_per_file=0.5; most common reason \(4x\): "
                                           r"field 'metadata.score_chosen' = 11 is outside"):
        ingest_source("ultrafeedback", {"records": records}, UF, max_rejected_fraction=0.5)


def test_rejection_rate_at_or_below_the_limit_keeps_every_good_record(tmp_path):
    records = _read(tmp_path, "uf.jsonl", _with_bad(3))
    rows, rejected, _ = ingest_source("ultrafeedback", {"records": records}, UF, max_rejected_fraction=0.5)
    assert rows.height == 3 and rejected.height == 3
    rows, _, _ = ingest_source("ultrafeedback", {"records": _read(tmp_path, "u2.jsonl", _with_bad(4))},
                               {**UF, "max_rejected_fraction": 0.7}, max_rejected_fraction=0.5)  # a source may override
    assert rows.height == 2


def _shipped_files() -> list[Path]:
    raw = PROJECT_ROOT / "data" / "01_raw"
    return sorted(p for p in raw.rglob("*") if p.is_file() and p.name.endswith((".json", ".jsonl", ".jsonl.gz")))


@pytest.mark.parametrize("path", _shipped_files(), ids=lambda p: str(p.relative_to(PROJECT_ROOT / "data" / "01_raw")))
def test_every_shipped_raw_file_reads_whole_and_stops_when_cut(tmp_path, path):
    records = RawRecordsDataset(filepath=str(path)).load()()
    assert records and all(r.error is None for r in records)  # the shipped samples decode whole: 0 lost
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(gzip.decompress(data))
    (tmp_path / path.name).write_bytes(data[: len(data) // 2])
    with pytest.raises(RawFileError, match=path.name.replace(".", r"\.")):
        RawRecordsDataset(filepath=str(tmp_path / path.name)).load()()


def test_case_12_truncated_json_stops_the_feedback_run_naming_the_file(run_kedro, kedro_project):
    raw = kedro_project / "other_raw"
    shutil.copytree(kedro_project / "data" / "01_raw", raw)
    good = (raw / "tulu2_bon" / "sample_0.json").read_bytes()
    (raw / "tulu2_bon" / "sample_0.json").write_bytes(good[:500])  # as in shared/cases/12: cut after 500 bytes
    with pytest.raises(Exception) as failure:
        run_kedro("feedback", env="ci", params={"raw_data_dir": str(raw)})
    message = str(failure.value)
    assert "raw file sample_0.json is truncated" in message and "sample_0.json" in message
