"""Batched validation (core/validation/batched.py) equals the whole-table validation: the same
quarantined rows with the same reasons, the same validated rows, the same verdict and counts,
when the table is cut into batches that split a duplicated pair and a leaked prompt apart."""

from __future__ import annotations

import json

import polars as pl
import pytest

from prefalign.core.schema import PAIRS_SCHEMA, pair_id_of
from prefalign.core.validation import parse_validation_config, split_checked, validate_pairs
from prefalign.core.validation.batched import report_frame, validate_pairs_batched, validated_rows
from tests.validation.pairs_factory import base_params, good_pair, good_pairs
from tests.validation.test_bad_input_corpus import CORPUS


def _table() -> pl.DataFrame:
    good = good_pairs()
    bad = pl.DataFrame([row for row, _ in CORPUS.values()], schema=PAIRS_SCHEMA)
    leak_row = good_pair(0, "ultrafeedback", "test") | {"chosen": "Another answer", "rejected": "A worse one"}
    leak_row["pair_id"] = pair_id_of(leak_row["prompt"], leak_row["chosen"], leak_row["rejected"])
    # the repeat of row 5 and the leaked prompt of row 0 come last: in a later batch than their first copy
    return pl.concat([good, bad, good[5], pl.DataFrame([leak_row], schema=PAIRS_SCHEMA)])


@pytest.mark.parametrize("batch_rows", [7, 1000])
def test_batched_validation_equals_whole_table(batch_rows):
    frame = _table()
    config = parse_validation_config(base_params(max_quarantine_fraction={"overall": 0.5, "per_source": 1.0}))
    checked, results = validate_pairs(frame, config)
    validated, quarantined = split_checked(checked)
    failures, quarantined_b, results_b = validate_pairs_batched(frame.lazy(), config, batch_rows=batch_rows)

    assert quarantined.height == len(CORPUS) + 2  # every bad row, the repeat and the leak
    assert quarantined_b.equals(quarantined)
    assert validated_rows(frame.lazy(), failures).collect().equals(validated)
    for key in ("passed", "failures", "rows", "quarantined_fraction", "sources"):
        assert results_b[key] == results[key], key
    whole = {e["name"]: e for e in results["expectations"]}
    for entry in results_b["expectations"]:
        mine = whole[entry["name"]]
        assert (entry["success"], entry["unexpected_count"], json.dumps(entry["examples"])) == \
            (mine["success"], mine["unexpected_count"], json.dumps(mine["examples"])), entry["name"]  # NaN != NaN
    assert report_frame(frame.lazy(), failures).equals(checked.select("source", "p_chosen", "margin", "failed_expectations"))


def test_batched_validation_stops_on_a_table_level_failure():
    frame = good_pairs(per_source=3)
    params = base_params()
    params["source_row_bounds"] = {"ultrafeedback": {"min": 5, "max": 10}}  # 3 rows: below the minimum
    config = parse_validation_config(params)
    _, results = validate_pairs(frame, config)
    _, _, results_b = validate_pairs_batched(frame.lazy(), config, batch_rows=2)
    assert not results_b["passed"] and results_b["failures"] == results["failures"]
    assert any("row_count[ultrafeedback]" in f for f in results_b["failures"])
