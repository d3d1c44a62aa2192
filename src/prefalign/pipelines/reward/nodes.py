"""Thin nodes of the reward pipeline; the method lives in ``prefalign.core.reward``."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl
from transformers import PreTrainedTokenizerBase

from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.reward.launch import train_in_subprocesses
from prefalign.core.training.progress import rounded
from prefalign.core.training.resume import discard_checkpoints, resumable_run_dir
from prefalign.core.reward.training import (
    RewardParams,
    deep_merge,
    fit_tokenizer,
    select_pairs,
    train_reward_model,
)

log = logging.getLogger(__name__)


def _params(defaults: dict[str, Any], objective: dict[str, Any]) -> RewardParams:
    return RewardParams.from_dict(deep_merge(defaults, objective))


def select_training_pairs(
    validated_pairs: pl.DataFrame, defaults: dict[str, Any], objective: dict[str, Any]
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Train and val pairs for this objective (ties dropped for BT, kept for MMPO), with counts."""
    params = _params(defaults, objective)
    train, train_counts = select_pairs(validated_pairs, "train", params, params.max_train_pairs)
    val, val_counts = select_pairs(validated_pairs, "val", params, params.max_val_pairs)
    if train.height == 0:
        raise ValueError(
            f"no train pairs left for objective {params.objective!r} ({train_counts}); "
            "check validated_pairs has split == 'train' rows"
        )
    return train, val, {**train_counts, **val_counts}


def train_tokenizer(train_pairs: pl.DataFrame, defaults: dict[str, Any], objective: dict[str, Any]) -> PreTrainedTokenizerBase:
    return fit_tokenizer(train_pairs, _params(defaults, objective))


def train_reward(
    train_pairs: pl.DataFrame,
    val_pairs: pl.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    selection: dict[str, int],
    defaults: dict[str, Any],
    objective: dict[str, Any],
) -> tuple[ModelBundle, list[dict[str, float]], dict[str, Any]]:
    """Train in-process, or under ``accelerate launch`` when ``num_processes > 1``.

    Resumable state goes to ``checkpoint_dir/<fingerprint of params and pairs>``: a killed run
    started again continues from its last checkpoint; a finished run drops it.
    """
    params = _params(defaults, objective)
    with tempfile.TemporaryDirectory(prefix="prefalign_reward_") as tmp:
        base = Path(params.checkpoint_dir) if params.checkpoint_dir else Path(tmp)
        output_dir = resumable_run_dir(base, f"{params.objective}_{params.head_config().head}", asdict(params), [train_pairs, val_pairs])
        if params.num_processes > 1:
            out = train_in_subprocesses(train_pairs, val_pairs, tokenizer, params, output_dir, Path(tmp) / "launch")
        else:
            out = train_reward_model(train_pairs, val_pairs, tokenizer, params, output_dir)
        discard_checkpoints(output_dir)  # the model is in the catalog now; a re-run trains again
    metrics = {**out.metrics, "selection": selection}
    head = params.head_config().head
    log.info(
        "reward %s (head %s, loss %s): val_accuracy=%s train_accuracy=%s steps=%s",
        head if head != "scalar" else params.objective, head, params.objective,
        rounded(metrics.get("val_accuracy")), rounded(metrics.get("train_accuracy")), metrics["steps"],
    )
    return out.bundle, out.curve, metrics
