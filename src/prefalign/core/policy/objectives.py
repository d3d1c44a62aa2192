"""Policy objectives in the training loop's shape, ``loss_fn(model, batch) -> (loss, metrics)``,
their config dataclasses, and the implicit-reward evaluation of a trained policy.

A pairwise objective is a function ``objective(logps: PairLogprobs, config) -> (loss, metrics)``
on one batch's summed log-probs; :func:`make_pairwise_loss_fn` does the forward pass and the
reference lookup (only for objectives that need one). The registry (core/objectives/registry.py)
names each objective and pairs it with its config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from prefalign.core.objectives.soft_label import pair_targets, soft_label_logistic_loss
from prefalign.core.policy.logprobs import batch_pair_logprobs, response_token_counts, sequence_logprobs
from prefalign.core.policy.losses import (
    dpo_loss,
    implicit_accuracy,
    implicit_reward_margin,
    ipo_loss,
    sft_loss_from_logprobs,
    sft_target_tokens,
)
from prefalign.core.policy.reference import ReferenceLogprobs, score_pair_batches
from prefalign.core.training.normalisation import StepLoss, Units

LossFn = Callable[[torch.nn.Module, object], tuple[torch.Tensor, dict[str, float]]]


def _check_beta(beta: float) -> None:
    if beta <= 0:
        raise ValueError(f"objective.beta={beta} must be > 0")


@dataclass(frozen=True)
class DPOConfig:
    """DPO (hard labels), MMPO (``soft_targets: true``) or cDPO (``label_smoothing: eps``); docs/methods.md s4.2.

    Raises:
        ValueError: from ``validate()`` (called by the registry's ``parse``), naming the bad key.
    """

    beta: float = 0.1
    soft_targets: bool = False
    label_smoothing: float = 0.0

    def validate(self) -> None:
        """Raises ValueError naming the bad key: beta <= 0, eps outside [0, 0.5], or eps with soft targets."""
        _check_beta(self.beta)
        pair_targets(torch.ones(1), self.soft_targets, self.label_smoothing)


@dataclass(frozen=True)
class IPOConfig:
    """IPO, hard or with soft targets; docs/methods.md s4.3.

    Raises:
        ValueError: from ``validate()`` (called by the registry's ``parse``), naming the bad key.
    """

    beta: float = 0.1
    soft_targets: bool = False

    def validate(self) -> None:
        """Check the fields.

        Raises:
            ValueError: beta <= 0.
        """
        _check_beta(self.beta)


@dataclass
class PairLogprobs:
    """One batch's log-probs, everything a pairwise policy objective reads. All tensors (B,).

    chosen / rejected: summed response-token log pi (nats); chosen_tokens / rejected_tokens:
    response token counts |y|; ref_chosen / ref_rejected: log pi_ref (None for reference-free
    objectives); p_chosen: the pairs' soft targets (docs/methods.md s1).

    An objective divides its summed terms by ``denominators`` (core/training/normalisation.py):
    token-level terms by ``tokens`` (chosen response tokens), pair-level terms by ``examples``;
    by default this batch's own :meth:`units`, i.e. the batch's mean.

    Raises:
        ValueError: ``margin()`` without reference log-probs.
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    p_chosen: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None

    def margin(self) -> torch.Tensor:
        """h of docs/methods.md s4 (needs the reference log-probs).

        Returns:
            (B,) implicit reward margins h (nats).

        Raises:
            ValueError: ``ref_chosen`` or ``ref_rejected`` is None (a reference-free run).
        """
        if self.ref_chosen is None or self.ref_rejected is None:
            raise ValueError("this objective needs reference log-probs, but none were given (registry needs_reference)")
        return implicit_reward_margin(self.chosen, self.rejected, self.ref_chosen, self.ref_rejected)

    def margin_magnitude(self) -> torch.Tensor:
        """The size of what h is computed from (needs the reference log-probs).

        Returns:
            (B,) |log pi(y_w)| + |log pi(y_l)| + |log pi_ref(y_w)| + |log pi_ref(y_l)| (nats).
        """
        return self.chosen.abs() + self.rejected.abs() + self.ref_chosen.abs() + self.ref_rejected.abs()

    def units(self) -> Units:
        """This batch's own units: its chosen response tokens and its pairs.

        Returns:
            ``Units(tokens=sum of chosen_tokens, examples=B)``.
        """
        return Units(float(self.chosen_tokens.sum()), float(self.chosen.shape[0]))


def _margin_metrics(logps: PairLogprobs, h: torch.Tensor, beta: float) -> dict[str, float]:
    """implicit_accuracy (ties within float resolution count 1/2) and implicit_margin = mean beta h."""
    with torch.no_grad():
        accuracy = implicit_accuracy(h.detach(), logps.margin_magnitude().detach())
    return {"implicit_accuracy": accuracy.item(), "implicit_margin": (beta * h).mean().item()}


def dpo_objective(logps: PairLogprobs, config: DPOConfig, denominators: Units | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO / MMPO / cDPO on one batch.

    Args:
        logps: the batch's log-probs, with the reference's.
        config: beta, soft_targets, label_smoothing.
        denominators: the step's units (the loop's); None = this batch's (the batch mean).

    Returns:
        (loss per pair in nats, metrics: implicit_accuracy (ties count 1/2, :func:`implicit_accuracy`),
        implicit_margin = mean beta h).

    Raises:
        ValueError: when the reference log-probs are missing.

    Source: docs/methods.md s4.2.
    """
    d = denominators or logps.units()
    h = logps.margin()
    targets = pair_targets(logps.p_chosen.to(h.dtype), config.soft_targets, config.label_smoothing)
    return dpo_loss(h, config.beta, targets, d.examples), _margin_metrics(logps, h, config.beta)


def ipo_objective(logps: PairLogprobs, config: IPOConfig, denominators: Units | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """IPO, hard or soft, on one batch.

    Args:
        logps: the batch's log-probs, with the reference's.
        config: beta, soft_targets.
        denominators: the step's units (the loop's); None = this batch's (the batch mean).

    Returns:
        (loss per pair in nats^2, metrics as :func:`dpo_objective`).

    Raises:
        ValueError: when the reference log-probs are missing.

    Source: docs/methods.md s4.3.
    """
    d = denominators or logps.units()
    h = logps.margin()
    loss = ipo_loss(h, config.beta, logps.p_chosen.to(h.dtype) if config.soft_targets else None, d.examples)
    return loss, _margin_metrics(logps, h, config.beta)


@dataclass(frozen=True)
class HingeConfig:
    """SLiC's hinge loss on the implicit reward margin (TRL ``loss_type="hinge"``); docs/methods.md s4.7.

    Raises:
        ValueError: from ``validate()`` (called by the registry's ``parse``), naming the bad key.
    """

    beta: float = 0.1  # 1 / beta is the margin h must reach (nats)
    soft_targets: bool = False

    def validate(self) -> None:
        """Check the fields.

        Raises:
            ValueError: beta <= 0.
        """
        _check_beta(self.beta)


def expected_over_label(loss: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
    """p loss(z) + (1 - p) loss(-z): a hard-label loss of the logit z, in expectation over the label
    drawn as "y_w wins" with probability p (None: p = 1, the hard loss itself).

    Args:
        loss: elementwise hard-label loss of z.
        z: (B,) logits (e.g. beta h).
        p: (B,) soft targets in [0, 1], or None.

    Returns:
        (B,) losses; p = 1 gives ``loss(z)`` exactly (the other term is multiplied by 0).

    Source: docs/methods.md s4.3 (the same construction as IPO's soft form), s4.7.
    """
    if p is None:
        return loss(z)
    return p * loss(z) + (1.0 - p) * loss(-z)


def _soft(logps: PairLogprobs, config: Any, like: torch.Tensor) -> torch.Tensor | None:
    """The pairs' soft targets when the config's ``soft_targets`` is on, else None (hard labels)."""
    return logps.p_chosen.to(like.dtype) if getattr(config, "soft_targets", False) else None


def hinge_objective(logps: PairLogprobs, config: HingeConfig, denominators: Units | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Hinge (SLiC-HF / RSO) on one batch: max(0, 1 - beta h) per pair; with soft targets its
    expectation over the label, p max(0, 1 - beta h) + (1 - p) max(0, 1 + beta h).

    Args:
        logps: the batch's log-probs, with the reference's.
        config: beta, soft_targets.
        denominators: the step's units (the loop's); None = this batch's (the batch mean).

    Returns:
        (loss per pair, dimensionless (beta h; 0 once beta h >= 1 under a hard label), metrics as
        :func:`dpo_objective`).

    Raises:
        ValueError: when the reference log-probs are missing.

    Source: docs/methods.md s4.7 (Zhao et al. 2305.10425 SLiC-HF; Liu et al. 2309.06657 RSO; TRL ``hinge``).
    """
    d = denominators or logps.units()
    h = logps.margin()
    z = config.beta * h
    loss = expected_over_label(lambda x: torch.relu(1.0 - x), z, _soft(logps, config, z))
    return loss.sum() / d.examples, _margin_metrics(logps, h, config.beta)


@dataclass(frozen=True)
class RobustDPOConfig:
    """Robust DPO (rDPO, TRL ``loss_type="robust"``): DPO de-biased for labels flipped with probability eps;
    docs/methods.md s4.8.

    Raises:
        ValueError: from ``validate()`` (called by the registry's ``parse``), naming the bad key.
    """

    beta: float = 0.1
    label_smoothing: float = 0.0  # eps, the assumed probability that a label is flipped; 0 <= eps < 0.5
    soft_targets: bool = False

    def validate(self) -> None:
        """Check the fields.

        Raises:
            ValueError: beta <= 0, or eps outside [0, 0.5) (the loss divides by 1 - 2 eps).
        """
        _check_beta(self.beta)
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"objective.label_smoothing={self.label_smoothing} must be in [0, 0.5): robust DPO divides "
                             "by 1 - 2 eps (eps = the probability that a label is flipped)")


def robust_dpo_objective(logps: PairLogprobs, config: RobustDPOConfig, denominators: Units | None = None
                         ) -> tuple[torch.Tensor, dict[str, float]]:
    """Robust DPO on one batch: [(1 - eps)(-log sigma(beta h)) + eps log sigma(-beta h)] / (1 - 2 eps)
    per pair; with soft targets its expectation over the label (p on h, 1 - p on -h).

    The unbiased estimate of the clean-label DPO loss when each label is flipped with probability
    eps; it can be negative (pairs the policy already ranks with a large margin). eps = 0 is DPO.

    Args:
        logps: the batch's log-probs, with the reference's.
        config: beta, label_smoothing (eps), soft_targets.
        denominators: the step's units (the loop's); None = this batch's (the batch mean).

    Returns:
        (loss per pair in nats, metrics as :func:`dpo_objective`).

    Raises:
        ValueError: when the reference log-probs are missing.

    Source: docs/methods.md s4.8 (Chowdhury et al. 2024, "Provably Robust DPO", eq. 7; TRL ``robust``).
    """
    d = denominators or logps.units()
    h = logps.margin()
    eps = config.label_smoothing

    def robust(z: torch.Tensor) -> torch.Tensor:
        return ((1.0 - eps) * -F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1.0 - 2.0 * eps)

    z = config.beta * h
    return expected_over_label(robust, z, _soft(logps, config, z)).sum() / d.examples, _margin_metrics(logps, h, config.beta)


@dataclass(frozen=True)
class SimPOConfig:
    """SimPO: reference-free, length-normalised; docs/methods.md s4.4 (arXiv 2405.14734).

    Raises:
        ValueError: from ``validate()`` (called by the registry's ``parse``), naming the bad key.
    """

    beta: float = 2.0
    target_margin: float = 1.0  # the paper's gamma: target reward margin (nats of beta-scaled average log-prob)
    soft_targets: bool = False

    def validate(self) -> None:
        """Check the fields.

        Raises:
            ValueError: beta <= 0 or target_margin < 0.
        """
        _check_beta(self.beta)
        if self.target_margin < 0:
            raise ValueError(f"objective.target_margin={self.target_margin} must be >= 0 (the paper's gamma)")


def simpo_objective(logps: PairLogprobs, config: SimPOConfig, denominators: Units | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """SimPO on one batch: z = beta (log pi(y_w)/|y_w| - log pi(y_l)/|y_l|) - gamma, s2's loss on z
    (gamma = ``config.target_margin``, the paper's target reward margin).

    No reference model. An empty response (|y| = 0) has log-prob 0, so its average is taken as 0.
    The length normalisation is within each pair, so the loss is a pair-level term.

    Args:
        logps: the batch's summed log-probs and token counts.
        config: beta, target_margin (the paper's gamma), soft_targets.
        denominators: the step's units (the loop's); None = this batch's (the batch mean).

    Returns:
        (loss per pair in nats, metrics: share of pairs with z + gamma > 0, mean z).

    Source: docs/methods.md s4.4 (arXiv 2405.14734 eq. 6); soft targets s2.
    """
    d = denominators or logps.units()
    reward_w = config.beta * logps.chosen / logps.chosen_tokens.clamp(min=1)
    reward_l = config.beta * logps.rejected / logps.rejected_tokens.clamp(min=1)
    z = reward_w - reward_l - config.target_margin
    loss = soft_label_logistic_loss(z, pair_targets(logps.p_chosen.to(z.dtype), config.soft_targets)).sum() / d.examples
    return loss, {"reward_accuracy": (reward_w > reward_l).float().mean().item(), "mean_logit": z.mean().item()}


@dataclass(frozen=True)
class ORPOConfig:
    """ORPO: SFT NLL plus lambda times an odds-ratio term; docs/methods.md s4.5 (arXiv 2403.07691).

    Raises:
        ValueError: from ``validate()`` (called by the registry's ``parse``), naming the bad key.
    """

    odds_ratio_weight: float = 0.1  # lambda of the paper
    soft_targets: bool = False

    def validate(self) -> None:
        """Check the fields.

        Raises:
            ValueError: odds_ratio_weight < 0.
        """
        if self.odds_ratio_weight < 0:
            raise ValueError(f"objective.odds_ratio_weight={self.odds_ratio_weight} must be >= 0")


def log_odds(mean_logprob: torch.Tensor) -> torch.Tensor:
    """log(P / (1 - P)) with P = exp(mean_logprob) per sequence, stable near P = 1 (log(-expm1)).

    Args:
        mean_logprob: (B,) per-token average log-probs (nats), <= 0; clamped below -1e-6 so that
            P = 1 (an empty or certain response) gives a large finite value instead of infinity.

    Returns:
        (B,) log-odds.

    Source: docs/methods.md s4.5 (arXiv 2403.07691 eq. 4).
    """
    ell = mean_logprob.clamp(max=-1e-6)
    return ell - torch.log(-torch.expm1(ell))


def orpo_objective(logps: PairLogprobs, config: ORPOConfig, denominators: Units | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """ORPO on one batch: NLL per chosen response token + lambda * s2's loss on z = log odds(y_w) - log odds(y_l).

    Two terms, each over its own count: the NLL is token-level (summed over chosen response tokens,
    divided by ``denominators.tokens``), the odds-ratio term pair-level (divided by ``denominators.examples``).

    Args:
        logps: the batch's summed log-probs and token counts.
        config: odds_ratio_weight (lambda), soft_targets.
        denominators: the step's units (the loop's); None = this batch's (the batch's token mean and pair mean).

    Returns:
        (loss in nats, metrics: the SFT and odds-ratio terms, and the share of pairs with z > 0).

    Source: docs/methods.md s4.5 (arXiv 2403.07691 eq. 6-7); soft targets s2.
    """
    own = logps.units()
    d = denominators or own
    nll_sum = -logps.chosen.sum()
    z = log_odds(logps.chosen / logps.chosen_tokens.clamp(min=1)) - log_odds(logps.rejected / logps.rejected_tokens.clamp(min=1))
    odds_ratio = soft_label_logistic_loss(z, pair_targets(logps.p_chosen.to(z.dtype), config.soft_targets))
    # no chosen token at all: the NLL sum is 0 too, so any divisor gives 0
    loss = nll_sum / (d.tokens or 1.0) + config.odds_ratio_weight * odds_ratio.sum() / d.examples
    metrics = {"sft_nll": (nll_sum / (own.tokens or 1.0)).item(), "odds_ratio_loss": odds_ratio.mean().item(),  # this batch's means
               "odds_ratio_accuracy": (z > 0).float().mean().item()}
    return loss, metrics


def _sft_forward(model: torch.nn.Module, batch, denominators: Units) -> tuple[torch.Tensor, dict[str, float]]:
    """SFT on prompt + chosen: response-only token cross-entropy.

    Args:
        model: a causal LM; batch: a RowBatch of prompt + chosen sequences.
        denominators: ``tokens`` = the response tokens to divide the summed NLL by (the step's).

    Returns:
        (NLL per response token in nats, {"perplexity": exp of this batch's own token mean}).

    Raises:
        ValueError: when there is no response token to divide by.

    Source: docs/methods.md s4.1.
    """
    seqs = batch.sequences
    logps = sequence_logprobs(model, seqs.input_ids, seqs.attention_mask, seqs.response_mask)  # no [tokens x vocab] logits
    loss = sft_loss_from_logprobs(logps, denominators.tokens)
    own = sft_target_tokens(seqs.response_mask)
    perplexity = float(torch.exp(loss.detach() * denominators.tokens / own).item()) if own else float("nan")
    return loss, {"perplexity": perplexity}


# The loop's SFT loss: token-level, over the step's response tokens (core/training/normalisation.py).
sft_loss_fn = StepLoss(_sft_forward, count_tokens=lambda batch: sft_target_tokens(batch.sequences.response_mask))


def make_pairwise_loss_fn(
    objective: Callable[[PairLogprobs, Any], tuple[torch.Tensor, dict[str, float]]],
    config: Any,
    reference: ReferenceLogprobs | None,
) -> LossFn:
    """The loop's loss for a pairwise policy objective.

    Args:
        objective: e.g. :func:`dpo_objective`; reads a :class:`PairLogprobs`.
        config: the objective's parsed config dataclass.
        reference: the precomputed reference table, or None for reference-free objectives.

    Returns:
        A :class:`StepLoss`: ``loss_fn(model, PairBatch, denominators) -> (loss, metrics)``, chosen
        and rejected in ONE forward pass; token counts |y| are the response tokens whose log-probs
        are summed; its token units are the chosen responses' (ORPO's NLL term).

    Source: docs/methods.md s4.
    """

    def forward(model: torch.nn.Module, batch, denominators: Units) -> tuple[torch.Tensor, dict[str, float]]:
        chosen, rejected = batch_pair_logprobs(model, batch.sequences)
        tokens = response_token_counts(batch.sequences).to(chosen.dtype)  # |y| per sequence, for SimPO/ORPO
        n = chosen.shape[0]
        logps = PairLogprobs(chosen, rejected, tokens[:n], tokens[n:], batch.p_chosen.to(chosen.dtype))
        if reference is not None:
            ref_chosen, ref_rejected = reference.lookup(batch.pair_index)
            logps.ref_chosen, logps.ref_rejected = ref_chosen.to(chosen.dtype), ref_rejected.to(chosen.dtype)
        return objective(logps, config, denominators)

    def chosen_tokens(batch) -> int:
        return int(response_token_counts(batch.sequences)[: len(batch)].sum())

    return StepLoss(forward, count_tokens=chosen_tokens)


def reference_metrics(reference: ReferenceLogprobs, pair_index: torch.Tensor) -> dict[str, float]:
    """The reference scored as its own policy, from the table alone (no forward pass).

    Its implicit reward beta*h is 0 for every pair: every pair is a tie, so its implicit accuracy
    is 0.5 (chance; :func:`implicit_accuracy`); its log-likelihood ranking accuracy is the comparable number.

    Args:
        reference: the reference table.
        pair_index: (N,) rows of the pairs to score.

    Returns:
        {pairs, implicit_accuracy (0.5), reference_logprob_accuracy, mean_implicit_reward_margin (0)}.

    Source: docs/methods.md s5.
    """
    if pair_index.numel() == 0:
        return {"pairs": 0}
    chosen, rejected = reference.lookup(pair_index)
    return {
        "pairs": int(pair_index.numel()),
        "implicit_accuracy": 0.5,
        "reference_logprob_accuracy": float((chosen > rejected).float().mean()),
        "mean_implicit_reward_margin": 0.0,
    }


def implicit_reward_metrics(
    model: torch.nn.Module, batches: Iterable, reference: ReferenceLogprobs | None, beta: float | None,
    mixed_precision: str = "no",
) -> dict[str, float]:
    """How the policy ranks pairs, next to its reference (docs/methods.md s5).

    - implicit_accuracy: share of pairs with h > 0, a tie (|h| within float resolution,
      :func:`implicit_accuracy`) counting 1/2, so the reference itself scores 0.5, chance; only
      with a reference table.
    - policy_logprob_accuracy / reference_logprob_accuracy: share with log pi(y_w|x) > log pi(y_l|x),
      the same quantity for both models, so the two are directly comparable.
    - mean_implicit_reward_margin: mean of beta*h (beta None: of h).

    Args:
        model: the policy.
        batches: PairBatches of the pairs to score.
        reference: the reference table, or None (reference-free: only policy_logprob_accuracy).
        beta: the objective's beta, or None when it has none (the margin is then of h itself).
        mixed_precision: the training's setting (the pass runs under its autocast, as the reference's did).

    Returns:
        The metrics above, and ``pairs``.
    """
    index, chosen, rejected = score_pair_batches(model, batches, mixed_precision)
    if index.numel() == 0:
        return {"pairs": 0}
    metrics: dict[str, float] = {"pairs": int(index.numel()), "policy_logprob_accuracy": float((chosen > rejected).float().mean())}
    if reference is not None:
        ref_chosen, ref_rejected = reference.lookup(index)
        h = implicit_reward_margin(chosen, rejected, ref_chosen, ref_rejected)
        metrics.update({
            "implicit_accuracy": float(implicit_accuracy(h, chosen.abs() + rejected.abs() + ref_chosen.abs() + ref_rejected.abs())),
            "reference_logprob_accuracy": float((ref_chosen > ref_rejected).float().mean()),
            "mean_implicit_reward_margin": float((beta or 1.0) * h.mean()),
        })
    return metrics
