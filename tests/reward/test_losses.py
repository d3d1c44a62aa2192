import math

import pytest
import torch

from prefalign.core.reward.losses import bt_loss, centering_penalty, margin_offset_loss, mmpo_loss, pair_loss


def test_bt_by_hand():
    z = torch.tensor([0.0, 2.0, -1.0])
    expected = [math.log(2), math.log(1 + math.exp(-2)), math.log(1 + math.exp(1))]
    assert bt_loss(z).tolist() == pytest.approx(expected)


def test_margin_offset_by_hand_and_null_margin_error():
    z = torch.tensor([3.0, 1.0])
    m = torch.tensor([1.0, 2.0])
    assert margin_offset_loss(z, m).tolist() == pytest.approx([math.log(1 + math.exp(-2)), math.log(1 + math.exp(1))])
    with pytest.raises(ValueError, match="null"):
        margin_offset_loss(z, torch.tensor([1.0, float("nan")]))


def test_mmpo_by_hand():
    z, p = torch.tensor([1.0]), torch.tensor([0.7])
    s = 1 / (1 + math.exp(-1))
    assert mmpo_loss(z, p).item() == pytest.approx(-(0.7 * math.log(s) + 0.3 * math.log(1 - s)))


def test_mmpo_with_p_one_equals_bt_exactly():
    z = torch.linspace(-5, 5, 11)
    assert torch.equal(mmpo_loss(z, torch.ones(11)), bt_loss(z))


def test_each_pair_uses_its_own_p():
    # The reference bug: (B,1) vs (B,) broadcast to (B,B) and averaged p over the batch.
    z = torch.tensor([0.5, 0.5, 0.5])
    p = torch.tensor([0.5, 0.8, 1.0])
    per_pair = mmpo_loss(z, p)
    alone = torch.stack([mmpo_loss(z[i : i + 1], p[i : i + 1])[0] for i in range(3)])
    assert torch.equal(per_pair, alone)
    averaged = mmpo_loss(z, torch.full((3,), float(p.mean())))
    assert not torch.allclose(per_pair, averaged)
    with pytest.raises(ValueError, match=r"z \(3, 1\)"):
        mmpo_loss(z[:, None], p)


def test_mmpo_gradient_vanishes_at_logit_p():
    p = torch.tensor([0.6, 0.9])
    z = torch.log(p / (1 - p)).requires_grad_()
    mmpo_loss(z, p).sum().backward()
    assert z.grad.abs().max() < 1e-6
    z2 = torch.tensor([0.0, 0.0], requires_grad=True)
    mmpo_loss(z2, p).sum().backward()
    assert z2.grad.tolist() == pytest.approx([0.5 - 0.6, 0.5 - 0.9])  # dL/dz = sigmoid(z) - p


def test_centering_by_hand():
    assert centering_penalty(torch.tensor([1.0, 2.0]), torch.tensor([1.0, -2.0]), 0.01).item() == pytest.approx(0.01 * (4 + 0) / 2)


def test_unknown_objective():
    with pytest.raises(ValueError, match="objective='dpo'"):
        pair_loss("dpo", torch.zeros(1), torch.ones(1), torch.zeros(1))
