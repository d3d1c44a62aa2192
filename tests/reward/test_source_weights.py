"""reward source_weights: integer oversampling of a source's train pairs (docs/reward.md, GPM and cycles)."""

import polars as pl
import pytest

from prefalign.core.reward.training import RewardParams, weight_sources


def _pairs() -> pl.DataFrame:
    return pl.DataFrame({"pair_id": ["a", "b", "c", "d"],
                         "source": ["synthetic_cyclic", "hh_rlhf", "synthetic_cyclic", "hh_rlhf"]})


def test_each_pair_of_a_weighted_source_is_repeated_weight_times_and_no_pair_is_lost():
    out = weight_sources(_pairs(), {"synthetic_cyclic": 3, "absent_source": 2})
    counts = dict(out.group_by("pair_id").len().iter_rows())
    assert counts == {"a": 3, "b": 1, "c": 3, "d": 1}  # 2 cyclic pairs x 3 + 2 others x 1
    assert out.head(4).equals(_pairs())  # the original rows come first, unchanged


def test_no_weights_returns_the_pairs_as_they_are():
    assert weight_sources(_pairs(), {}).equals(_pairs())
    assert weight_sources(_pairs(), {"hh_rlhf": 1}).equals(_pairs())


@pytest.mark.parametrize("bad", [0, 2.5, -1, "3", True])
def test_a_bad_weight_fails_before_training_naming_the_source(bad):
    with pytest.raises(ValueError, match=r"source_weights\['synthetic_cyclic'\]=.* must be an integer >= 1"):
        RewardParams.from_dict({"source_weights": {"synthetic_cyclic": bad}})
