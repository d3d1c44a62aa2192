"""Reference-free policy objectives (SimPO, ORPO) against hand-computed cases (docs/methods.md s4.4-4.5)."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.core.objectives import registry
from prefalign.core.policy.objectives import ORPOConfig, PairLogprobs, SimPOConfig, log_odds, orpo_objective, simpo_objective


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def logps(chosen, rejected, n_chosen, n_rejected, p=1.0) -> PairLogprobs:
    return PairLogprobs(t(chosen), t(rejected), t(n_chosen), t(n_rejected), t(p))


def test_simpo_hand_case():
    # averages -4/2 = -2 and -9/3 = -3; z = 2 * (-2 + 3) - 1 = 1; -log sigmoid(1) = log(1 + e^-1)
    loss, metrics = simpo_objective(logps(-4.0, -9.0, 2, 3), SimPOConfig(beta=2.0, target_margin=1.0))
    assert loss.item() == pytest.approx(0.31326168751822286)
    assert metrics["mean_logit"] == pytest.approx(1.0)
    # the SUMMED log-probs prefer the shorter rejected (-4 vs -9 is the other way round): the length
    # normalisation matters; with 1 token each, z = 2 * (-4 + 9) - 1 = 9
    loss_1, _ = simpo_objective(logps(-4.0, -9.0, 1, 1), SimPOConfig(beta=2.0, target_margin=1.0))
    assert loss_1.item() == pytest.approx(math.log1p(math.exp(-9.0)))


def test_simpo_soft_targets_hand_case_and_p_one_is_hard():
    soft = SimPOConfig(beta=2.0, target_margin=1.0, soft_targets=True)
    # z = 1, p = 0.8: -log s(1) + (1 - p) z
    assert simpo_objective(logps(-4.0, -9.0, 2, 3, p=0.8), soft)[0].item() == pytest.approx(0.5132616875182229)
    hard = simpo_objective(logps(-4.0, -9.0, 2, 3, p=0.8), SimPOConfig(beta=2.0, target_margin=1.0))[0]
    assert simpo_objective(logps(-4.0, -9.0, 2, 3, p=1.0), soft)[0].item() == hard.item()


def test_simpo_gradient_zero_at_logit_p():
    p = 0.75
    beta, gamma = 2.0, 1.0
    # choose the chosen log-prob so that z = logit(p): beta * (c/2 + 3) - gamma = logit(p)
    c = ((math.log(p / (1 - p)) + gamma) / beta - 3.0) * 2
    chosen = t(c).requires_grad_()
    lp = PairLogprobs(chosen, t(-9.0), t(2), t(3), t(p))
    simpo_objective(lp, SimPOConfig(beta=beta, target_margin=gamma, soft_targets=True))[0].backward()
    assert abs(chosen.grad.item()) < 1e-12


def test_simpo_is_registered_reference_free_with_a_clear_config_error():
    spec = registry.get("policy_simpo")
    assert spec.needs_reference is False and spec.trainer == "pairwise"
    with pytest.raises(ValueError, match=r"target_margin=-1"):
        spec.parse({"target_margin": -1.0})
    # the former name (gamma, which also named the feedback margin scale) is an unknown key now
    with pytest.raises(ValueError, match=r"unknown key policy.simpo.objective.gamma; allowed keys of policy.simpo.objective: beta, target_margin"):
        spec.parse({"gamma": 1.0})


def test_reference_free_objectives_get_no_reference_pass():
    from prefalign.pipelines.policy.pipeline import create_pipeline

    outputs = create_pipeline().all_outputs()
    pairwise = registry.objectives(family="policy", trainer="pairwise")
    assert any(not spec.needs_reference for spec in pairwise)
    for spec in pairwise:
        assert (f"{spec.namespace}.reference_logprobs" in outputs) == spec.needs_reference, spec.namespace
        assert f"{spec.namespace}.model" in outputs


def test_orpo_hand_case():
    # chosen -1.0 over 2 tokens (ell -0.5), rejected -3.0 over 2 tokens (ell -1.5)
    # log odds = ell - log(1 - e^ell): 0.43275212956718856 and -1.247517541074546, z = 1.6802696706417346
    assert log_odds(t(-0.5, -1.5)).tolist() == pytest.approx([0.43275212956718856, -1.247517541074546])
    loss, metrics = orpo_objective(logps(-1.0, -3.0, 2, 2), ORPOConfig(odds_ratio_weight=0.1))
    assert metrics["sft_nll"] == pytest.approx(0.5)  # 1.0 nats over 2 chosen tokens
    assert metrics["odds_ratio_loss"] == pytest.approx(0.1708592171464785)  # log(1 + e^-z)
    assert loss.item() == pytest.approx(0.5170859217146478)
    # lambda = 0 is plain SFT on the chosen response
    assert orpo_objective(logps(-1.0, -3.0, 2, 2), ORPOConfig(odds_ratio_weight=0.0))[0].item() == pytest.approx(0.5)


def test_orpo_soft_targets_hand_case_and_p_one_is_hard():
    soft = ORPOConfig(odds_ratio_weight=0.1, soft_targets=True)
    # p = 0.7: odds-ratio term log(1 + e^-z) + 0.3 z
    assert orpo_objective(logps(-1.0, -3.0, 2, 2, p=0.7), soft)[0].item() == pytest.approx(0.5674940118338999)
    hard = orpo_objective(logps(-1.0, -3.0, 2, 2, p=0.7), ORPOConfig(odds_ratio_weight=0.1))[0]
    assert orpo_objective(logps(-1.0, -3.0, 2, 2, p=1.0), soft)[0].item() == hard.item()


def test_orpo_odds_are_finite_for_a_certain_response():
    assert torch.isfinite(log_odds(t(0.0))).all()
    loss, _ = orpo_objective(logps(0.0, -3.0, 0, 2), ORPOConfig())
    assert torch.isfinite(loss)
