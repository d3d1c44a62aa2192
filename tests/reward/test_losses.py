"""Reward losses (docs/methods.md s2) against hand-computed cases; one soft-label function for all."""

import math

import pytest
import torch

from prefalign.core.objectives.soft_label import pair_targets, soft_label_logistic_loss
from prefalign.core.reward.losses import centering_penalty, reward_pair_loss

NAN = float("nan")


def bt(z):
    return reward_pair_loss(z, torch.full_like(z, 0.7), torch.full_like(z, NAN), soft_targets=False, margin_offset=False)


def test_bt_by_hand():
    z = torch.tensor([0.0, 2.0, -1.0])
    expected = [math.log(2), math.log(1 + math.exp(-2)), math.log(1 + math.exp(1))]
    assert bt(z).tolist() == pytest.approx(expected)


def test_margin_offset_by_hand_and_null_margin_error():
    z = torch.tensor([3.0, 1.0])
    m = torch.tensor([1.0, 2.0])
    ones = torch.ones(2)
    loss = reward_pair_loss(z, ones, m, soft_targets=False, margin_offset=True)
    assert loss.tolist() == pytest.approx([math.log(1 + math.exp(-2)), math.log(1 + math.exp(1))])
    with pytest.raises(ValueError, match="null"):
        reward_pair_loss(z, ones, torch.tensor([1.0, NAN]), soft_targets=False, margin_offset=True)


def test_margin_offset_with_soft_targets_by_hand():
    # z - m = 1, p = 0.7: -0.7 log s(1) - 0.3 log s(-1)
    s = 1 / (1 + math.exp(-1))
    loss = reward_pair_loss(torch.tensor([3.0]), torch.tensor([0.7]), torch.tensor([2.0]), soft_targets=True, margin_offset=True)
    assert loss.item() == pytest.approx(-(0.7 * math.log(s) + 0.3 * math.log(1 - s)))


def test_mmpo_by_hand():
    z, p = torch.tensor([1.0]), torch.tensor([0.7])
    s = 1 / (1 + math.exp(-1))
    soft = reward_pair_loss(z, p, torch.tensor([NAN]), soft_targets=True, margin_offset=False)
    assert soft.item() == pytest.approx(-(0.7 * math.log(s) + 0.3 * math.log(1 - s)))


def test_soft_targets_with_p_one_equal_the_hard_loss_exactly():
    z = torch.linspace(-5, 5, 11)
    soft = reward_pair_loss(z, torch.ones(11), torch.full((11,), NAN), soft_targets=True, margin_offset=False)
    assert torch.equal(soft, bt(z))


def test_each_pair_uses_its_own_p():
    # The reference bug: (B,1) vs (B,) broadcast to (B,B) and averaged p over the batch.
    z = torch.tensor([0.5, 0.5, 0.5])
    p = torch.tensor([0.5, 0.8, 1.0])
    per_pair = soft_label_logistic_loss(z, p)
    alone = torch.stack([soft_label_logistic_loss(z[i : i + 1], p[i : i + 1])[0] for i in range(3)])
    assert torch.equal(per_pair, alone)
    averaged = soft_label_logistic_loss(z, torch.full((3,), float(p.mean())))
    assert not torch.allclose(per_pair, averaged)
    with pytest.raises(ValueError, match=r"'z': \(3, 1\)"):
        soft_label_logistic_loss(z[:, None], p)


def test_soft_label_gradient_vanishes_at_logit_p():
    p = torch.tensor([0.6, 0.9])
    z = torch.log(p / (1 - p)).requires_grad_()
    soft_label_logistic_loss(z, p).sum().backward()
    assert z.grad.abs().max() < 1e-6
    z2 = torch.tensor([0.0, 0.0], requires_grad=True)
    soft_label_logistic_loss(z2, p).sum().backward()
    assert z2.grad.tolist() == pytest.approx([0.5 - 0.6, 0.5 - 0.9])  # dL/dz = sigmoid(z) - p


def test_targets_outside_unit_interval_and_conflicting_switches_fail():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        soft_label_logistic_loss(torch.zeros(2), torch.tensor([0.5, 1.2]))
    with pytest.raises(ValueError, match="choose one"):
        pair_targets(torch.ones(2), soft_targets=True, label_smoothing=0.1)
    assert pair_targets(torch.tensor([0.6, 0.9]), soft_targets=False, label_smoothing=0.1).tolist() == pytest.approx([0.9, 0.9])


def test_centering_by_hand():
    assert centering_penalty(torch.tensor([1.0, 2.0]), torch.tensor([1.0, -2.0]), 0.01).item() == pytest.approx(0.01 * (4 + 0) / 2)
