"""Every bad-input class gets a clear reason in the rejected records, and no good row is lost."""

import json

import pytest

from prefalign.core.feedback.ingest import ingest_source
from prefalign.core.feedback.records import RawFileError
from prefalign.datasets.raw_records import RawRecordsDataset

PARAMS = {"parser": "ultrafeedback_pairs", "signal": "score_gap", "feedback": "ai", "gamma": 0.3, "score_range": [1, 10]}


def _line(**overrides) -> bytes:
    record = {"prompt": "P", "chosen": "c", "rejected": "r", "metadata": {"score_chosen": 8, "score_rejected": 4}}
    for key, value in overrides.items():
        if key.startswith("meta_"):
            record["metadata"][key[5:]] = value
        elif value is ...:
            del record[key]
        else:
            record[key] = value
    return json.dumps(record, ensure_ascii=False).encode()


GOOD_FIRST = _line(prompt="good one")
GOOD_LAST = _line(prompt="good two")

BAD_LINES = {
    "missing field": (_line(chosen=...), "missing field 'chosen'"),
    "missing nested field": (_line().replace(b'"score_rejected": 4', b'"other": 4'), "missing field 'metadata.score_rejected'"),
    "wrong type": (_line(chosen=["a", "list"]), "field 'chosen' has type list, expected text"),
    "wrong score type": (_line(meta_score_chosen={"v": 1}), "field 'metadata.score_chosen' has type dict, expected a number"),
    "unparseable score": (_line(meta_score_chosen="eight"), "field 'metadata.score_chosen' is unparseable: 'eight' is not a number"),
    "NaN score": (_line().replace(b'"score_chosen": 8', b'"score_chosen": NaN'), "field 'metadata.score_chosen' is nan (not a finite number)"),
    "inf score": (_line().replace(b'"score_chosen": 8', b'"score_chosen": Infinity'), "field 'metadata.score_chosen' is inf (not a finite number)"),
    "out-of-range score": (_line(meta_score_rejected=11), "field 'metadata.score_rejected' = 11 is outside the source's range [1, 10]"),
    "empty text": (_line(rejected="   "), "field 'rejected' is empty text"),
    "null text": (_line(prompt=None), "field 'prompt' is null, expected text"),
    "invalid UTF-8": (_line(prompt="caf\u00e9").replace("é".encode(), b"\xe9"), "invalid UTF-8 (byte 0xe9"),
    "not JSON": (b"{this is not json}", "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_record_is_rejected_with_its_reason_and_good_rows_are_kept(tmp_path, case):
    bad, reason = BAD_LINES[case]
    (tmp_path / "uf.jsonl").write_bytes(b"\n".join([GOOD_FIRST, bad, GOOD_LAST]) + b"\n")
    raw = RawRecordsDataset(filepath=str(tmp_path / "uf.jsonl")).load()()
    rows, rejected, stats = ingest_source("ultrafeedback", {"records": raw}, PARAMS)
    assert sorted(rows["prompt"]) == ["good one", "good two"]
    [row] = rejected.iter_rows(named=True)
    assert row["reason"].startswith(reason), row["reason"]
    assert (row["source"], row["file"], row["position"], row["role"]) == ("ultrafeedback", "uf.jsonl", 1, "records")
    assert row["excerpt"]  # the raw text is kept for a person to look at
    assert stats["records_read"] == 3 == stats["records_used"] + stats["records_rejected"]


def test_truncated_last_line_stops_naming_the_file(tmp_path):
    (tmp_path / "uf.jsonl").write_bytes(GOOD_FIRST + b"\n" + GOOD_LAST + b"\n" + _line()[:25])
    with pytest.raises(RawFileError, match=r"raw file uf.jsonl is truncated: its last line \(line 3\) is cut short"):
        RawRecordsDataset(filepath=str(tmp_path / "uf.jsonl")).load()()


@pytest.mark.parametrize(
    "override, named",
    [
        ({"gamma": -1}, "feedback.sources.ultrafeedback.gamma=-1 must be > 0"),
        ({"gamma": 0}, "feedback.sources.ultrafeedback.gamma=0 must be > 0"),
        ({"feedback": "robot"}, "feedback.sources.ultrafeedback.feedback='robot' is not one of human, ai, synthetic"),
        ({"signal": "stars"}, "feedback.sources.ultrafeedback.signal='stars' is not one of score_gap"),
        ({"max_pairs_per_prompt": 0}, "max_pairs_per_prompt=0 must be an integer >= 1"),
    ],
)
def test_bad_source_parameters_fail_before_reading_naming_the_key(override, named):
    from prefalign.core.feedback.ingest import check_source_params

    good = {"parser": "ultrafeedback", "signal": "score_gap", "feedback": "ai", "gamma": 0.3}
    check_source_params("ultrafeedback", good)  # the good block passes
    with pytest.raises(ValueError) as error:
        check_source_params("ultrafeedback", {**good, **override})
    assert named in str(error.value)
