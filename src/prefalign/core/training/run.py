"""The one result type of every training entry point (reward and policy objectives alike)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from prefalign.core.models.checkpoint import ModelBundle


@dataclass
class TrainingRun:
    """What one objective's training produces.

    Attributes:
        bundle: the trained model with its tokenizer and metadata (``objective`` = registry name).
        training_curve: one row per optimizer step: ``step``, ``train_loss`` (nats), ``learning_rate``,
            ``grad_norm``, ``tokens_per_second``, ``train_<metric>``, and ``val_<metric>`` on
            validation steps (null elsewhere).
        metrics: JSON-able summary (final validation, throughput, counts).
        generations: on-policy objectives only: every iteration's sampled responses and scores.
        iteration_bundles: on-policy objectives only: each iteration's policy.
    """

    bundle: ModelBundle
    training_curve: pl.DataFrame
    metrics: dict[str, Any]
    generations: pl.DataFrame | None = None
    iteration_bundles: dict[str, ModelBundle] = field(default_factory=dict)


def curve_frame(history: list[dict[str, float]]) -> pl.DataFrame:
    """The loop's per-step history as the curve table.

    Args:
        history: TrainResult.history, one dict per optimizer step.

    Returns:
        A DataFrame (columns as TrainingRun.training_curve); empty with ``step`` and ``train_loss`` if no step ran.
    """
    if not history:
        return pl.DataFrame({"step": [], "train_loss": []}, schema={"step": pl.Int64, "train_loss": pl.Float64})
    return pl.DataFrame(history, infer_schema_length=None)
