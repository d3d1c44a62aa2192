"""Held out by source: whole sources (and every prompt they share with others) leave train/val/test."""

import polars as pl
import pytest

from prefalign.core.feedback.pairs import PAIR_ROW_COLUMNS, build_pairs_table
from prefalign.core.schema import with_prompt_messages
from prefalign.pipelines.feedback.nodes import build_pairs

SPLIT = {"ratios": {"train": 1.0, "val": 0.0, "test": 0.0}, "salt": "x"}


def _rows(source: str, prompts: list[str]) -> pl.DataFrame:
    return with_prompt_messages(pl.DataFrame({
        "prompt": prompts, "chosen": [f"good {source} {p}" for p in prompts],
        "rejected": [f"bad {source} {p}" for p in prompts], "margin": [1.0] * len(prompts),
        "p_chosen": [0.7] * len(prompts), "source": [source] * len(prompts), "feedback": ["ai"] * len(prompts),
        "signal": ["votes"] * len(prompts), "true_p": [None] * len(prompts),
    }, schema={c: t for c, t in PAIR_ROW_COLUMNS.items() if c != "prompt_messages"}))


def test_a_heldout_source_takes_its_shared_prompts_out_of_every_other_source():
    # pandalm_human and pandalm_7b share prompt q1; ultrafeedback has its own prompts
    rows = [_rows("ultrafeedback", ["u1", "u2"]), _rows("pandalm_human", ["q1", "q2"]), _rows("pandalm_7b", ["q1", "q3"])]
    pairs, _ = build_pairs_table(rows, {**SPLIT, "heldout_sources": ["pandalm_human"]})
    split = dict(zip(pairs["source"] + ":" + pairs["prompt"], pairs["split"]))
    assert split["pandalm_human:q1"] == split["pandalm_human:q2"] == "heldout"
    assert split["pandalm_7b:q1"] == "heldout"  # shares q1 with a held-out source: no prompt straddles
    assert split["pandalm_7b:q3"] == "train" and split["ultrafeedback:u1"] == "train"
    # no prompt of the held-out source is anywhere in train/val/test
    heldout_prompts = set(pairs.filter(pl.col("source") == "pandalm_human")["prompt_id"])
    assert not heldout_prompts & set(pairs.filter(pl.col("split") != "heldout")["prompt_id"])
    assert pairs.height == 6  # no row lost


def test_nothing_held_out_by_default():
    pairs, _ = build_pairs_table([_rows("a", ["p"])], SPLIT)
    assert pairs["split"].to_list() == ["train"]


def test_an_unknown_heldout_source_is_named():
    params = {"split": {**SPLIT, "heldout_sources": ["pandalm_humans"]}, "sources": {"pandalm_human": {}}}
    with pytest.raises(ValueError, match=r"heldout_sources names \['pandalm_humans'\]"):
        build_pairs(params, _rows("pandalm_human", ["q"]))


def test_synthetic_sources_can_be_held_out_and_their_triples_follow():
    from prefalign.pipelines.evaluation.nodes import select_test_triples
    from prefalign.pipelines.feedback.synthetic import synthetic_cyclic_triples

    split = {"ratios": {"train": 0.8, "val": 0.1, "test": 0.1}, "salt": "x", "heldout_sources": ["synthetic_cyclic"]}
    triples = synthetic_cyclic_triples({"n_triples": 6, "seed": 0}, split)
    assert triples.height and set(triples["split"]) == {"heldout"}
    assert select_test_triples(triples, {"splits": ["test"], "heldout_splits": ["heldout"]}).height == triples.height
