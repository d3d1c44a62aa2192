"""Policy nodes: unpack parameters, call core/policy, return what the catalog saves."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.policy.launch import run_in_subprocesses
from prefalign.core.policy.preference import preference_table_fn
from prefalign.core.policy.training import (
    apply_cpu_threads,
    GPOConfig,
    PolicyDataConfig,
    PreferenceConfig,
    reference_logprobs,
    train_gpo,
    train_preference,
    train_sft,
)
from prefalign.core.training.loop import TrainConfig
from prefalign.core.training.resume import resumable_run_dir

log = logging.getLogger(__name__)


def _work_dir(defaults: dict[str, Any], objective: dict[str, Any], pairs: pl.DataFrame, start: ModelBundle | None = None) -> Path:
    # Resumable loop checkpoints (model + optimizer + step) of an interrupted run live here, in a
    # folder fingerprinted by parameters, pairs and starting weights; the finished policy goes to
    # the versioned catalog dataset.
    if "work_dir" not in objective:
        raise ValueError("each policy.<namespace> block needs work_dir (where an interrupted run resumes from)")
    name = Path(objective["work_dir"]).name
    return resumable_run_dir(objective["work_dir"], name, {"defaults": defaults, "objective": objective}, [pairs], start.model if start else None)


def _num_processes(defaults: dict[str, Any], data: PolicyDataConfig) -> int:
    processes = int(defaults.get("num_processes", 1))
    if processes < 1 or data.batch_size < processes:
        raise ValueError(
            f"policy.defaults.num_processes={processes} must be >= 1 and <= data.batch_size ({data.batch_size})"
        )
    return processes


def sft_policy(
    validated_pairs: pl.DataFrame, defaults: dict[str, Any], objective: dict[str, Any]
) -> tuple[ModelBundle, pl.DataFrame, dict[str, Any]]:
    """SFT on prompt + chosen (response-only loss): the reference for every other policy."""
    data = PolicyDataConfig.from_dict(defaults.get("data"))
    training = TrainConfig.from_dict(objective.get("training"))
    apply_cpu_threads(training)
    work_dir = _work_dir(defaults, objective, validated_pairs)
    processes = _num_processes(defaults, data)
    if processes > 1:
        spec = {"tokenizer": defaults.get("tokenizer"), "model": defaults.get("model"), "data": asdict(data),
                "training": asdict(training), "output_dir": str(work_dir)}
        with tempfile.TemporaryDirectory(prefix="prefalign_policy_") as tmp:
            run = run_in_subprocesses("sft", validated_pairs, spec, tmp, processes, defaults.get("accelerate_config"))
    else:
        run = train_sft(validated_pairs, defaults.get("tokenizer"), defaults.get("model"), data, training, work_dir)
    log.info("policy sft: val_loss=%s steps=%s", run.metrics.get("val_loss"), run.metrics["steps"])
    return run.bundle, run.training_curve, run.metrics


def compute_reference_logprobs(
    reference: ModelBundle, validated_pairs: pl.DataFrame, defaults: dict[str, Any], objective: dict[str, Any]
) -> pl.DataFrame:
    """log pi_ref(chosen) and log pi_ref(rejected) per pair_id, computed once per dataset."""
    training = TrainConfig.from_dict(objective.get("training"))
    apply_cpu_threads(training)
    return reference_logprobs(reference, validated_pairs, PolicyDataConfig.from_dict(defaults.get("data")), training)


def preference_policy(
    reference: ModelBundle,
    validated_pairs: pl.DataFrame,
    reference_table: pl.DataFrame,
    defaults: dict[str, Any],
    objective: dict[str, Any],
) -> tuple[ModelBundle, pl.DataFrame, dict[str, Any]]:
    """DPO / MMPO / cDPO / IPO, the loss chosen by `objective.loss`."""
    preference = PreferenceConfig.from_dict(objective.get("objective"))
    data = PolicyDataConfig.from_dict(defaults.get("data"))
    training = TrainConfig.from_dict(objective.get("training"))
    apply_cpu_threads(training)
    work_dir = _work_dir(defaults, objective, validated_pairs, reference)
    processes = _num_processes(defaults, data)
    if processes > 1:
        spec = {"preference": asdict(preference), "data": asdict(data), "training": asdict(training), "output_dir": str(work_dir)}
        with tempfile.TemporaryDirectory(prefix="prefalign_policy_") as tmp:
            run = run_in_subprocesses(
                "preference", validated_pairs, spec, tmp, processes, defaults.get("accelerate_config"),
                reference=reference, reference_table=reference_table,
            )
    else:
        run = train_preference(reference, validated_pairs, reference_table, preference, data, training, work_dir)
    log.info(
        "policy %s: implicit accuracy train=%s val=%s",
        preference.loss, run.metrics["policy"]["train"].get("implicit_accuracy"), run.metrics["policy"]["val"].get("implicit_accuracy"),
    )
    return run.bundle, run.training_curve, run.metrics


def gpo_policy(
    reference: ModelBundle,
    preference_model: ModelBundle,
    validated_pairs: pl.DataFrame,
    defaults: dict[str, Any],
    objective: dict[str, Any],
) -> tuple[ModelBundle, dict[str, ModelBundle], pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Iterative GPO scored by a preference model (GPM table, or BT rewards for the baseline)."""
    gpo = GPOConfig.from_dict(objective.get("gpo"))
    training = TrainConfig.from_dict(objective.get("training"))
    apply_cpu_threads(training)
    run = train_gpo(
        reference,
        preference_table_fn(preference_model, objective.get("scoring_batch_size", 16)),
        validated_pairs,
        gpo,
        PolicyDataConfig.from_dict(defaults.get("data")),
        training,
        _work_dir(defaults, objective, validated_pairs, reference),
        preference_model_name=objective.get("preference_model_name", "preference_model"),
    )
    return run.bundle, run.iteration_bundles, run.generations, run.training_curve, run.metrics
