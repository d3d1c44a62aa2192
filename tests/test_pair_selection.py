"""core/pair_selection.py: the one rule by which reward training, policy training and the evaluation
pick their pairs (splits, sources, caps)."""

import polars as pl

from prefalign.core.pair_selection import cap_rows, rows_of
from prefalign.core.policy.train_policy import split_pairs
from prefalign.core.reward.train_reward import RewardParams, select_pairs

PAIRS = pl.DataFrame({
    "pair_id": ["e", "b", "d", "a", "c", "f"],
    "split": ["train", "train", "val", "train", "train", "train"],
    "source": ["x", "y", "x", "x", "y", "y"],
    "p_chosen": [0.9] * 6,
    "margin": [1.0] * 6,
})


def test_rows_of_keeps_splits_and_sources_in_table_order():
    assert rows_of(PAIRS, "train")["pair_id"].to_list() == ["e", "b", "a", "c", "f"]
    assert rows_of(PAIRS, ["train", "val"], ["x"])["pair_id"].to_list() == ["e", "d", "a"]


def test_an_unseeded_cap_keeps_the_smallest_pair_ids_and_an_uncut_table_as_it_is():
    train = rows_of(PAIRS, "train")
    assert cap_rows(train, 3)["pair_id"].to_list() == ["a", "b", "c"]
    assert cap_rows(train, 5)["pair_id"].to_list() == ["e", "b", "a", "c", "f"]  # nothing cut: order kept
    assert cap_rows(train, None) is train
    assert cap_rows(train, 1, per="source")["pair_id"].to_list() == ["a", "b"]  # per source: x -> a, y -> b


def test_a_seeded_cap_per_group_is_the_evaluations_shuffle():
    frame = pl.DataFrame({"pair_id": [f"p{i}" for i in range(40)], "source": ["x", "y"] * 20})
    expected = frame.filter(pl.int_range(pl.len()).shuffle(seed=3).over("source") < 4)  # the evaluation's rule
    capped = cap_rows(frame, 4, per="source", seed=3)
    assert capped.equals(expected) and capped.group_by("source").len()["len"].to_list() == [4, 4]
    assert not cap_rows(frame, 4, per="source", seed=4).equals(capped)  # another seed, another subset


def test_reward_and_policy_training_cap_by_the_same_rule():
    reward, counts = select_pairs(PAIRS, "train", RewardParams(), 2, drop_ties=False)
    policy = split_pairs(PAIRS, "train", 2)
    assert reward["pair_id"].to_list() == policy["pair_id"].to_list() == ["a", "b"]
    assert counts == {"train_rows": 5, "train_pairs_used": 2}
