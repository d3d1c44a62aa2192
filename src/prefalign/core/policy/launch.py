"""Multi-process policy training: the same entry points under ``accelerate launch``.

As in the reward pipeline (core/reward/launch.py): the node writes its inputs to a temporary
work directory, starts ``accelerate launch -m prefalign.core.policy.launch <work_dir>``, and reads
the main process's result back, so Kedro runs once and the catalog saves the outputs. Every
process trains on its share of each global batch (DDP; gloo on CPU, NCCL on GPU).

SFT and the preference objectives (DPO / MMPO / cDPO / IPO) run this way. GPO stays in one
process: its sampling and scoring steps are not sharded (see docs/policy.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import polars as pl

from prefalign.core.models.checkpoint import ModelBundle, load_bundle, save_bundle
from prefalign.core.policy.training import (
    PolicyDataConfig,
    PolicyRun,
    PreferenceConfig,
    train_preference,
    train_sft,
)
from prefalign.core.training.launch import run_accelerate_module
from prefalign.core.training.loop import TrainConfig


def run_in_subprocesses(
    objective: str,
    pairs: pl.DataFrame,
    spec: dict[str, Any],
    work_dir: str | Path,
    num_processes: int,
    accelerate_config: str | None = None,
    reference: ModelBundle | None = None,
    reference_table: pl.DataFrame | None = None,
) -> PolicyRun:
    """Run `train_sft` (objective "sft") or `train_preference` (objective "preference") in N processes.

    `spec` holds the JSON-able arguments: tokenizer/model params (sft), objective (preference),
    data, training and output_dir.
    """
    work = Path(work_dir)
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    pairs.write_parquet(inputs / "pairs.parquet")
    if reference is not None:
        save_bundle(reference, inputs / "reference")
    if reference_table is not None:
        reference_table.write_parquet(inputs / "reference_logprobs.parquet")
    (inputs / "spec.json").write_text(json.dumps({"objective": objective, **spec}, default=str))
    run_accelerate_module("prefalign.core.policy.launch", work, num_processes, accelerate_config, "policy training")
    result = work / "result"
    return PolicyRun(
        load_bundle(result / "model"),
        pl.read_parquet(result / "training_curve.parquet"),
        json.loads((result / "metrics.json").read_text()),
    )


def main(work_dir: str) -> None:
    from accelerate import PartialState

    work = Path(work_dir)
    spec = json.loads((work / "inputs" / "spec.json").read_text())
    pairs = pl.read_parquet(work / "inputs" / "pairs.parquet")
    data = PolicyDataConfig.from_dict(spec["data"])
    training = TrainConfig.from_dict(spec["training"])
    if spec["objective"] == "sft":
        run = train_sft(pairs, spec["tokenizer"], spec["model"], data, training, spec["output_dir"])
    else:
        run = train_preference(
            load_bundle(work / "inputs" / "reference"),
            pairs,
            pl.read_parquet(work / "inputs" / "reference_logprobs.parquet"),
            PreferenceConfig.from_dict(spec["preference"]),
            data,
            training,
            spec["output_dir"],
        )
    state = PartialState()
    if state.is_main_process:  # only the main process writes
        result = work / "result"
        save_bundle(run.bundle, result / "model")
        run.training_curve.write_parquet(result / "training_curve.parquet")
        (result / "metrics.json").write_text(json.dumps({**run.metrics, "num_processes": state.num_processes}))
    state.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
