"""Policy nodes: unpack parameters, call core, return what the catalog saves.

One function per node kind, serving every registered policy objective of that trainer: pipeline.py
binds the objective's ``namespace`` (``pipelines.for_entry``), and the function reads its registry entry.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import polars as pl

from prefalign.core.config_utils import deep_merge
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.models import ModelConfig
from prefalign.core.models.backbone import prepare_for_training
from prefalign.core.models.lm_head import set_logprob_chunk_tokens
from prefalign.core.objectives import registry
from prefalign.core.objectives.registry import ObjectiveSpec
from prefalign.core.objectives.train_objective import launch
from prefalign.core.policy import train_policy as policy_training
from prefalign.core.policy.train_policy import PolicyDataConfig, apply_cpu_threads, checkpoint_dir_of, scoring_batch_size_of
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


def _settings(namespace: str, defaults: dict[str, Any], objective: dict[str, Any]):
    """(registry entry, merged parameters, data config, loop config) of one policy node, with the
    loop's CPU threads applied: the start every training node shares."""
    params = _parameters(defaults, objective)
    training = TrainConfig.from_dict(params.get("training"))
    apply_cpu_threads(training)
    return registry.get(namespace), params, PolicyDataConfig.from_dict(params.get("data")), training


def train_sft(validated_pairs: pl.DataFrame, defaults: dict[str, Any], objective: dict[str, Any], *,
              namespace: str) -> tuple[ModelBundle, pl.DataFrame, dict[str, Any]]:
    """Node of the reference objective: SFT on prompt + chosen (response-only loss)."""
    spec, params, data, training = _settings(namespace, defaults, objective)
    args = {"tokenizer": params.get("tokenizer"), "model": params.get("model"), "data": asdict(data),
            "training": asdict(training), "output_dir": str(_work_dir(spec, params, validated_pairs))}
    run = _launch(spec, params, args, {"pairs": validated_pairs}, data)
    log.info("%s: val_loss=%s steps=%s", namespace, rounded(run.metrics.get("val_loss")), run.metrics["steps"])
    return run.bundle, run.training_curve, run.metrics


def reference_logprobs(reference: ModelBundle, validated_pairs: pl.DataFrame, defaults: dict[str, Any],
                       objective: dict[str, Any]) -> pl.DataFrame:
    """log pi_ref(chosen), log pi_ref(rejected) per pair_id, once per dataset, under the objective's
    training layout and compute precision (the reference equals the policy it starts)."""
    params = _parameters(defaults, objective)
    training = TrainConfig.from_dict(params.get("training"))
    apply_cpu_threads(training)
    _set_chunk_tokens(reference.model, params)
    return policy_training.reference_logprobs(reference, validated_pairs,
                                              PolicyDataConfig.from_dict(params.get("data")), training)


def train_policy(reference: ModelBundle, validated_pairs: pl.DataFrame, defaults: dict[str, Any],
                 objective: dict[str, Any], reference_logprobs: pl.DataFrame | None = None, *,
                 namespace: str) -> tuple[ModelBundle, pl.DataFrame, dict[str, Any]]:
    """Node training the pairwise objective ``namespace`` from the reference policy.

    ``reference_logprobs`` (the reference table) is an input only when the objective's registry entry
    ``needs_reference``; reference-free objectives (SimPO, ORPO) get None.
    """
    spec, params, data, training = _settings(namespace, defaults, objective)
    config = spec.parse(params.get(spec.config_key))
    args = {"config": asdict(config), "data": asdict(data), "training": asdict(training),
            "output_dir": str(_work_dir(spec, params, validated_pairs, reference))}
    frames = {"pairs": validated_pairs, **({"reference_logprobs": reference_logprobs}
                                           if reference_logprobs is not None else {})}
    run = _launch(spec, params, args, frames, data, {"reference": _with_lora(reference, params)})
    log.info("%s: policy ranking train=%s val=%s", namespace,
             {k: rounded(v) for k, v in run.metrics["policy"]["train"].items()},
             {k: rounded(v) for k, v in run.metrics["policy"]["val"].items()})
    return run.bundle, run.training_curve, run.metrics


def train_gpo(reference: ModelBundle, preference_model: ModelBundle, validated_pairs: pl.DataFrame,
              defaults: dict[str, Any], objective: dict[str, Any], *, namespace: str
              ) -> tuple[ModelBundle, dict[str, ModelBundle], pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Node of an on-policy objective: iterative GPO scored by the entry's ``preference_model``, run
    through the registry's launcher (one process, or several under `accelerate launch`)."""
    spec, params, data, training = _settings(namespace, defaults, objective)
    gpo = spec.parse(params.get(spec.config_key))
    args = {"config": asdict(gpo), "data": asdict(data), "training": asdict(training),
            "output_dir": str(_work_dir(spec, params, validated_pairs, reference)),
            "scoring_batch_size": scoring_batch_size_of(params, spec.params_key),
            "preference_model_name": f"{spec.preference_model}.model"}
    run = _launch(spec, params, args, {"pairs": validated_pairs}, data,
                  {"reference": _with_lora(reference, params), "preference": preference_model})
    return run.bundle, run.iteration_bundles, run.generations, run.training_curve, run.metrics
