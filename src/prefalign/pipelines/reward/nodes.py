"""Thin nodes of the reward pipeline; the method lives in core.

Each node function serves every registered reward objective: pipeline.py binds the objective's
``namespace`` (``pipelines.for_entry``), and the function reads its registry entry.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl
from transformers import PreTrainedTokenizerBase

from prefalign.core.config_utils import lift_sub_blocks
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.objectives import registry
from prefalign.core.objectives.train_objective import launch
from prefalign.core.reward.train_reward import RewardParams, fit_tokenizer, select_pairs
from prefalign.core.training.progress import rounded
from prefalign.core.training.resume import resumable_run_dir

log = logging.getLogger(__name__)


def _params(namespace: str, defaults: dict[str, Any], objective: dict[str, Any]) -> RewardParams:
    """``reward.defaults`` deep-merged with the objective's block, parsed by its registry entry
    (RewardParams is flat: the ``data`` and ``objective`` sub-blocks' keys are read at its top level)."""
    spec = registry.get(namespace)
    return spec.parse(lift_sub_blocks(objective, where=spec.params_key),
                      defaults=lift_sub_blocks(defaults, where="reward.defaults"))


def select_training_pairs(validated_pairs: pl.DataFrame, defaults: dict[str, Any], objective: dict[str, Any], *,
                          namespace: str) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Train and val pairs (ties dropped for hard labels, kept for soft targets), with counts.

    Raises:
        ValueError: no train pair is left, naming the objective and the counts.
    """
    spec = registry.get(namespace)
    params = _params(namespace, defaults, objective)
    drop = spec.drops_ties(params)
    train, train_counts = select_pairs(validated_pairs, "train", params, params.max_train_pairs, drop)
    val, val_counts = select_pairs(validated_pairs, "val", params, params.max_val_pairs, drop)
    if train.height == 0:
        raise ValueError(
            f"no train pairs left for {namespace} ({train_counts}); "
            "check validated_pairs has split == 'train' rows"
        )
    return train, val, {**train_counts, **val_counts}


def train_tokenizer(train_pairs: pl.DataFrame, defaults: dict[str, Any], objective: dict[str, Any], *,
                    namespace: str) -> PreTrainedTokenizerBase:
    """The objective's tokenizer: the pretrained one, or one fitted on the train pairs (``fit_tokenizer``)."""
    return fit_tokenizer(train_pairs, _params(namespace, defaults, objective))


def train_reward_model(train_pairs: pl.DataFrame, val_pairs: pl.DataFrame, tokenizer: PreTrainedTokenizerBase,
                       selection: dict[str, int], defaults: dict[str, Any], objective: dict[str, Any], *,
                       namespace: str) -> tuple[ModelBundle, pl.DataFrame, dict[str, Any]]:
    """Train in-process, or under ``accelerate launch`` when ``num_processes > 1``.

    Resumable state goes to ``checkpoint_dir/<fingerprint of params and pairs>``: a killed run
    started again continues from its last checkpoint; a finished run drops it.
    """
    spec = registry.get(namespace)
    params = _params(namespace, defaults, objective)
    with tempfile.TemporaryDirectory(prefix="prefalign_reward_") as tmp:
        base = Path(params.checkpoint_dir) if params.checkpoint_dir else Path(tmp)
        output_dir = resumable_run_dir(base, spec.name, asdict(params), [train_pairs, val_pairs])
        run = launch(namespace, {"params": asdict(params), "output_dir": str(output_dir)},
                     {"train": train_pairs, "val": val_pairs}, tokenizers={"tokenizer": tokenizer},
                     num_processes=params.num_processes, accelerate_config=params.accelerate_config,
                     work_dir=Path(tmp) / "launch")
    metrics = {**run.metrics, "selection": selection}
    loss = "mmpo" if params.soft_targets else "margin" if params.margin_offset else "bt"
    log.info("reward %s (head %s, loss %s): val_accuracy=%s train_accuracy=%s steps=%s", spec.name, spec.head_type,
             loss, rounded(metrics.get("val_accuracy")), rounded(metrics.get("train_accuracy")), metrics["steps"])
    return run.bundle, run.training_curve, metrics
