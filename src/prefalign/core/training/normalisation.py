"""How a loss is normalised over a whole optimizer step, whatever its split into micro-batches and processes.

A step of the training loop covers ``gradient_accumulation_steps`` micro-batches on each of W
processes. Every objective's loss is a sum of terms of two kinds (docs/methods.md s4, "One step,
one normaliser"):

- **token-level** terms (SFT's cross-entropy, ORPO's NLL): a sum over loss-bearing tokens, divided
  by the number of those tokens in the WHOLE step (all micro-batches, all processes);
- **example-level** terms (every pairwise loss, reward losses, GPO's per-response square loss):
  a sum over pairs (or rows), divided by the number of pairs in the whole step, a short last
  micro-batch included.

So batch 4 x accumulation 1, 2 x 2, 1 x 4 and 2 processes x 2 give one loss and one gradient. A
micro-batch's own mean divided by the number of micro-batches would not: it weighs the tokens of
a micro-batch with short responses more (transformers PR #34191, torchtune PR #1875).

A :class:`StepLoss` says what its batches contain (:meth:`StepLoss.units`, counted from the batch
alone, before any forward pass) and divides its summed terms by the denominators it is given. The
loop counts the step's units, sums them across processes once per step, and passes them in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

StepForward = Callable[[torch.nn.Module, Any, "Units"], "tuple[torch.Tensor, dict[str, float | torch.Tensor]]"]


@dataclass(frozen=True)
class Units:
    """What a loss averages over: ``tokens`` (its loss-bearing tokens; 0 for losses without a
    token-level term) and ``examples`` (pairs of a pair batch, rows of a sequence batch)."""

    tokens: float = 0.0
    examples: float = 0.0

    def __add__(self, other: "Units") -> "Units":
        return Units(self.tokens + other.tokens, self.examples + other.examples)

    def scaled(self, factor: float) -> "Units":
        """Both counts times ``factor`` (the loop divides by the process count: DDP averages gradients).

        Args:
            factor: the multiplier (1 / W with W processes).

        Returns:
            A new Units with ``tokens * factor`` and ``examples * factor``.
        """
        return Units(self.tokens * factor, self.examples * factor)


@dataclass(frozen=True)
class StepLoss:
    """A loss the training loop normalises over the whole step (module doc).

    Attributes:
        forward: ``forward(model, batch, denominators) -> (loss, metrics)``: the batch's token-level
            sums divided by ``denominators.tokens`` plus its example-level sums divided by
            ``denominators.examples``; metrics are the batch's own means.
        count_tokens: ``count_tokens(batch) -> int``, the batch's loss-bearing tokens, read from the
            batch alone (no forward pass); None for losses with example-level terms only.

    Calling it without denominators divides by the batch's own units: the batch's mean loss.
    """

    forward: StepForward
    count_tokens: Callable[[Any], int] | None = None

    def units(self, batch: Any) -> Units:
        """The batch's :class:`Units` (tokens from ``count_tokens``, examples = ``len(batch)``).

        Args:
            batch: a pair or sequence batch (``len(batch)`` = its examples).

        Returns:
            Units(tokens, examples) of this batch; tokens 0 when ``count_tokens`` is None.
        """
        tokens = float(self.count_tokens(batch)) if self.count_tokens is not None else 0.0
        return Units(tokens, float(len(batch)))

    def __call__(self, model: torch.nn.Module, batch: Any, denominators: Units | None = None):
        return self.forward(model, batch, self.units(batch) if denominators is None else denominators)


def loss_units(loss_fn: Callable, batch: Any) -> Units:
    """``loss_fn.units(batch)`` for a :class:`StepLoss`; a plain ``loss_fn(model, batch)`` returns the
    mean over its batch's examples, so its units are the examples alone.

    Args:
        loss_fn: a StepLoss (anything with ``units``) or a plain loss function.
        batch: the batch it will be called on.

    Returns:
        The batch's Units (tokens 0 for a plain loss function).
    """
    units = getattr(loss_fn, "units", None)
    return units(batch) if units is not None else Units(0.0, float(len(batch)))


def step_normalised_loss(loss_fn: Callable, model: torch.nn.Module, batch: Any, denominators: Units):
    """One micro-batch's share of the step loss: its summed terms over the step's ``denominators``.

    Args:
        loss_fn: a :class:`StepLoss`, or a plain ``loss_fn(model, batch) -> (mean over the batch's
            examples, metrics)``, rescaled here to ``mean * len(batch) / denominators.examples``.
        model, batch: the forward pass's inputs.
        denominators: the step's (or evaluation pass's) totals.

    Returns:
        (loss tensor, the batch's metrics).
    """
    if isinstance(loss_fn, StepLoss) or hasattr(loss_fn, "units"):
        return loss_fn(model, batch, denominators)
    loss, metrics = loss_fn(model, batch)
    return loss * (len(batch) / denominators.examples), metrics


def divide(total: torch.Tensor, denominator: float, empty_message: str) -> torch.Tensor:
    """``total / denominator``.

    Raises:
        ValueError: ``empty_message``, when ``denominator`` is 0 (nothing to average over).

    Args:
        total: a summed loss term (a 0-d tensor, nats).
        denominator: the count to average over (tokens or examples of the step).
        empty_message: the error to raise when there is nothing to average over.

    Returns:
        ``total / denominator``, same shape and dtype as ``total``.
    """
    if denominator == 0:
        raise ValueError(empty_message)
    return total / denominator
