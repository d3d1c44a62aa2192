"""reward source_weights: integer oversampling of a source's train pairs (docs/reward.md, GPM and cycles)."""

import numpy as np
import polars as pl
import pytest

from prefalign.core.reward.train_reward import RewardParams, weight_sources


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


WEIGHTS = {"synthetic_cyclic": 3, "hh_rlhf": 2}
RUN = {
    "max_length": 24, "max_prompt_length": 12, "batch_size": 8, "eval_batch_size": 16,
    "tokenizer": {"vocab_size": 300},
    "training": {"max_steps": 6, "learning_rate": 3e-3, "warmup_steps": 1, "eval_every": 3, "checkpoint_every": 0, "progress_bar": False},
}


def _mixed_frame():
    """Toy pairs from three sources; long responses get truncated; pair 3 (cyclic, x3) and
    pair 10 (hh_rlhf, x2) become token-identical."""
    from tests.reward.helpers import toy_pairs_frame

    frame = toy_pairs_frame(40, 8)
    n = frame.height
    long_same = "great " * 30
    chosen = [long_same + "kind" if i in (3, 10) else c for i, c in enumerate(frame["chosen"].to_list())]
    rejected = [long_same + "rude" if i in (3, 10) else r for i, r in enumerate(frame["rejected"].to_list())]
    return frame.with_columns(
        pl.Series("source", [("synthetic_cyclic", "hh_rlhf", "synthetic_scalar")[i % 3] for i in range(n)]),
        pl.Series("chosen", chosen), pl.Series("rejected", rejected),
    )


def test_repeating_tokenised_pairs_equals_tokenising_the_repeated_rows():
    from prefalign.core.reward.train_reward import source_repeat_index
    from prefalign.core.training.batching import tokenize_pair_frame
    from tests.reward.helpers import toy_tokenizer

    tok, frame = toy_tokenizer(), _mixed_frame()
    before = tokenize_pair_frame(tok, weight_sources(frame, WEIGHTS), 24, 12)  # the texts tokenised again
    after = tokenize_pair_frame(tok, frame, 24, 12).repeat(source_repeat_index(frame, WEIGHTS))
    assert len(before) == 48 + 16 * 2 + 16 * 1  # 48 rows; 16 cyclic x 2 extra, 16 hh_rlhf x 1 extra
    assert before.truncation.identical_after_truncation == 3 + 2 and before.truncation.truncated_responses > 0
    for a, b in ((before, after), (before.without_identical(), after.without_identical())):
        assert len(a) == len(b)
        assert [(s.input_ids, s.prompt_length) for s in a.chosen + a.rejected] == \
               [(s.input_ids, s.prompt_length) for s in b.chosen + b.rejected]
        np.testing.assert_array_equal(a.p_chosen, b.p_chosen)
        np.testing.assert_array_equal(a.margin, b.margin)
        np.testing.assert_array_equal(a.identical, b.identical)
        assert a.truncation.as_dict() == b.truncation.as_dict()


def test_a_weighted_run_tokenises_each_pair_once_and_trains_as_on_the_repeated_rows(tmp_path, monkeypatch):
    from prefalign.core.reward.train_reward import fit_tokenizer, train_reward_model
    from prefalign.core.training import token_cache
    from tests.reward.helpers import TINY_MODEL

    frame = _mixed_frame()
    train, val = frame.filter(pl.col("split") == "train"), frame.filter(pl.col("split") == "val")
    weighted = RewardParams.from_dict({**RUN, "model": TINY_MODEL, "source_weights": WEIGHTS})
    plain = RewardParams.from_dict({**RUN, "model": TINY_MODEL})
    tok = fit_tokenizer(train, plain)
    tokenised_rows = []
    real = token_cache.tokenize_pair_frame  # the in-memory path of cached_tokenize_pair_frame (no cache dir)
    monkeypatch.setattr(token_cache, "tokenize_pair_frame", lambda t, f, *a: tokenised_rows.append(f.height) or real(t, f, *a))
    run = train_reward_model(train, val, tok, weighted, tmp_path / "weighted", "test")
    assert sorted(tokenised_rows) == sorted([train.height, val.height])  # each table once: no repeat, no re-check
    # reference: the old behaviour, the repeated rows tokenised as a table of their own
    reference = train_reward_model(weight_sources(train, WEIGHTS), val, tok, plain, tmp_path / "plain", "test")
    timing = [c for c in run.training_curve.columns if "per_second" in c]  # wall-clock, not data
    assert run.training_curve.drop(timing).equals(reference.training_curve.drop(timing))
    assert "train_loss" in run.training_curve.drop(timing).columns
    assert run.metrics["train_pairs_weighted"] == reference.metrics["train_pairs"] > run.metrics["train_pairs"]
    assert run.metrics["truncation"] == reference.metrics["truncation"]
    assert run.metrics["val_loss"] == reference.metrics["val_loss"]


def test_the_repeat_index_of_a_large_lazy_table_makes_no_python_object_per_row():
    """A cached run passes its LazyFrame: the index is found from one bool flag per row, without the
    source strings as a numpy object array (~60 B per row of Python strings on 4M pairs)."""
    import tracemalloc

    from prefalign.core.reward.train_reward import source_repeat_index

    n = 200_000
    sources = np.where(np.arange(n) % 4 == 1, "synthetic_cyclic", "hh_rlhf_helpful_base")
    lazy = pl.DataFrame({"source": sources.tolist()}).with_columns(pl.when(pl.int_range(pl.len()) == 5)
                                                                  .then(None).otherwise(pl.col("source")).alias("source")).lazy()
    tracemalloc.start()
    index = source_repeat_index(lazy, {"synthetic_cyclic": 3, "absent": 2})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    cyclic = np.flatnonzero(np.arange(n) % 4 == 1)  # row 5 is cyclic but null: not repeated
    cyclic = cyclic[cyclic != 5]
    assert np.array_equal(index, np.concatenate([np.arange(n), cyclic, cyclic]))
    assert peak < 3 * index.nbytes  # the result and its parts; Python strings alone would add ~12 MB
