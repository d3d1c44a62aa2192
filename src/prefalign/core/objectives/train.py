"""The one training entry point of every registered objective, in one process or under `accelerate launch`.

``train_objective`` dispatches on the registry entry's trainer; ``launch`` runs it in-process, or,
with ``num_processes > 1``, starts ``accelerate launch -m prefalign.core.training.launch`` whose
processes call ``train_objective`` again (one protocol for reward and policy: inputs written to a
work directory, the main process's TrainingRun read back), so Kedro runs once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.objectives import registry
from prefalign.core.policy.training import PolicyDataConfig, train_preference, train_sft
from prefalign.core.reward.training import train_reward_model
from prefalign.core.training.launch import run_in_subprocesses
from prefalign.core.training.loop import TrainConfig
from prefalign.core.training.resume import discard_checkpoints
from prefalign.core.training.run import TrainingRun


def train_objective(
    namespace: str,
    args: dict[str, Any],
    frames: dict[str, pl.DataFrame],
    bundles: dict[str, ModelBundle] | None = None,
    tokenizers: dict[str, Any] | None = None,
) -> TrainingRun:
    """Train the registered objective ``namespace`` (every process runs this same function).

    Args:
        namespace: a registered namespace (``<family>_<name>``, core/objectives/registry.py).
        args: JSON-able arguments: reward ``{params, output_dir}``; supervised ``{tokenizer, model, data,
            training, output_dir}``; pairwise ``{config, data, training, output_dir}``.
        frames: reward ``{train, val}``; policy ``{pairs}`` (+ ``reference_logprobs`` when needed).
        bundles: pairwise ``{reference}`` (the SFT policy).
        tokenizers: reward ``{tokenizer}``.

    Returns:
        The objective's TrainingRun.

    Raises:
        KeyError: an unregistered namespace. ValueError: an on-policy objective (it runs in one
            process, by its own node) or a bad config.
    """
    spec = registry.get(namespace)
    bundles, tokenizers = bundles or {}, tokenizers or {}
    if spec.trainer == "reward":
        return train_reward_model(frames["train"], frames["val"], tokenizers["tokenizer"], spec.parse(args["params"]),
                                  args["output_dir"], spec.name)
    data, training = PolicyDataConfig.from_dict(args["data"]), TrainConfig.from_dict(args["training"])
    if spec.trainer == "supervised":
        return train_sft(frames["pairs"], args["tokenizer"], args["model"], data, training, args["output_dir"], spec.name)
    if spec.trainer == "pairwise":
        return train_preference(bundles["reference"], frames["pairs"], frames.get("reference_logprobs"), spec,
                                spec.parse(args["config"]), data, training, args["output_dir"])
    raise ValueError(f"{namespace}: trainer {spec.trainer!r} has no launcher entry (on-policy objectives run in one process)")


def launch(
    namespace: str,
    args: dict[str, Any],
    frames: dict[str, pl.DataFrame],
    bundles: dict[str, ModelBundle] | None = None,
    tokenizers: dict[str, Any] | None = None,
    num_processes: int = 1,
    accelerate_config: str | None = None,
    work_dir: str | Path | None = None,
) -> TrainingRun:
    """``train_objective`` in this process, or in ``num_processes`` processes under `accelerate launch`.

    The resumable checkpoints in ``args["output_dir"]`` are dropped once the run has finished.

    Args:
        namespace, args, frames, bundles, tokenizers: as for :func:`train_objective`.
        num_processes: 1 = in this process; > 1 = DDP processes (each takes 1/N of every global batch).
        accelerate_config: an accelerate config file (conf/accelerate/), or None for torchrun defaults.
        work_dir: where the inputs and the main process's result are exchanged (needed when N > 1).

    Returns:
        The TrainingRun (the main process's, when N > 1).

    Raises:
        ValueError: ``num_processes > 1`` without a ``work_dir`` for the inputs.
        RuntimeError: the children failed (with their stderr).
    """
    if num_processes <= 1:
        run = train_objective(namespace, args, frames, bundles, tokenizers)
    elif work_dir is None:
        raise ValueError("multi-process training needs a work_dir for its inputs and result")
    else:
        run = run_in_subprocesses(namespace, args, frames, bundles or {}, tokenizers or {}, work_dir,
                                  num_processes, accelerate_config)
    # the model goes to the catalog now; a re-run with the same inputs trains again (core/training/resume.py)
    discard_checkpoints(args["output_dir"])
    return run
