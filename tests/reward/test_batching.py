import numpy as np
import pytest
import torch

from prefalign.core.training.batching import (
    TruncationStats,
    make_pair_batches,
    padding_fraction,
    tokenize_pairs,
    tokenize_sequence,
)
from tests.reward.helpers import toy_pairs, toy_tokenizer


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


def test_sequence_layout_and_masks(tok):
    seq = tokenize_sequence(tok, "why sky", "great kind", max_length=64, max_prompt_length=32)
    prompt_ids = tok("why sky", add_special_tokens=False)["input_ids"]
    response_ids = tok("great kind", add_special_tokens=False)["input_ids"]
    assert seq.input_ids == [tok.bos_token_id, *prompt_ids, *response_ids, tok.eos_token_id]
    assert seq.prompt_length == 1 + len(prompt_ids)


def test_truncation_is_counted_and_keeps_prompt_end_and_response_start(tok):
    stats = TruncationStats()
    prompt = " ".join(["why"] * 40) + " cat"
    response = " ".join(["great"] * 40)
    seq = tokenize_sequence(tok, prompt, response, max_length=20, max_prompt_length=8, stats=stats)
    assert len(seq) == 20 and seq.prompt_length == 8
    assert seq.input_ids[0] == tok.bos_token_id
    cat = tok(" cat", add_special_tokens=False)["input_ids"]
    assert seq.input_ids[8 - len(cat) : 8] == cat  # the prompt's END survives
    assert seq.input_ids[8] == tok(" great", add_special_tokens=False)["input_ids"][0] or seq.input_ids[8] == tok("great", add_special_tokens=False)["input_ids"][0]
    assert stats.sequences == 1 and stats.truncated_prompts == 1 and stats.truncated_responses == 1
    full_prompt = 1 + len(tok(prompt, add_special_tokens=False)["input_ids"])
    full_response = len(tok(response, add_special_tokens=False)["input_ids"]) + 1
    assert stats.prompt_tokens_removed == full_prompt - 8
    assert stats.response_tokens_removed == full_response - 12


def test_short_response_leaves_room_for_longer_prompt(tok):
    stats = TruncationStats()
    seq = tokenize_sequence(tok, " ".join(["why"] * 40), "great", max_length=20, max_prompt_length=4, stats=stats)
    assert len(seq) == 20 and seq.input_ids[-1] == tok.eos_token_id
    assert stats.truncated_prompts == 1 and stats.truncated_responses == 0


def test_bad_lengths_fail_clearly(tok):
    with pytest.raises(ValueError, match="max_prompt_length"):
        tokenize_sequence(tok, "a", "b", max_length=5, max_prompt_length=4)


def test_pairs_are_never_dropped_and_batches_are_chosen_then_rejected(tok):
    prompts, chosen, rejected = toy_pairs(37)
    p = np.linspace(0.5, 1.0, 37)
    tokenized = tokenize_pairs(tok, prompts, chosen, rejected, p, [None] * 37, max_length=12, max_prompt_length=6)
    assert len(tokenized) == 37 and tokenized.truncation.sequences == 74
    assert tokenized.truncation.truncated_prompts > 0  # prompts are longer than 6 tokens here
    batches = make_pair_batches(tokenized, batch_size=8, pad_token_id=tok.pad_token_id, seed=0)
    seen = torch.cat([b.pair_index for b in batches]).sort().values
    assert torch.equal(seen, torch.arange(37))  # every pair exactly once
    b = batches[0]
    i = int(b.pair_index[0])
    n = len(b)
    assert b.sequences.input_ids.shape[0] == 2 * n
    chosen_row = b.sequences.input_ids[0, : int(b.sequences.last_index[0]) + 1].tolist()
    rejected_row = b.sequences.input_ids[n, : int(b.sequences.last_index[n]) + 1].tolist()
    assert chosen_row == tokenized.chosen[i].input_ids and rejected_row == tokenized.rejected[i].input_ids
    assert float(b.p_chosen[0]) == pytest.approx(p[i]) and torch.isnan(b.margin).all()
    # response mask covers exactly the response tokens
    rm = b.sequences.response_mask[0]
    assert int(rm.sum()) == len(tokenized.chosen[i]) - tokenized.chosen[i].prompt_length
    assert int(b.sequences.last_prompt_index[0]) == tokenized.chosen[i].prompt_length - 1


def test_length_grouping_reduces_padding(tok):
    rng = np.random.default_rng(0)
    prompts = ["q"] * 256
    lengths = rng.integers(1, 60, 256)  # the two sides of a pair have similar lengths, as in real data
    chosen = [" ".join(["great"] * int(k)) for k in lengths]
    rejected = [" ".join(["great"] * int(k + rng.integers(0, 4))) for k in lengths]
    tokenized = tokenize_pairs(tok, prompts, chosen, rejected, max_length=128, max_prompt_length=8)
    grouped = padding_fraction(make_pair_batches(tokenized, 16, tok.pad_token_id, seed=0))
    # the naive alternative: random batches, no grouping (group of one batch)
    from prefalign.core.training import batching

    naive_index = np.random.default_rng(0).permutation(256).reshape(-1, 16)
    naive = []
    for index in naive_index:
        seqs = [tokenized.chosen[i] for i in index] + [tokenized.rejected[i] for i in index]
        naive.append(batching.collate_sequences(seqs, tok.pad_token_id))
    assert grouped < 0.3 * padding_fraction(naive)


def test_shard_splits_global_batch_evenly(tok):
    prompts, chosen, rejected = toy_pairs(8)
    tokenized = tokenize_pairs(tok, prompts, chosen, rejected, max_length=64, max_prompt_length=32)
    (batch,) = make_pair_batches(tokenized, 8, tok.pad_token_id, seed=None)
    s0, s1 = batch.shard(0, 2), batch.shard(1, 2)
    assert len(s0) == len(s1) == 4
    assert sorted(s0.pair_index.tolist() + s1.pair_index.tolist()) == list(range(8))
    assert torch.equal(s1.sequences.input_ids[0], batch.sequences.input_ids[1])
    assert torch.equal(s1.sequences.input_ids[4], batch.sequences.input_ids[9])  # rejected of pair 1
