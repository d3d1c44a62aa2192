"""Truncation in evaluation: counted, and pairs it makes token-identical reported apart, not scored."""

import polars as pl
import pytest

from prefalign.core.evaluation import evaluate, pair_scorers, statistics
from prefalign.core.models import build_tokenizer

PROMPT = "please answer the question about the weather today"
SAME_START = "the answer is sunny and warm all day long with a light breeze " * 3


def _pairs() -> pl.DataFrame:
    return pl.DataFrame({
        "pair_id": ["p1", "p2"], "prompt_id": ["x1", "x2"], "prompt": [PROMPT, PROMPT],
        # p1 differs only at the very end (cut away at a short max_length); p2 differs at the start
        "chosen": [SAME_START + "yes", "rain"], "rejected": [SAME_START + "no", "snow"],
        "p_chosen": [1.0, 1.0], "true_p": [None, None], "source": ["s", "s"], "split": ["test", "test"],
    }, schema_overrides={"true_p": pl.Float64})


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer({"vocab_size": 300}, [PROMPT, SAME_START, "yes no rain snow"])


def test_pairs_identical_after_truncation_are_found_and_cuts_counted(tokenizer):
    pairs = _pairs()
    identical, stats = pair_scorers.truncation_audit(tokenizer, pairs, max_length=16, max_prompt_length=4)
    assert identical.tolist() == [True, False]
    assert stats["sequences"] == 4 and stats["pairs_identical_after_truncation"] == 1
    assert stats["sequences_truncated"] >= 2 and stats["tokens_removed"] > 0
    # with room for everything nothing is cut and nothing is identical
    identical, stats = pair_scorers.truncation_audit(tokenizer, pairs, max_length=4096, max_prompt_length=64)
    assert not identical.any() and stats["sequences_truncated"] == 0 and stats["tokens_removed"] == 0


def test_identical_pairs_are_reported_apart_not_scored_wrong(tokenizer):
    pairs = _pairs()
    identical, _ = pair_scorers.truncation_audit(tokenizer, pairs, max_length=16, max_prompt_length=4)
    # a model sees the same tokens on both sides of p1, so its logit there is 0 (a "tie" = wrong)
    scored = pairs.with_columns(pl.Series("logit", [0.0, 2.0]), pl.Series("identical_after_truncation", identical))
    result = evaluate.evaluate_pair_scores(scored, 10, statistics.BootstrapConfig(resamples=20))
    assert result["identical_after_truncation"] == 1 and result["pairs"] == 1
    assert result["accuracy"] == 1.0  # p1 is not counted as wrong
    assert evaluate.pair_score_record(scored)["pair_id"] == ["p2"]
