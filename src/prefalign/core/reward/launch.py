"""Multi-process reward training: the same entry point under ``accelerate launch``.

The parent (the Kedro node) writes the inputs to a work directory, starts
``accelerate launch -m prefalign.core.reward.launch <work_dir>`` and reads the result back, so
Kedro runs once and the catalog stores the outputs. In the children every process trains on its
share of each global batch (DDP; gloo on CPU, NCCL on GPU) and only the main process writes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import polars as pl
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from prefalign.core.models.checkpoint import load_bundle, save_bundle
from prefalign.core.reward.training import RewardParams, RewardTrainingOutput, train_reward_model
from prefalign.core.training.launch import run_accelerate_module


def train_in_subprocesses(
    train_pairs: pl.DataFrame,
    val_pairs: pl.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    params: RewardParams,
    output_dir: str | Path,
    work_dir: str | Path,
) -> RewardTrainingOutput:
    """Run ``train_reward_model`` in ``params.num_processes`` processes; return the main process's result."""
    work = Path(work_dir)
    (work / "inputs").mkdir(parents=True, exist_ok=True)
    train_pairs.write_parquet(work / "inputs" / "train.parquet")
    val_pairs.write_parquet(work / "inputs" / "val.parquet")
    tokenizer.save_pretrained(work / "inputs" / "tokenizer")
    (work / "inputs" / "params.json").write_text(json.dumps({"params": asdict(params), "output_dir": str(output_dir)}))
    run_accelerate_module("prefalign.core.reward.launch", work, params.num_processes, params.accelerate_config,
                          "reward training")
    result = work / "result"
    bundle = load_bundle(result / "model")
    bundle.model.train(False)
    curve = json.loads((result / "curve.json").read_text())
    metrics = json.loads((result / "metrics.json").read_text())
    return RewardTrainingOutput(bundle, curve, metrics)


def main(work_dir: str) -> None:
    work = Path(work_dir)
    spec = json.loads((work / "inputs" / "params.json").read_text())
    params = RewardParams.from_dict(spec["params"])
    tokenizer = AutoTokenizer.from_pretrained(work / "inputs" / "tokenizer")
    out = train_reward_model(
        pl.read_parquet(work / "inputs" / "train.parquet"),
        pl.read_parquet(work / "inputs" / "val.parquet"),
        tokenizer,
        params,
        spec["output_dir"],
    )
    from accelerate import PartialState

    if PartialState().is_main_process:  # only the main process writes
        result = work / "result"
        save_bundle(out.bundle, result / "model")
        (result / "curve.json").write_text(json.dumps(out.curve))
        (result / "metrics.json").write_text(json.dumps(out.metrics))
    PartialState().wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
