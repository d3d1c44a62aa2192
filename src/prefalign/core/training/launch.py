"""Multi-process training: the same entry point under ``accelerate launch`` (one protocol for all objectives).

The parent (a Kedro node) writes the inputs (JSON args, parquet frames, model bundles,
tokenizers) to ``work_dir``, starts ``accelerate launch -m prefalign.core.training.launch
<work_dir>`` and reads the main process's TrainingRun back, so Kedro runs once and the catalog
stores the outputs. Every process calls the entry point the caller names (``module:function``,
``core.objectives.train.train_objective`` for every registered objective) and trains on its share
of each global batch (DDP; gloo on CPU, NCCL on GPU); only the main process writes.

This module is infrastructure: it imports no objective, loss or registry (the entry point is named
in the inputs and imported by name in the child processes), so the layers point down only
(tests/test_import_layers.py).
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl

import prefalign
from prefalign.core.models.checkpoint import ModelBundle, load_bundle, save_bundle
from prefalign.core.training.run import TrainingRun


def check_num_processes(num_processes: int, batch_size: int, key: str) -> int:
    """The one check of a process count: every process needs at least one pair of each global batch.

    Args:
        num_processes: the configured count.
        batch_size: pairs (or sequences) per global batch.
        key: the parameter's name, for the message (e.g. ``policy.defaults.num_processes``).

    Returns:
        ``num_processes`` as an int.

    Raises:
        ValueError: naming the key, when it is a bool or not convertible by ``int()``, or < 1, or
            > batch_size. (The TypeError raised inside for a bool is caught and becomes this
            ValueError; no TypeError leaves the function.)
    """
    try:
        if isinstance(num_processes, bool):
            raise TypeError
        processes = int(num_processes)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={num_processes!r} must be an integer (a process count)") from None
    if processes < 1 or batch_size < processes:
        raise ValueError(f"{key}={processes} must be >= 1 and <= the batch size ({batch_size})")
    return processes


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (several trainings may share a machine: never assume
    accelerate's default port is free).

    Returns:
        The port number.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_command(module: str, work_dir: Path, num_processes: int, accelerate_config: str | None) -> list[str]:
    """The ``accelerate launch`` command line.

    Args:
        module: the module the processes run (``-m``).
        work_dir: its one argument.
        num_processes: the process count.
        accelerate_config: a config file, or None for torchrun + gloo/NCCL defaults.

    Returns:
        The argv list.

    Raises:
        FileNotFoundError: ``accelerate_config`` names a file that does not exist.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        if not Path(accelerate_config).exists():
            raise FileNotFoundError(f"accelerate_config '{accelerate_config}' does not exist; see conf/accelerate/")
        cmd += ["--config_file", accelerate_config]
    else:
        # --multi_gpu selects the torchrun launcher; without CUDA the loop's Accelerator is created
        # with cpu=True and runs MULTI_CPU over gloo.
        cmd += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--num_processes", str(num_processes), "--main_process_port", str(free_port())]
    return cmd + ["-m", module, str(work_dir)]


def run_accelerate_module(module: str, work_dir: Path, num_processes: int, accelerate_config: str | None, what: str) -> None:
    """Start ``module`` in ``num_processes`` processes and wait for them.

    Args:
        module, work_dir, num_processes, accelerate_config: as :func:`accelerate_command`;
        what: the run's name in the error message.

    Returns:
        None.

    Raises:
        RuntimeError: the children exited non-zero (the message carries their stderr's tail).
    """
    env = dict(os.environ)
    src = str(Path(prefalign.__file__).resolve().parents[1])  # the project may not be pip-installed
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = accelerate_command(module, work_dir, num_processes, accelerate_config)
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"multi-process {what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def run_in_subprocesses(
    entry: str,
    namespace: str,
    args: dict[str, Any],
    frames: dict[str, pl.DataFrame],
    bundles: dict[str, ModelBundle],
    tokenizers: dict[str, Any],
    work_dir: str | Path,
    num_processes: int,
    accelerate_config: str | None = None,
) -> TrainingRun:
    """Run ``entry(namespace, args, frames, bundles, tokenizers)`` in ``num_processes`` processes.

    Args:
        entry: ``module:function`` of the training entry point every process calls
            (``prefalign.core.objectives.train:train_objective``); it returns a TrainingRun.
        namespace, args, frames, bundles, tokenizers: its arguments (core/objectives/train.train_objective).
        work_dir: exchange folder (inputs/, result/).
        num_processes: the process count (> 1).
        accelerate_config: an accelerate config file, or None for the defaults (:func:`accelerate_command`).

    Returns:
        The main process's TrainingRun (metrics carry ``num_processes``), with its ``generations``
        table and ``iteration_bundles`` when the run has them (on-policy objectives).

    Raises:
        RuntimeError: the children failed (their stderr's tail in the message).
        FileNotFoundError: ``accelerate_config`` does not exist.
    """
    work = Path(work_dir)
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.write_parquet(inputs / f"frame_{name}.parquet")
    for name, bundle in bundles.items():
        save_bundle(bundle, inputs / f"bundle_{name}")
    for name, tokenizer in tokenizers.items():
        tokenizer.save_pretrained(inputs / f"tokenizer_{name}")
    manifest = {"entry": entry, "namespace": namespace, "args": args, "frames": sorted(frames), "bundles": sorted(bundles),
                "tokenizers": sorted(tokenizers)}
    (inputs / "spec.json").write_text(json.dumps(manifest, default=str))
    run_accelerate_module("prefalign.core.training.launch", work, num_processes, accelerate_config, f"{namespace} training")
    result = work / "result"
    bundle = load_bundle(result / "model")
    bundle.model.train(False)
    generations = result / "generations.parquet"
    iterations = json.loads((result / "iteration_bundles.json").read_text())
    return TrainingRun(bundle, pl.read_parquet(result / "training_curve.parquet"), json.loads((result / "metrics.json").read_text()),
                       pl.read_parquet(generations) if generations.exists() else None,
                       {name: load_bundle(result / "iteration_bundles" / name) for name in iterations})


def entry_point(entry: str):
    """The function ``module:function`` names (imported now).

    Args:
        entry: e.g. ``prefalign.core.objectives.train:train_objective``.

    Returns:
        The function.

    Raises:
        ValueError: ``entry`` is not ``module:function``.
    """
    module, _, function = entry.partition(":")
    if not module or not function:
        raise ValueError(f"entry point {entry!r} must be 'module:function', e.g. prefalign.core.objectives.train:train_objective")
    return getattr(importlib.import_module(module), function)


def main(work_dir: str) -> None:
    """One process of a multi-process run: read the inputs, call the entry point, and (main process
    only) write the TrainingRun to ``work_dir/result``.

    Args:
        work_dir: the exchange folder :func:`run_in_subprocesses` wrote.

    Returns:
        None.

    Raises:
        ValueError: a malformed entry point; whatever the entry point raises.
    """
    from accelerate import PartialState
    from transformers import AutoTokenizer

    work = Path(work_dir)
    inputs = work / "inputs"
    manifest = json.loads((inputs / "spec.json").read_text())
    frames = {name: pl.read_parquet(inputs / f"frame_{name}.parquet") for name in manifest["frames"]}
    bundles = {name: load_bundle(inputs / f"bundle_{name}") for name in manifest["bundles"]}
    tokenizers = {name: AutoTokenizer.from_pretrained(inputs / f"tokenizer_{name}") for name in manifest["tokenizers"]}
    run = entry_point(manifest["entry"])(manifest["namespace"], manifest["args"], frames, bundles, tokenizers)
    state = PartialState()
    if state.is_main_process:  # only the main process writes
        result = work / "result"
        save_bundle(run.bundle, result / "model")
        run.training_curve.write_parquet(result / "training_curve.parquet")
        if run.generations is not None:
            run.generations.write_parquet(result / "generations.parquet")
        for name, iteration in run.iteration_bundles.items():
            save_bundle(iteration, result / "iteration_bundles" / name)
        (result / "iteration_bundles.json").write_text(json.dumps(list(run.iteration_bundles)))  # in their order
        (result / "metrics.json").write_text(json.dumps({**run.metrics, "num_processes": state.num_processes}))
    state.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
