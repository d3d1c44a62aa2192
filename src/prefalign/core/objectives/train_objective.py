"""The one training entry point of every registered objective, in one process or under `accelerate launch`.

``train_objective`` calls the registry entry's run function (``spec.train``, which calls the entry's
loss factory); ``launch`` runs it in-process, or, with ``num_processes > 1``, starts ``accelerate
launch -m prefalign.core.training.launch`` whose processes call ``train_objective`` again (one
protocol for reward, SFT, pairwise and on-policy objectives: inputs written to a work directory,
the main process's TrainingRun read back), so Kedro runs once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.objectives import registry
from prefalign.core.training.launch import run_in_subprocesses
from prefalign.core.training.resume import discard_checkpoints
from prefalign.core.training.run import TrainingRun

ENTRY = f"{__name__}:train_objective"  # what every process of a multi-process run calls


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
            training, output_dir}``; pairwise ``{config, data, training, output_dir}``; on-policy
            ``{config, data, training, output_dir, scoring_batch_size, preference_model_name}``.
        frames: reward ``{train, val}``; policy ``{pairs}`` (+ ``reference_logprobs`` when needed).
        bundles: pairwise ``{reference}`` (the SFT policy); on-policy ``{reference, preference}``.
        tokenizers: reward ``{tokenizer}``.

    Returns:
        The objective's TrainingRun (the run function's: core/reward/train_reward.py run_reward_objective,
        core/policy/train_policy.py run_sft_objective / run_pairwise_objective / run_on_policy_objective).

    Raises:
        KeyError: an unregistered namespace, or a missing frame / bundle / argument.
        ValueError: a bad config (the entry's ``parse``).
    """
    spec = registry.get(namespace)
    return spec.train(spec, args, frames, bundles or {}, tokenizers or {})


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
        run = run_in_subprocesses(ENTRY, namespace, args, frames, bundles or {}, tokenizers or {}, work_dir,
                                  num_processes, accelerate_config)
    # the model goes to the catalog now; a re-run with the same inputs trains again (core/training/resume.py)
    discard_checkpoints(args["output_dir"])
    return run
