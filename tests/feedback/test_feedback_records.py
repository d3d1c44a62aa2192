"""Decoding raw files: a bad record is an error record at its position, a bad file fails naming it."""

import gzip
import json

import pytest

from prefalign.core.feedback.records import RawFileError, decode_json_array, decode_json_lines, decode_records
from prefalign.datasets.raw_records import RawRecordsDataset

GOOD = b'{"x": 1}'


def test_json_lines_keep_good_lines_around_every_bad_one():
    data = b"\n".join([GOOD, b"", b'{"x": \xff}', b"not json", b"[1, 2]", b'{"x": 2}', b'{"x": 3}'])
    records = decode_json_lines(data, "f.jsonl")
    assert [(r.position, r.record) for r in records if r.error is None] == [(0, {"x": 1}), (5, {"x": 2}), (6, {"x": 3})]
    errors = {r.position: r.error for r in records if r.error}
    assert errors[2].startswith("invalid UTF-8 (byte 0xff")
    assert errors[3].startswith("not valid JSON")
    assert errors[4] == "record is a JSON list, expected an object"
    assert all(r.file == "f.jsonl" for r in records) and len(records) == 6  # the blank line is no record


def test_json_lines_cut_short_is_a_truncated_file():
    with pytest.raises(RawFileError, match=r"raw file f.jsonl is truncated: its last line \(line 2\) is cut short"):
        decode_json_lines(GOOD + b'\n{"x": 3, "y": "tru', "f.jsonl")


def test_a_broken_line_that_is_not_last_is_not_called_truncated():
    records = decode_json_lines(b'{"x": 1\n{"x": 2}\n', "f.jsonl")
    assert records[0].error.startswith("not valid JSON") and records[1].record == {"x": 2}


def test_json_array_rejects_one_element_and_keeps_the_rest():
    data = b'[{"x": 1}, {"x": "\xff\xfe"}, 7, {"x": 2}]'
    records = decode_json_array(data, "f.json")
    assert [r.record for r in records] == [{"x": 1}, None, None, {"x": 2}]
    assert records[1].error == "invalid UTF-8 bytes inside the record"
    assert records[2].error == "record is a JSON int, expected an object"


def test_truncated_json_array_is_a_whole_file_failure():
    full = json.dumps([{"x": i, "t": "text"} for i in range(3)]).encode()
    with pytest.raises(RawFileError, match=r"raw file f.json is truncated: not valid JSON at record 2"):
        decode_json_array(full[:-12], "f.json")


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"),
    (b'{"x": 1}', "does not hold a JSON array"),
])
def test_unreadable_json_array_fails_naming_the_file(data, message):
    with pytest.raises(RawFileError, match=f"raw file f.json {message}"):
        decode_json_array(data, "f.json")


def test_truncated_gzip_is_a_whole_file_failure():
    data = gzip.compress(b"".join(b'{"x": %d, "pad": "%s"}\n' % (i, b"y" * 50) for i in range(200)))
    with pytest.raises(RawFileError, match="raw file f.jsonl.gz is a truncated gzip file"):
        decode_records(data[: len(data) // 2], "f.jsonl.gz", "json_lines.gz")


def test_not_gzip_fails_naming_the_file():
    with pytest.raises(RawFileError, match="raw file f.jsonl.gz is not a gzip file"):
        decode_records(GOOD, "f.jsonl.gz", "json_lines.gz")


def test_dataset_reads_a_folder_in_sorted_order_with_relative_names(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.jsonl").write_bytes(b'{"x": 2}\n')
    (tmp_path / "a.jsonl").write_bytes(b'{"x": 1}\n')
    (tmp_path / "sub" / "c.jsonl").write_bytes(b'{"x": 3}\n')
    (tmp_path / "notes.txt").write_text("ignored")
    records = RawRecordsDataset(filepath=str(tmp_path), glob="**/*.jsonl").load()()
    assert [(r.file, r.record["x"]) for r in records] == [("a.jsonl", 1), ("b.jsonl", 2), ("sub/c.jsonl", 3)]


def test_dataset_loads_lazily_and_names_a_missing_path(tmp_path):
    loader = RawRecordsDataset(filepath=str(tmp_path / "nope.jsonl")).load()  # nothing read yet
    with pytest.raises(RawFileError, match=r"nope.jsonl does not exist.*raw_data_dir"):
        loader()


@pytest.mark.parametrize("glob, message", [(None, "is a folder; give its catalog entry a glob"), ("*.json", "has no files matching")])
def test_dataset_folder_errors_say_what_to_do(tmp_path, glob, message):
    with pytest.raises(RawFileError, match=message):
        RawRecordsDataset(filepath=str(tmp_path), glob=glob).load()()


def test_dataset_names_the_full_path_of_an_unreadable_file(tmp_path):
    (tmp_path / "d.json").write_text('{"not": "an array"}')
    with pytest.raises(RawFileError, match=r"raw file d.json does not hold a JSON array.*full path: .*d.json"):
        RawRecordsDataset(filepath=str(tmp_path), glob="*.json").load()()


def test_the_dataset_docstring_example_is_true():
    import doctest

    import prefalign.datasets.raw_records as module

    assert doctest.testmod(module).failed == 0
