"""Response-only log-probs: one forward for chosen + rejected, prompt tokens never count."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from prefalign.core.policy.logprobs import masked_sequence_logprobs, pair_logprobs, sequence_logprobs
from prefalign.core.policy.losses import dpo_loss, implicit_reward_margin, sft_loss


def tiny_lm(vocab: int = 11) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).eval()


# 2 pairs -> 4 rows: chosen rows first. Prompt tokens have mask 0, padding (id 0) attention 0.
INPUT_IDS = torch.tensor([[1, 2, 3, 4, 5, 0], [1, 6, 7, 8, 0, 0], [1, 2, 3, 9, 9, 9], [1, 6, 7, 10, 0, 0]])
ATTENTION = (INPUT_IDS != 0).long()
RESPONSE = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]])


def test_sequence_logprobs_equal_manual_sum():
    model = tiny_lm()
    got = sequence_logprobs(model, INPUT_IDS, ATTENTION, RESPONSE)
    logp = model(input_ids=INPUT_IDS, attention_mask=ATTENTION).logits.log_softmax(-1)
    for row in range(4):
        expected = sum(logp[row, pos - 1, INPUT_IDS[row, pos]].item() for pos in range(1, 6) if RESPONSE[row, pos])
        assert got[row].item() == pytest.approx(expected, abs=1e-5)


def test_pair_logprobs_one_forward_pass():
    model = tiny_lm()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    chosen, rejected = pair_logprobs(model, INPUT_IDS, ATTENTION, RESPONSE)
    assert len(calls) == 1 and chosen.shape == rejected.shape == (2,)
    with pytest.raises(ValueError, match="2B rows"):
        pair_logprobs(model, INPUT_IDS[:3], ATTENTION[:3], RESPONSE[:3])


def test_prompt_tokens_never_contribute_to_sft_or_preference_loss():
    torch.manual_seed(1)
    logits = torch.randn(4, 6, 11, requires_grad=True)
    logps = masked_sequence_logprobs(logits, INPUT_IDS, RESPONSE)
    h = implicit_reward_margin(logps[:2], logps[2:], torch.zeros(2), torch.zeros(2))
    loss = dpo_loss(h, 0.5, torch.tensor([0.9, 0.7])) + sft_loss(logits, INPUT_IDS, RESPONSE)
    loss.backward()
    # logits at position t predict token t+1: positions whose target is prompt/padding get no gradient
    predicts_response = torch.zeros(4, 6, dtype=torch.bool)
    predicts_response[:, :-1] = RESPONSE[:, 1:].bool()
    assert logits.grad[~predicts_response].abs().max().item() == 0.0
    assert logits.grad[predicts_response].abs().sum(-1).min().item() > 0.0
    # perturbing those logits leaves both losses unchanged
    perturbed = logits.detach().clone()
    perturbed[~predicts_response] += 10 * torch.randn_like(perturbed[~predicts_response])
    logps2 = masked_sequence_logprobs(perturbed, INPUT_IDS, RESPONSE)
    assert torch.allclose(logps2, logps.detach())
    assert sft_loss(perturbed, INPUT_IDS, RESPONSE).item() == pytest.approx(sft_loss(logits.detach(), INPUT_IDS, RESPONSE).item())
