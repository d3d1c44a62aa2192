"""Thin nodes of the reward pipeline, one set per registered reward objective; the method lives in core."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import polars as pl
from transformers import PreTrainedTokenizerBase

from prefalign.core.config_utils import lift_sub_blocks
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.pipelines import named_node_function
from prefalign.core.objectives.registry import ObjectiveSpec
from prefalign.core.objectives.train import launch
from prefalign.core.reward.training import RewardParams, fit_tokenizer, select_pairs
from prefalign.core.training.progress import rounded
from prefalign.core.training.resume import resumable_run_dir

log = logging.getLogger(__name__)


def reward_nodes(spec: ObjectiveSpec) -> dict[str, Callable]:
    """The three node functions of the reward objective ``spec`` (select pairs, fit tokenizer, train)."""

    def params_of(defaults: dict[str, Any], objective: dict[str, Any]) -> RewardParams:
        # RewardParams is flat: the `data` and `objective` sub-blocks' keys are read at its top level
        return spec.parse(lift_sub_blocks(objective, where=spec.params_key),
                          defaults=lift_sub_blocks(defaults, where="reward.defaults"))

    def select_training_pairs(
        validated_pairs: pl.DataFrame, defaults: dict[str, Any], objective: dict[str, Any]
    ) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
        """Train and val pairs (ties dropped for hard labels, kept for soft targets), with counts."""
        params = params_of(defaults, objective)
        drop = spec.drops_ties(params)
        train, train_counts = select_pairs(validated_pairs, "train", params, params.max_train_pairs, drop)
        val, val_counts = select_pairs(validated_pairs, "val", params, params.max_val_pairs, drop)
        if train.height == 0:
            raise ValueError(
                f"no train pairs left for {spec.namespace} ({train_counts}); "
                "check validated_pairs has split == 'train' rows"
            )
        return train, val, {**train_counts, **val_counts}

    def train_tokenizer(train_pairs: pl.DataFrame, defaults: dict[str, Any], objective: dict[str, Any]) -> PreTrainedTokenizerBase:
        return fit_tokenizer(train_pairs, params_of(defaults, objective))

    def train_reward(
        train_pairs: pl.DataFrame,
        val_pairs: pl.DataFrame,
        tokenizer: PreTrainedTokenizerBase,
        selection: dict[str, int],
        defaults: dict[str, Any],
        objective: dict[str, Any],
    ) -> tuple[ModelBundle, pl.DataFrame, dict[str, Any]]:
        """Train in-process, or under ``accelerate launch`` when ``num_processes > 1``.

        Resumable state goes to ``checkpoint_dir/<fingerprint of params and pairs>``: a killed run
        started again continues from its last checkpoint; a finished run drops it.
        """
        params = params_of(defaults, objective)
        with tempfile.TemporaryDirectory(prefix="prefalign_reward_") as tmp:
            base = Path(params.checkpoint_dir) if params.checkpoint_dir else Path(tmp)
            output_dir = resumable_run_dir(base, spec.name, asdict(params), [train_pairs, val_pairs])
            run = launch(spec.namespace, {"params": asdict(params), "output_dir": str(output_dir)},
                         {"train": train_pairs, "val": val_pairs}, tokenizers={"tokenizer": tokenizer},
                         num_processes=params.num_processes, accelerate_config=params.accelerate_config,
                         work_dir=Path(tmp) / "launch")
        metrics = {**run.metrics, "selection": selection}
        loss = "mmpo" if params.soft_targets else "margin" if params.margin_offset else "bt"
        log.info("reward %s (head %s, loss %s): val_accuracy=%s train_accuracy=%s steps=%s", spec.name, spec.head_type,
                 loss, rounded(metrics.get("val_accuracy")), rounded(metrics.get("train_accuracy")), metrics["steps"])
        return run.bundle, run.training_curve, metrics

    return {
        "select_training_pairs": named_node_function(select_training_pairs, f"{spec.namespace}_select_training_pairs"),
        "train_tokenizer": named_node_function(train_tokenizer, f"{spec.namespace}_train_tokenizer"),
        "train_reward_model": named_node_function(train_reward, f"{spec.namespace}_train_reward_model"),
    }
