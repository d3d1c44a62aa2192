"""Policy losses against hand-computed cases (docs/methods.md s4)."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.core.objectives.soft_label import pair_targets
from prefalign.core.policy.losses import (
    dpo_loss,
    gpo_loss,
    gpo_scores_from_matrix,
    implicit_reward_margin,
    ipo_loss,
    sft_loss,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# One pair: policy chosen/rejected -1/-3, reference -2/-2.5 -> h = (1) - (-0.5) = 1.5.
H = implicit_reward_margin(t(-1.0), t(-3.0), t(-2.0), t(-2.5))


def test_implicit_reward_margin_hand_case():
    assert H.item() == pytest.approx(1.5)


def test_dpo_hand_case():
    # beta = 0.5 -> z = 0.75; -log sigmoid(0.75) = log(1 + e^-0.75) = 0.3868710061149
    assert dpo_loss(H, beta=0.5).item() == pytest.approx(0.3868710061149)


def test_mmpo_hand_case():
    # -p log s(z) - (1-p) log s(-z) = -log s(z) + (1-p) z = 0.3868710061149 + 0.2 * 0.75
    assert dpo_loss(H, 0.5, t(0.8)).item() == pytest.approx(0.5368710061149)


def test_ipo_hand_case():
    # (h - 1/(2 beta))^2 = (1.5 - 1)^2
    assert ipo_loss(H, beta=0.5).item() == pytest.approx(0.25)


def test_mmpo_with_p_one_is_dpo():
    h = t(1.5, -0.3, 0.0, 4.0)
    assert dpo_loss(h, 0.1, torch.ones_like(h)).item() == dpo_loss(h, 0.1).item()  # exactly


def test_constant_p_is_cdpo():
    h = t(1.5, -0.3, 0.0, 4.0)
    eps = 0.1
    constant = pair_targets(t(0.9, 0.6, 0.7, 1.0), soft_targets=False, label_smoothing=eps)
    # cDPO by hand for h = 0 (z = 0): -log s(0) = log 2 whatever p
    assert dpo_loss(t(0.0), 0.3, t(1 - eps)).item() == pytest.approx(math.log(2))
    z = 0.3 * 1.5
    assert dpo_loss(t(1.5), 0.3, t(1 - eps)).item() == pytest.approx(math.log1p(math.exp(-z)) + eps * z)
    assert dpo_loss(h, 0.3, constant).item() == pytest.approx(dpo_loss(h, 0.3, torch.full_like(h, 1 - eps)).item())


def test_batch_uses_each_pairs_own_p():
    # z = beta h = (1, 2); per pair -log s(z) + (1-p) z with p = (1.0, 0.6)
    h, p = t(2.0, 4.0), t(1.0, 0.6)
    expected = (math.log1p(math.exp(-1.0)) + 0.0 + math.log1p(math.exp(-2.0)) + 0.4 * 2.0) / 2
    assert dpo_loss(h, 0.5, p).item() == pytest.approx(expected)
    # the broadcasting bug (p averaged over the batch) would give a different number
    wrong = dpo_loss(h, 0.5, torch.full_like(p, p.mean().item())).item()
    assert wrong != pytest.approx(expected)


def test_shape_mismatch_is_an_error_not_a_broadcast():
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(t(1.0, 2.0).unsqueeze(1), 1.0, t(0.7, 0.9))


def test_soft_ipo_hand_case_p_one_is_ipo_and_gradient_zero_at_target():
    # target (2p - 1)/(2 beta) with beta = 0.5, p = 0.8: 0.6; (1.5 - 0.6)^2 = 0.81
    assert ipo_loss(H, 0.5, t(0.8)).item() == pytest.approx(0.81)
    h = t(1.5, -0.3, 0.0, 4.0)
    assert ipo_loss(h, 0.5, torch.ones_like(h)).item() == ipo_loss(h, 0.5).item()  # exactly
    p = t(0.5, 0.7, 0.95)
    h = ((2 * p - 1) / (2 * 0.5)).clone().requires_grad_()
    ipo_loss(h, 0.5, p).backward()
    assert h.grad.abs().max().item() < 1e-12


def test_dpo_soft_gradient_zero_at_logit_p():
    p = t(0.6, 0.75, 0.9)
    beta = 0.5
    h = (torch.log(p / (1 - p)) / beta).clone().requires_grad_()
    dpo_loss(h, beta, p).backward()
    assert h.grad.abs().max().item() < 1e-12


def test_gpo_hand_made_k3():
    # s(y_i > y_k): antisymmetric 3 x 3 table; s_i = row means = (1, 0, -1)
    table = t(0.0, 1.0, 2.0, -1.0, 0.0, 1.0, -2.0, -1.0, 0.0).view(3, 3)
    scores = gpo_scores_from_matrix(table)
    assert scores.tolist() == pytest.approx([1.0, 0.0, -1.0])
    # beta = 2: targets s/beta = (0.5, 0, -0.5); log-ratios (0.5, 0, -1) -> residuals (0, 0, -0.5)
    loss = gpo_loss(t(-3.0, -4.0, -5.0), t(-3.5, -4.0, -4.0), scores, beta=2.0)
    assert loss.item() == pytest.approx(0.25 / 3)


def test_gpo_bt_baseline_scores():
    # BT: s(i > k) = r_i - r_k, so row means equal r_i - mean(r)
    rewards = t(2.0, 1.0, 0.0)
    table = rewards[:, None] - rewards[None, :]
    centred = rewards - rewards.mean()  # the BT baseline s_i = r_i - mean_k r_k, by hand
    assert centred.tolist() == pytest.approx(gpo_scores_from_matrix(table).tolist())
    assert centred.tolist() == pytest.approx([1.0, 0.0, -1.0])


def test_sft_loss_hand_case_and_response_only():
    # vocab 2, uniform logits -> every token costs log 2; 2 response targets out of 3 positions
    logits = torch.zeros(1, 4, 2, dtype=torch.float64)
    input_ids = torch.tensor([[0, 1, 0, 1]])
    response_mask = torch.tensor([[0, 0, 1, 1]])
    assert sft_loss(logits, input_ids, response_mask).item() == pytest.approx(math.log(2))
    # make the prompt target (position 0 predicts token 1) very unlikely: loss must not move
    logits[0, 0, 1] = -50.0
    assert sft_loss(logits, input_ids, response_mask).item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="no response tokens"):
        sft_loss(logits, input_ids, torch.zeros_like(response_mask))
