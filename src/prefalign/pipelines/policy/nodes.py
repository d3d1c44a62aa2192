"""Policy nodes: unpack parameters, call core/policy, return what the catalog saves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.policy.preference import preference_table_fn
from prefalign.core.policy.training import (
    GPOConfig,
    PolicyDataConfig,
    PreferenceConfig,
    reference_logprobs,
    train_gpo,
    train_preference,
    train_sft,
)
from prefalign.core.training.loop import TrainConfig


def _work_dir(objective: dict[str, Any]) -> Path:
    # Resumable loop checkpoints (model + optimizer + step) of an interrupted run live here;
    # the finished policy goes to the versioned catalog dataset.
    if "work_dir" not in objective:
        raise ValueError("each policy.<namespace> block needs work_dir (where an interrupted run resumes from)")
    return Path(objective["work_dir"])


def sft_policy(
    validated_pairs: pl.DataFrame, shared: dict[str, Any], objective: dict[str, Any]
) -> tuple[ModelBundle, pl.DataFrame, dict[str, Any]]:
    """SFT on prompt + chosen (response-only loss): the reference for every other policy."""
    run = train_sft(
        validated_pairs,
        shared.get("tokenizer"),
        shared.get("model"),
        PolicyDataConfig.from_dict(shared.get("data")),
        TrainConfig.from_dict(objective.get("training")),
        _work_dir(objective),
    )
    return run.bundle, run.training_curve, run.metrics


def compute_reference_logprobs(
    reference: ModelBundle, validated_pairs: pl.DataFrame, shared: dict[str, Any]
) -> pl.DataFrame:
    """log pi_ref(chosen) and log pi_ref(rejected) per pair_id, computed once per dataset."""
    return reference_logprobs(reference, validated_pairs, PolicyDataConfig.from_dict(shared.get("data")))


def preference_policy(
    reference: ModelBundle,
    validated_pairs: pl.DataFrame,
    reference_table: pl.DataFrame,
    shared: dict[str, Any],
    objective: dict[str, Any],
) -> tuple[ModelBundle, pl.DataFrame, dict[str, Any]]:
    """DPO / MMPO / cDPO / IPO, the loss chosen by `objective.loss`."""
    run = train_preference(
        reference,
        validated_pairs,
        reference_table,
        PreferenceConfig.from_dict(objective.get("objective")),
        PolicyDataConfig.from_dict(shared.get("data")),
        TrainConfig.from_dict(objective.get("training")),
        _work_dir(objective),
    )
    return run.bundle, run.training_curve, run.metrics


def gpo_policy(
    reference: ModelBundle,
    preference_model: ModelBundle,
    validated_pairs: pl.DataFrame,
    shared: dict[str, Any],
    objective: dict[str, Any],
) -> tuple[ModelBundle, dict[str, ModelBundle], pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Iterative GPO scored by a preference model (GPM table, or BT rewards for the baseline)."""
    gpo = GPOConfig.from_dict(objective.get("gpo"))
    run = train_gpo(
        reference,
        preference_table_fn(preference_model, objective.get("scoring_batch_size", 16)),
        validated_pairs,
        gpo,
        PolicyDataConfig.from_dict(shared.get("data")),
        TrainConfig.from_dict(objective.get("training")),
        _work_dir(objective),
        preference_model_name=objective.get("preference_model_name", "preference_model"),
    )
    return run.bundle, run.iteration_bundles, run.generations, run.training_curve, run.metrics
