"""Packed and prompt-shared forwards give the unpacked per-sequence rewards and log-probs (fp32, <= 1e-5)."""

from __future__ import annotations

import pytest
import torch

from prefalign.core.models import build_backbone, build_causal_lm
from prefalign.core.policy.logprobs import pair_logprobs
from prefalign.core.policy.reference import score_pair_batches
from prefalign.core.reward.model import RewardModel
from prefalign.core.reward.objectives import make_reward_loss_fn
from prefalign.core.reward.train_reward import RewardParams
from prefalign.core.training.batching import TokenizedSequence, make_pair_batches, tokenize_pairs
from prefalign.core.training.packing import (
    CHOSEN,
    REJECTED,
    SHARED,
    PackedPairBatch,
    attention_mask_4d,
    make_packed_pair_batches,
    model_inputs,
    pack_pairs,
    packed_padding_fraction,
)
from tests.reward.helpers import toy_pairs, toy_tokenizer

MODEL = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64, "max_position_embeddings": 256}
LAYOUTS = [dict(share_prompt=False), dict(share_prompt=True), dict(share_prompt=True, row_tokens=64)]


@pytest.fixture(scope="module")
def tokenizer():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def tokenized(tokenizer):
    x, w, l = toy_pairs(24, seed=3)
    # a long prompt on pair 0 with a short max_length: its two sides are truncated differently
    x[0] = " ".join(["why the sky"] * 12)
    return tokenize_pairs(tokenizer, x, w, l, max_length=24, max_prompt_length=8)


def test_layout_positions_mask_and_targets_by_hand():
    # pair: prompt [1, 5, 6], chosen response [7, 2], rejected response [8, 9, 2]
    c = TokenizedSequence([1, 5, 6, 7, 2], 3)
    r = TokenizedSequence([1, 5, 6, 8, 9, 2], 3)
    p = pack_pairs([c], [r], share_prompt=True)
    assert p.input_ids.tolist() == [[1, 5, 6, 7, 2, 8, 9, 2]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 4, 5]]  # rejected continues from the prompt end
    assert p.branch_ids.tolist() == [[SHARED] * 3 + [CHOSEN] * 2 + [REJECTED] * 3]
    mask = attention_mask_4d(p)[0, 0]
    assert mask[5].tolist() == [True, True, True, False, False, True, False, False]  # rejected 8 sees prompt + itself
    assert mask[7].tolist() == [True, True, True, False, False, True, True, True]
    assert mask[4].tolist() == [True, True, True, True, True, False, False, False]
    assert p.last_index.tolist() == [[0, 4], [0, 7]] and p.last_prompt_index.tolist() == [[0, 2], [0, 2]]
    # response targets and the columns whose logits predict them: rejected's first token from the prompt's end
    assert p.target_ids.tolist() == [7, 2, 8, 9, 2]
    assert p.target_source.tolist() == [2, 3, 2, 5, 6]
    assert p.target_sequence.tolist() == [0, 0, 1, 1, 1]
    assert p.num_tokens == 11 and p.computed_tokens == 8
    # without sharing: two segments, positions restart, no cross-segment attention
    q = pack_pairs([c], [r], share_prompt=False, row_tokens=11)
    assert q.input_ids.tolist() == [[1, 5, 6, 8, 9, 2, 1, 5, 6, 7, 2]]  # longest first
    assert q.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]]
    assert not attention_mask_4d(q)[0, 0, 6, :6].any()


def test_pairs_with_different_prompts_are_not_shared():
    # pair-consistent truncation (docs/methods.md s6) gives both sides one prompt; hand-made pairs may not
    c, r = TokenizedSequence([1, 5, 6, 7, 8, 2], 3), TokenizedSequence([1, 5, 9, 7, 2], 3)
    assert c.input_ids[: c.prompt_length] != r.input_ids[: r.prompt_length]
    p = pack_pairs([c], [r], share_prompt=True)
    assert not p.shares_prompts and p.computed_tokens == len(c) + len(r)


def test_segment_longer_than_row_is_an_error():
    c = TokenizedSequence([1, 5, 6, 7, 2], 3)
    with pytest.raises(ValueError, match="row_tokens=4"):
        pack_pairs([c], [c], row_tokens=4)


@pytest.mark.parametrize("head", ["scalar", "gpm"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_packed_rewards_equal_unpacked(tokenizer, tokenized, head, layout):
    model = RewardModel(build_backbone({**MODEL, "attn_implementation": "sdpa"}, tokenizer), {"head": head}).eval()
    padded = make_pair_batches(tokenized, 8, tokenizer.pad_token_id, seed=1)
    packed = make_packed_pair_batches(tokenized, 8, tokenizer.pad_token_id, seed=1, **layout)
    assert packed_padding_fraction(packed) < 0.5
    with torch.no_grad():
        for a, b in zip(padded, packed):
            assert torch.equal(a.pair_index, b.pair_index)
            out_a, out_b = model(a.sequences), model(b.sequences)
            if head == "scalar":
                torch.testing.assert_close(out_b.rewards, out_a.rewards, atol=1e-5, rtol=0)
            else:
                torch.testing.assert_close(out_b.embeddings, out_a.embeddings, atol=1e-5, rtol=0)
                torch.testing.assert_close(out_b.gate, out_a.gate, atol=1e-5, rtol=0)
            torch.testing.assert_close(out_b.pair_logits(len(b)), out_a.pair_logits(len(a)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_packed_response_logprobs_equal_unpacked(tokenizer, tokenized, layout):
    model = build_causal_lm({**MODEL, "attn_implementation": "sdpa"}, tokenizer).eval()
    padded = make_pair_batches(tokenized, 8, tokenizer.pad_token_id, seed=None)
    packed = make_packed_pair_batches(tokenized, 8, tokenizer.pad_token_id, seed=None, **layout)
    i_a, c_a, r_a = score_pair_batches(model, padded)  # the reference-log-prob pass, both ways
    i_b, c_b, r_b = score_pair_batches(model, packed)
    assert torch.equal(i_a, i_b)
    # sums of ~20 token log-probs of magnitude ~4: fp32 summation order alone moves them by ~1e-5 relative 1e-7
    torch.testing.assert_close(c_b, c_a, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(r_b, r_a, atol=1e-5, rtol=1e-6)
    with torch.no_grad():  # the padded path of the policy module itself, not only the reference pass
        s = padded[0].sequences
        c_ref, _ = pair_logprobs(model, s.input_ids, s.attention_mask, s.response_mask)
    torch.testing.assert_close(c_b[: len(c_ref)], c_ref, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_gradients_equal_unpacked(tokenizer, tokenized, checkpointing):
    """One reward-loss backward: same loss and parameter gradients (training sees the same function);
    with gradient checkpointing each layer is re-run in the backward pass and must attend per segment there too."""
    grads = []
    for make in (make_pair_batches, lambda *a, **k: make_packed_pair_batches(*a, share_prompt=True, **k)):
        model = RewardModel(build_backbone({**MODEL, "gradient_checkpointing": checkpointing}, tokenizer), {"head": "scalar"}).train()
        batch = make(tokenized, 12, tokenizer.pad_token_id, seed=0)[0]
        loss, _ = make_reward_loss_fn(RewardParams())(model, batch)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_shard_repacks_the_same_pairs_as_the_padded_shard(tokenizer, tokenized):
    padded = make_pair_batches(tokenized, 8, tokenizer.pad_token_id, seed=0)[0]
    packed = make_packed_pair_batches(tokenized, 8, tokenizer.pad_token_id, seed=0, share_prompt=True)[0]
    for rank in (0, 1):
        a, b = padded.shard(rank, 2), packed.shard(rank, 2)
        assert isinstance(b, PackedPairBatch) and torch.equal(a.pair_index, b.pair_index)
        assert a.num_tokens == b.num_tokens and len(a) == len(b)


def test_prompt_sharing_with_flash_attention_is_refused(tokenizer):
    model = build_backbone(MODEL, tokenizer)
    model.config._attn_implementation = "flash_attention_2"
    c = TokenizedSequence([1, 5, 6, 7, 2], 3)
    r = TokenizedSequence([1, 5, 6, 8, 2], 3)
    assert model_inputs(model, pack_pairs([c], [r]))["attention_mask"] is None  # varlen from position ids
    with pytest.raises(ValueError, match="attn_implementation: sdpa"):
        model_inputs(model, pack_pairs([c], [r], share_prompt=True))


def test_default_layout_is_one_row_without_padding(tokenizer, tokenized):
    for share in (False, True):
        for batch in make_packed_pair_batches(tokenized, 8, tokenizer.pad_token_id, seed=0, share_prompt=share):
            assert batch.sequences.input_ids.shape[0] == 1 and batch.sequences.padding_fraction == 0.0


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("row_tokens", [None, 14])
def test_segment_attention_equals_the_dense_mask_rule(groups, row_tokens):
    """The per-segment kernel against one SDPA call with attention_mask_4d (the module doc's rule),
    with grouped-query heads and with row tails; outputs and input gradients."""
    from prefalign.core.training.segment_attention import segment_attention_forward

    c = [TokenizedSequence([1, 5, 6, 7, 8, 2], 3), TokenizedSequence([1, 9, 9, 9, 9, 9, 3, 2], 6), TokenizedSequence([1, 4, 2], 1)]
    r = [TokenizedSequence([1, 5, 6, 3, 2], 3), TokenizedSequence([1, 9, 9, 9, 9, 9, 4, 4, 4, 2], 6), TokenizedSequence([1, 7, 2], 2)]
    packed = pack_pairs(c, r, share_prompt=True, row_tokens=row_tokens)
    assert packed.shares_prompts
    rows, width = packed.input_ids.shape
    g = torch.Generator().manual_seed(0)
    q = torch.randn(rows, 4, width, 8, generator=g, requires_grad=True)
    k = torch.randn(rows, 4 // groups, width, 8, generator=g, requires_grad=True)
    v = torch.randn(rows, 4 // groups, width, 8, generator=g, requires_grad=True)
    out, _ = segment_attention_forward(torch.nn.Module(), q, k, v, None, packed_segments=packed.plan)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), attn_mask=attention_mask_4d(packed)).transpose(1, 2)
    real = torch.zeros_like(packed.segment_ids, dtype=torch.bool)  # row tails are never read
    for row, start, *_, end in packed.plan.segments:
        real[row, start:end] = True
    assert int(real.sum()) == packed.computed_tokens and (row_tokens is None) == bool(real.all())
    torch.testing.assert_close(out[real], ref[real], atol=1e-6, rtol=0)
    grads = torch.autograd.grad((out[real] ** 2).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref[real] ** 2).sum(), (q, k, v))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_packing_with_eager_attention_is_refused(tokenizer):
    model = build_backbone({**MODEL, "attn_implementation": "eager"}, tokenizer)
    c = TokenizedSequence([1, 5, 6, 7, 2], 3)
    with pytest.raises(ValueError, match="attn_implementation 'eager'; set model.attn_implementation: sdpa"):
        model_inputs(model, pack_pairs([c], [c]))


def test_a_model_that_ignores_the_segment_plan_is_stopped(tokenizer, tokenized, monkeypatch):
    """If attention did not go through transformers' interface, the rows would mix sequences: an error, not a wrong number."""
    from prefalign.core.training import segment_attention

    model = RewardModel(build_backbone(MODEL, tokenizer), {"head": "scalar"})
    batch = make_packed_pair_batches(tokenized, 8, tokenizer.pad_token_id, seed=0)[0]
    monkeypatch.setattr(segment_attention, "segment_attention_forward", lambda module, q, *a, **k: (q.transpose(1, 2), None))
    with pytest.raises(RuntimeError, match=r"only 0 of 2 attention layers"):
        model(batch.sequences)


def test_sliding_window_layers_pack_only_segments_inside_the_window():
    from prefalign.core.training.segment_attention import segment_attention_forward

    c, r = TokenizedSequence([1, 5, 6, 7, 2], 3), TokenizedSequence([1, 5, 6, 8, 9, 2], 3)
    packed = pack_pairs([c], [r], share_prompt=True)  # one segment of 8 tokens
    q = k = v = torch.randn(1, 2, 8, 4)
    out, _ = segment_attention_forward(torch.nn.Module(), q, k, v, None, packed_segments=packed.plan, sliding_window=8)
    assert out.shape == (1, 8, 2, 4)
    with pytest.raises(ValueError, match="longer than the model's sliding window \\(7 tokens\\)"):
        segment_attention_forward(torch.nn.Module(), q, k, v, None, packed_segments=packed.plan, sliding_window=7)
