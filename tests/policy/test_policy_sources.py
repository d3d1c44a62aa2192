"""`policy.defaults.data.sources`: which sources the policies train on (the embedded default's choice)."""

from __future__ import annotations

import polars as pl
import pytest

from prefalign.core.policy.train_policy import PolicyDataConfig, _train_and_val, split_pairs


def _pairs() -> pl.DataFrame:
    rows = [("a1", "ultrafeedback", "train"), ("a2", "ultrafeedback", "val"), ("s1", "synthetic_scalar", "train"),
            ("s2", "synthetic_scalar", "train"), ("s3", "synthetic_scalar", "val"), ("c1", "synthetic_cyclic", "train")]
    return pl.DataFrame(rows, schema=["pair_id", "source", "split"], orient="row")


def test_sources_filter_keeps_only_the_named_sources_and_every_row_of_them():
    pairs = _pairs()
    data = PolicyDataConfig.from_dict({"sources": ["synthetic_scalar"]})
    train, val = _train_and_val(pairs, data)
    assert train["pair_id"].to_list() == ["s1", "s2"] and val["pair_id"].to_list() == ["s3"]
    assert split_pairs(pairs, "train", None)["pair_id"].to_list() == ["a1", "c1", "s1", "s2"]  # null: all sources
    both = split_pairs(pairs, "train", None, ["ultrafeedback", "synthetic_cyclic"])
    assert both["pair_id"].to_list() == ["a1", "c1"]


def test_a_source_without_rows_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\['hh_rlhf'\] have no rows.*feedback.sources"):
        split_pairs(_pairs(), "train", None, ["synthetic_scalar", "hh_rlhf"])


@pytest.mark.parametrize("bad", ["", " ", []])
def test_sources_must_be_a_non_empty_list(bad):
    with pytest.raises(ValueError, match=r"must be a non-empty list|is not a list of source names"):
        PolicyDataConfig.from_dict({"sources": bad})


def test_sources_may_be_one_string_of_names():
    """`--params "policy.defaults.data.sources=synthetic_scalar my_prefs"`: Kedro splits --params at
    commas, so a list of several names is written as one string with spaces (issue 23 item 7)."""
    assert PolicyDataConfig.from_dict({"sources": "synthetic_scalar  my_prefs"}).sources == ["synthetic_scalar", "my_prefs"]
    assert PolicyDataConfig.from_dict({"sources": "synthetic_scalar"}).sources == ["synthetic_scalar"]
