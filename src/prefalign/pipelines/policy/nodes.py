"""Policy nodes, one set per registered policy objective: unpack parameters, call core, return
what the catalog saves."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import polars as pl

from prefalign.core.config_utils import deep_merge
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.pipelines import named_node_function
from prefalign.core.models import ModelConfig
from prefalign.core.models.backbone import prepare_for_training
from prefalign.core.models.lm_head import set_logprob_chunk_tokens
from prefalign.core.objectives.registry import ObjectiveSpec
from prefalign.core.objectives.train import launch
from prefalign.core.policy.preference import preference_table_fn
from prefalign.core.policy.training import (PolicyDataConfig, apply_cpu_threads, reference_logprobs,
                                            checkpoint_dir_of, scoring_batch_size_of, train_gpo)
from prefalign.core.training.launch import check_num_processes
from prefalign.core.training.loop import TrainConfig
from prefalign.core.training.progress import rounded
from prefalign.core.training.resume import resumable_run_dir

log = logging.getLogger(__name__)


def _parameters(defaults: dict[str, Any], objective: dict[str, Any]) -> dict[str, Any]:
    """The objective's parameters: ``policy.defaults`` deep-merged with ``policy.<name>``."""
    return deep_merge(defaults, objective)


def _work_dir(spec: ObjectiveSpec, params: dict[str, Any], pairs: pl.DataFrame, start: ModelBundle | None = None) -> Path:
    # Resumable loop checkpoints (model + optimizer + step) of an interrupted run live under
    # checkpoint_dir, in a folder fingerprinted by parameters, pairs and starting weights; the
    # finished policy goes to the versioned catalog dataset.
    return resumable_run_dir(checkpoint_dir_of(params, spec.params_key), spec.namespace, params, [pairs],
                             start.model if start else None)


def _num_processes(params: dict[str, Any], data: PolicyDataConfig) -> int:
    return check_num_processes(params.get("num_processes", 1), data.batch_size, "policy.defaults.num_processes")


def _launch(spec: ObjectiveSpec, params: dict[str, Any], args: dict[str, Any], frames: dict[str, pl.DataFrame],
            data: PolicyDataConfig, bundles: dict[str, ModelBundle] | None = None):
    with tempfile.TemporaryDirectory(prefix="prefalign_policy_") as tmp:
        return launch(spec.namespace, args, frames, bundles, num_processes=_num_processes(params, data),
                      accelerate_config=params.get("accelerate_config"), work_dir=tmp)


def _with_lora(start: ModelBundle, params: dict[str, Any]) -> ModelBundle:
    """The starting policy with the `model` training settings: frozen lower layers, fresh LoRA
    adapters when it has none, the log-prob chunk size, the frozen-layer cache
    (core/models/backbone.py prepare_for_training)."""
    model = prepare_for_training(start.model, params.get("model"), causal_lm=True)
    return start if model is start.model else replace(start, model=model)


def _set_chunk_tokens(model, params: dict[str, Any]) -> None:
    set_logprob_chunk_tokens(model, ModelConfig.from_dict(params.get("model")).logprob_chunk_tokens)


def sft_node(spec: ObjectiveSpec) -> Callable:
    """Node of the reference objective: SFT on prompt + chosen (response-only loss)."""

    def train(validated_pairs: pl.DataFrame, defaults: dict[str, Any], objective: dict[str, Any]
              ) -> tuple[ModelBundle, pl.DataFrame, dict[str, Any]]:
        params = _parameters(defaults, objective)
        data = PolicyDataConfig.from_dict(params.get("data"))
        training = TrainConfig.from_dict(params.get("training"))
        apply_cpu_threads(training)
        args = {"tokenizer": params.get("tokenizer"), "model": params.get("model"), "data": asdict(data),
                "training": asdict(training), "output_dir": str(_work_dir(spec, params, validated_pairs))}
        run = _launch(spec, params, args, {"pairs": validated_pairs}, data)
        log.info("%s: val_loss=%s steps=%s", spec.namespace, rounded(run.metrics.get("val_loss")), run.metrics["steps"])
        return run.bundle, run.training_curve, run.metrics

    return named_node_function(train, f"{spec.namespace}_train")


def reference_logprobs_node(spec: ObjectiveSpec) -> Callable:
    """Node computing log pi_ref(chosen), log pi_ref(rejected) per pair_id, once per dataset."""

    def compute(reference: ModelBundle, validated_pairs: pl.DataFrame, defaults: dict[str, Any],
                objective: dict[str, Any]) -> pl.DataFrame:
        params = _parameters(defaults, objective)
        training = TrainConfig.from_dict(params.get("training"))
        apply_cpu_threads(training)
        _set_chunk_tokens(reference.model, params)
        # the training's layout and compute precision: the reference equals the policy it starts
        return reference_logprobs(reference, validated_pairs, PolicyDataConfig.from_dict(params.get("data")), training)

    return named_node_function(compute, f"{spec.namespace}_reference_logprobs")


def pairwise_node(spec: ObjectiveSpec) -> Callable:
    """Node training the pairwise objective ``spec`` from the reference policy.

    Its inputs are (reference, validated_pairs, [reference_logprobs,] defaults, objective): the
    reference table only when ``spec.needs_reference``.
    """

    def run_it(reference: ModelBundle, validated_pairs: pl.DataFrame, table: pl.DataFrame | None,
               defaults: dict[str, Any], objective: dict[str, Any]) -> tuple[ModelBundle, pl.DataFrame, dict[str, Any]]:
        params = _parameters(defaults, objective)
        config = spec.parse(params.get(spec.config_key))
        data = PolicyDataConfig.from_dict(params.get("data"))
        training = TrainConfig.from_dict(params.get("training"))
        apply_cpu_threads(training)
        args = {"config": asdict(config), "data": asdict(data), "training": asdict(training),
                "output_dir": str(_work_dir(spec, params, validated_pairs, reference))}
        frames = {"pairs": validated_pairs, **({"reference_logprobs": table} if table is not None else {})}
        run = _launch(spec, params, args, frames, data, {"reference": _with_lora(reference, params)})
        log.info("%s: policy ranking train=%s val=%s", spec.namespace,
                 {k: rounded(v) for k, v in run.metrics["policy"]["train"].items()},
                 {k: rounded(v) for k, v in run.metrics["policy"]["val"].items()})
        return run.bundle, run.training_curve, run.metrics

    if spec.needs_reference:
        def train(reference, validated_pairs, reference_table, defaults, objective):
            return run_it(reference, validated_pairs, reference_table, defaults, objective)
    else:
        def train(reference, validated_pairs, defaults, objective):
            return run_it(reference, validated_pairs, None, defaults, objective)

    return named_node_function(train, f"{spec.namespace}_train")


def on_policy_node(spec: ObjectiveSpec) -> Callable:
    """Node of an on-policy objective: iterative GPO scored by ``spec.preference_model``."""

    def train(reference: ModelBundle, preference_model: ModelBundle, validated_pairs: pl.DataFrame,
              defaults: dict[str, Any], objective: dict[str, Any]
              ) -> tuple[ModelBundle, dict[str, ModelBundle], pl.DataFrame, pl.DataFrame, dict[str, Any]]:
        params = _parameters(defaults, objective)
        gpo = spec.parse(params.get(spec.config_key))
        training = TrainConfig.from_dict(params.get("training"))
        apply_cpu_threads(training)
        work_dir = _work_dir(spec, params, validated_pairs, reference)
        run = train_gpo(
            _with_lora(reference, params),
            preference_table_fn(preference_model, scoring_batch_size_of(params, spec.params_key)),
            validated_pairs,
            gpo,
            PolicyDataConfig.from_dict(params.get("data")),
            training,
            work_dir,
            preference_model_name=f"{spec.preference_model}.model",
            name=spec.name,
        )
        return run.bundle, run.iteration_bundles, run.generations, run.training_curve, run.metrics

    return named_node_function(train, f"{spec.namespace}_train")
