"""The synthetic lab: seeded, in the pairs schema, and its truth is what the text says."""

import math

import polars as pl
import pytest

from prefalign.core.schema import PAIRS_SCHEMA
from prefalign.core.synthetic import SyntheticConfig, cyclic_pairs, generate_cyclic, generate_scalar, hidden_reward
from prefalign.core.synthetic.generator import majority_winner, response_attributes

CONFIG = SyntheticConfig(n_prompts=12, n_triples=6)


def test_scalar_pairs_follow_the_contract_and_the_hidden_reward():
    pairs = generate_scalar(CONFIG)
    assert dict(pairs.schema) == PAIRS_SCHEMA and pairs.height > 20
    assert pairs["pair_id"].n_unique() == pairs.height
    for row in pairs.iter_rows(named=True):
        gap = hidden_reward(row["prompt"], row["chosen"], CONFIG.weights) - hidden_reward(
            row["prompt"], row["rejected"], CONFIG.weights)
        assert row["margin"] == pytest.approx(gap) and gap >= CONFIG.min_margin
        assert row["true_p"] == pytest.approx(1 / (1 + math.exp(-gap))) == row["p_chosen"]
        assert (row["source"], row["feedback"], row["signal"]) == ("synthetic_scalar", "synthetic", "ground_truth")
    # graded margins, and one prompt never crosses splits
    assert pairs["margin"].n_unique() > 5
    assert pairs.group_by("prompt_id").agg(pl.col("split").n_unique())["split"].max() == 1


def test_generator_is_seeded():
    assert generate_scalar(CONFIG).equals(generate_scalar(CONFIG))
    other = generate_scalar(SyntheticConfig(n_prompts=12, seed=1))
    assert not generate_scalar(CONFIG)["pair_id"].equals(other["pair_id"])


def test_hidden_reward_reads_any_text():
    prompt = "How can I sleep better at night?"
    good = "Sure. Keep your bedroom dark, quiet and cool. Most adults need seven to nine hours of sleep per night."
    weights = CONFIG.weights
    assert hidden_reward(prompt, good, weights) == weights["helpfulness"] + weights["correctness"]
    assert hidden_reward(prompt, "zq zq zq", weights) == 0.0


def test_cyclic_triples_are_cycles_under_the_attribute_majority_rule():
    triples = generate_cyclic(CONFIG)
    assert triples.height == 6

    def levels(prompt, text):
        a = response_attributes(prompt, text)
        return (a["helpfulness"], {-1: 1, 0: 2, 1: 3}[a["correctness"]], {3: 1, 1: 2, 0: 3}[a["verbosity"]])

    for t in triples.iter_rows(named=True):
        la, lb, lc = (levels(t["prompt"], t[f"response_{k}"]) for k in "abc")
        assert (majority_winner(la, lb), majority_winner(lb, lc), majority_winner(lc, la)) == (1, 1, 1)
    pairs = cyclic_pairs(triples, CONFIG)
    assert pairs.height == 18 and set(pairs["source"]) == {"synthetic_cyclic"}
    assert dict(pairs.schema) == PAIRS_SCHEMA


def test_bad_config_names_the_key():
    with pytest.raises(ValueError, match="n_promts"):
        SyntheticConfig.from_params({"n_promts": 3})
    with pytest.raises(ValueError, match="tone"):
        SyntheticConfig.from_params({"weights": {"helpfulness": 1, "correctness": 1, "verbosity": 1}})
