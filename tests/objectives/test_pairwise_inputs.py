"""What the loop hands a pairwise objective: each side's own token count, and ORPO's NLL per token.

The objectives' hand cases (tests/policy/test_reference_free.py) build PairLogprobs directly, so a
swap of the chosen and rejected token counts where the loop builds them, or an NLL averaged per
sequence, went unnoticed (issue 20, item 7). These tests go through the loop's loss function on a
tiny model, and compute the expected values from the batch independently.
"""

from __future__ import annotations

import pytest
import torch

from prefalign.core.policy.objectives import (ORPOConfig, PairLogprobs, SimPOConfig, make_pairwise_loss_fn,
                                              orpo_objective, simpo_objective)
from prefalign.core.policy.train_policy import PolicyDataConfig, _pair_batches
from tests.policy.conftest import make_pairs, tiny_pairs, tiny_policy  # noqa: F401  (pytest fixtures)

DATA = PolicyDataConfig(max_length=64, max_prompt_length=32, batch_size=4, eval_batch_size=4)


def _independent_logprobs(model: torch.nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and response token counts per row [2B], from the padded tensors:
    token t is scored by the logits at t - 1, and counts when response_mask[t] is 1."""
    seqs = batch.sequences
    with torch.no_grad():
        logits = model(input_ids=seqs.input_ids, attention_mask=seqs.attention_mask).logits.double()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, seqs.input_ids[:, 1:, None])[..., 0]
    mask = seqs.response_mask[:, 1:].double()
    return (logp * mask).sum(-1), mask.sum(-1)


@pytest.fixture
def batch_and_model(tiny_policy):  # noqa: F811  (the fixture imported above)
    pairs = make_pairs(8)
    train = pairs.filter(pairs["split"] == "train")
    _, train_eval, _, _, _, _ = _pair_batches(tiny_policy, train, train.clear(), DATA, seed=None)
    batch = train_eval[0]
    model = tiny_policy.model.double().eval()
    return batch, model


def _simpo_by_hand(c, r, nc, nr, beta=2.0, gamma=0.5):
    # docs/methods.md s4.4, hard labels: softplus(-z), z = beta (c/|c| - r/|r|) - gamma
    z = beta * (c / nc - r / nr) - gamma
    return torch.nn.functional.softplus(-z).mean()


def _orpo_by_hand(c, r, nc, nr, lam=0.5):
    # docs/methods.md s4.5: NLL per chosen token + lambda softplus(-z), z = log odds(c/|c|) - log odds(r/|r|)
    def odds(ell):
        return ell - torch.log1p(-torch.exp(ell))
    z = odds(c / nc) - odds(r / nr)
    return -c.sum() / nc.sum() + lam * torch.nn.functional.softplus(-z).mean()


@pytest.mark.parametrize("objective, config, by_hand", [
    (simpo_objective, SimPOConfig(beta=2.0, target_margin=0.5), _simpo_by_hand),
    (orpo_objective, ORPOConfig(odds_ratio_weight=0.5), _orpo_by_hand)], ids=["simpo", "orpo"])
def test_each_side_is_normalised_by_its_own_token_count(batch_and_model, objective, config, by_hand):
    batch, model = batch_and_model
    summed, counts = _independent_logprobs(model, batch)
    n = len(batch)
    chosen_tokens, rejected_tokens = counts[:n], counts[n:]
    # the chosen answers ("Sure! ... glad to help.") are longer than the rejected ("No. ..."): a swap shows
    assert bool((chosen_tokens > rejected_tokens).all())
    expected = by_hand(summed[:n], summed[n:], chosen_tokens, rejected_tokens)
    # the objective on the right inputs (catches a swap inside the objective) ...
    direct, _ = objective(PairLogprobs(summed[:n], summed[n:], chosen_tokens, rejected_tokens,
                                       torch.ones(n, dtype=torch.float64)), config)
    assert direct.item() == pytest.approx(expected.item(), rel=1e-12)
    # ... and the loop's loss function, which builds those inputs from the batch (catches a swap there)
    with torch.no_grad():
        loss, _ = make_pairwise_loss_fn(objective, config, None)(model, batch)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)  # the pass runs in float32


def test_orpo_nll_is_per_chosen_token_not_per_sequence():
    # chosen: -2 nats over 1 token and -12 nats over 4 tokens; per token = 14 / 5 = 2.8 nats
    # (per sequence it would be (2 + 3) / 2 = 2.5, or the mean sum (2 + 12) / 2 = 7)
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    logps = PairLogprobs(t(-2.0, -12.0), t(-5.0, -20.0), t(1, 4), t(2, 4), t(1.0, 1.0))
    loss, metrics = orpo_objective(logps, ORPOConfig(odds_ratio_weight=0.0))
    assert metrics["sft_nll"] == pytest.approx(2.8) and loss.item() == pytest.approx(2.8)
