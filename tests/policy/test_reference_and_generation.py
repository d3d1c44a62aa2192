"""Reference log-probs computed once equal on-the-fly ones; batched sampling is sound."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from prefalign.core.policy.generation import SamplingConfig, sample_responses
from prefalign.core.policy.logprobs import pair_logprobs
from prefalign.core.policy.reference import ReferenceLogprobs
from prefalign.core.policy.train_policy import PolicyDataConfig, _pair_batches, reference_logprobs, split_pairs

DATA = PolicyDataConfig(max_length=64, max_prompt_length=32, batch_size=4, eval_batch_size=8)


def test_precomputed_reference_equals_on_the_fly(tiny_policy, tiny_pairs):
    table = reference_logprobs(tiny_policy, tiny_pairs, DATA)
    train, val = split_pairs(tiny_pairs, "train", None), split_pairs(tiny_pairs, "val", None)
    assert table.height == train.height + val.height and table["pair_id"].n_unique() == table.height
    # training batches: shuffled, another batch size, so other padding widths than the reference pass
    train_batches, _, val_eval, pair_ids, _, _ = _pair_batches(tiny_policy, train, val, DATA, seed=7)
    ref = ReferenceLogprobs.from_table(table, pair_ids)
    model = tiny_policy.model.eval()
    with torch.no_grad():
        for batch in list(train_batches) + list(val_eval):
            s = batch.sequences
            chosen, rejected = pair_logprobs(model, s.input_ids, s.attention_mask, s.response_mask)
            ref_chosen, ref_rejected = ref.lookup(batch.pair_index)
            assert torch.allclose(chosen, ref_chosen, atol=1e-4)
            assert torch.allclose(rejected, ref_rejected, atol=1e-4)


def test_reference_table_missing_pair_is_a_clear_error(tiny_policy, tiny_pairs):
    table = reference_logprobs(tiny_policy, tiny_pairs, DATA)
    with pytest.raises(ValueError, match="no reference log-probs .*'not-a-pair'"):
        ReferenceLogprobs.from_table(table, table["pair_id"].to_list() + ["not-a-pair"])


def test_sampling_k_per_prompt_capped_seeded(tiny_policy):
    tok = tiny_policy.tokenizer
    prompts = [[tok.bos_token_id] + tok.encode("Tell me about cats (1)."), [tok.bos_token_id] + tok.encode("Hi")]
    cfg = SamplingConfig(samples_per_prompt=3, max_new_tokens=6, batch_size=4, temperature=1.0, top_p=0.9)
    out = sample_responses(tiny_policy.model, tok, prompts, cfg)
    assert out.height == 6
    assert out.group_by("prompt_index").len().sort("prompt_index")["len"].to_list() == [3, 3]
    assert out["n_tokens"].max() <= 6
    assert out.equals(sample_responses(tiny_policy.model, tok, prompts, cfg))  # seeded
    other = sample_responses(tiny_policy.model, tok, prompts, SamplingConfig(**{**cfg.__dict__, "seed": 1}))
    assert not out["response"].equals(other["response"])


def test_left_padding_does_not_change_what_a_prompt_generates(tiny_policy):
    # near-greedy sampling: a short prompt batched beside a long one (so left-padded) must
    # produce what it produces alone
    tok = tiny_policy.tokenizer
    short = [tok.bos_token_id] + tok.encode("Hi")
    long = [tok.bos_token_id] + tok.encode("Tell me about rivers and boats and tea (5).")
    cfg = SamplingConfig(samples_per_prompt=2, max_new_tokens=5, batch_size=4, temperature=1e-4)
    alone = sample_responses(tiny_policy.model, tok, [short], cfg)
    batched = sample_responses(tiny_policy.model, tok, [long, short], cfg).filter(pl.col("prompt_index") == 1)
    assert alone["response"].to_list() == batched["response"].to_list()


def test_sampling_config_errors_name_the_key():
    with pytest.raises(ValueError, match="samples_per_prompt=1"):
        SamplingConfig.from_dict({"samples_per_prompt": 1})
    with pytest.raises(ValueError, match=r"unknown key sampling\.topp\b"):
        SamplingConfig.from_dict({"topp": 0.9})


def test_pairs_identical_after_truncation_are_left_out_of_policy_batches(tiny_policy, tiny_pairs):
    """Pair-consistent truncation (methods.md s6): a pair whose sides become the same ids carries no preference."""
    train, val = split_pairs(tiny_pairs, "train", None), split_pairs(tiny_pairs, "val", None)
    long = " ".join(["a"] * 200)
    first = train["pair_id"][0]
    train = train.with_columns(
        pl.when(pl.col("pair_id") == first).then(pl.lit(long + " x")).otherwise(pl.col("chosen")).alias("chosen"),
        pl.when(pl.col("pair_id") == first).then(pl.lit(long + " y")).otherwise(pl.col("rejected")).alias("rejected"),
    )
    _, train_eval, _, pair_ids, (n_train, n_val), excluded = _pair_batches(tiny_policy, train, val, DATA, seed=None)
    assert excluded["train"] == 1 and "identical" in excluded["reason"]
    assert first not in pair_ids and n_train == train.height - 1 and n_val == val.height
    assert sorted(int(i) for b in train_eval for i in b.pair_index) == list(range(n_train))
