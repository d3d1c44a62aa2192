"""TRL's pairwise losses users ask for, as registered objectives, against hand-computed values
(docs/methods.md s4.7-s4.8)."""

from __future__ import annotations

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
