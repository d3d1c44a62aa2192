"""TRL's pairwise losses users ask for, as registered objectives, against hand-computed values
(docs/methods.md s4.7-s4.8)."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.core.objectives.registry import get
from prefalign.core.policy.objectives import PairLogprobs
from prefalign.core.training.normalisation import Units


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def pairs() -> PairLogprobs:
    """Three pairs with h = 1.5, -1 and 4 nats:
    (-1 - -2) - (-3 - -2.5) = 1.5; (-2 - -2) - (-1 - -2) = -1; (-1 - -2) - (-5 - -2) = 4."""
    chosen = t(-1.0, -2.0, -1.0).requires_grad_()
    return PairLogprobs(chosen=chosen, rejected=t(-3.0, -1.0, -5.0), chosen_tokens=t(2, 2, 2), rejected_tokens=t(2, 2, 2),
                        p_chosen=t(1.0, 1.0, 1.0), ref_chosen=t(-2.0, -2.0, -2.0), ref_rejected=t(-2.5, -2.0, -2.0))


def test_hinge_hand_case():
    spec = get("policy_hinge")
    config = spec.parse({"beta": 0.5})
    logps = pairs()
    # max(0, 1 - 0.5 h): 1 - 0.75 = 0.25; 1 + 0.5 = 1.5; 1 - 2 = -1 -> 0.  Mean 1.75 / 3.
    loss, metrics = spec.loss(logps, config)
    assert loss.item() == pytest.approx(1.75 / 3, rel=1e-12)
    # the step's units: the summed 1.75 over 7 pairs of the step
    assert spec.loss(logps, config, Units(6.0, 7.0))[0].item() == pytest.approx(1.75 / 7, rel=1e-12)
    # d/dchosen of max(0, 1 - beta h) / 3 = -beta / 3 while the margin is not met, 0 once it is
    loss.backward()
    assert logps.chosen.grad.tolist() == pytest.approx([-0.5 / 3, -0.5 / 3, 0.0])
    assert metrics["implicit_accuracy"] == pytest.approx(2 / 3)
    assert metrics["implicit_margin"] == pytest.approx(0.5 * (1.5 - 1 + 4) / 3)


def test_hinge_registry_entry():
    spec = get("policy_hinge")
    assert spec.needs_reference and spec.trainer == "pairwise" and spec.drops_ties(spec.parse({"beta": 0.1}))
    with pytest.raises(ValueError, match="beta"):
        spec.parse({"beta": 0.0})


def test_hinge_soft_targets_hand_case():
    spec = get("policy_hinge")
    logps = pairs()
    logps.p_chosen = t(0.75, 0.5, 1.0)
    # p max(0, 1 - z) + (1 - p) max(0, 1 + z), z = 0.5 h = 0.75, -0.5, 2:
    # 0.75 * 0.25 + 0.25 * 1.75 = 0.625; 0.5 * 1.5 + 0.5 * 0.5 = 1.0; 1 * 0 + 0 * 3 = 0
    loss, _ = spec.loss(logps, spec.parse({"beta": 0.5, "soft_targets": True}))
    assert loss.item() == pytest.approx((0.625 + 1.0 + 0.0) / 3, rel=1e-12)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_robust_dpo_hand_case():
    spec = get("policy_robust_dpo")
    config = spec.parse({"beta": 0.5, "label_smoothing": 0.1})
    # z = 0.5 h = 0.75, -0.5, 2; -log sigma(z) = softplus(-z), log sigma(-z) = -softplus(z);
    # L(z) = (0.9 softplus(-z) - 0.1 softplus(z)) / 0.8
    by_hand = [(0.9 * softplus(-z) - 0.1 * softplus(z)) / 0.8 for z in (0.75, -0.5, 2.0)]
    assert by_hand[2] < 0  # the unbiased estimate goes negative on a well-ranked pair
    loss, _ = spec.loss(pairs(), config)
    assert loss.item() == pytest.approx(sum(by_hand) / 3, rel=1e-12)
    # soft targets: p L(z) + (1 - p) L(-z)
    logps = pairs()
    logps.p_chosen = t(0.75, 0.5, 1.0)
    soft = [p * (0.9 * softplus(-z) - 0.1 * softplus(z)) / 0.8 + (1 - p) * (0.9 * softplus(z) - 0.1 * softplus(-z)) / 0.8
            for p, z in ((0.75, 0.75), (0.5, -0.5), (1.0, 2.0))]
    assert spec.loss(logps, spec.parse({"beta": 0.5, "label_smoothing": 0.1, "soft_targets": True}))[0].item() == \
        pytest.approx(sum(soft) / 3, rel=1e-12)


def test_robust_dpo_with_no_flips_is_dpo_and_eps_is_checked():
    robust, dpo = get("policy_robust_dpo"), get("policy_dpo")
    assert robust.loss(pairs(), robust.parse({"beta": 0.5}))[0].item() == \
        pytest.approx(dpo.loss(pairs(), dpo.parse({"beta": 0.5}))[0].item(), rel=1e-12)
    with pytest.raises(ValueError, match=r"label_smoothing=0.5 must be in \[0, 0.5\)"):
        robust.parse({"label_smoothing": 0.5})
