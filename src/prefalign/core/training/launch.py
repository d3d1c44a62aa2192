"""Multi-process training: the same entry point under ``accelerate launch`` (one protocol for all objectives).

The parent (a Kedro node) writes the inputs (JSON args, parquet frames, model bundles,
tokenizers) to ``work_dir``, starts ``accelerate launch -m prefalign.core.training.launch
<work_dir>`` and reads the main process's TrainingRun back, so Kedro runs once and the catalog
stores the outputs. Every process calls the entry point the caller names (``module:function``,
``core.objectives.train_objective.train_objective`` for every registered objective) and trains on its share
of each global batch (DDP, FSDP2 with conf/accelerate/fsdp.yaml, or DeepSpeed ZeRO-3 with
conf/accelerate/deepspeed_zero3.yaml; gloo on CPU, NCCL on GPU); the main process of each machine
writes the result.

This module is infrastructure: it imports no objective, loss or registry (the entry point is named
in the inputs and imported by name in the child processes), so the layers point down only
(tests/test_import_layers.py).

Several machines: every machine runs the same Kedro command with the ``PREFALIGN_NUM_MACHINES``,
``PREFALIGN_MACHINE_RANK``, ``PREFALIGN_MAIN_PROCESS_IP`` and ``PREFALIGN_MAIN_PROCESS_PORT``
environment variables (``machines_from_env``); each node's training node writes its inputs to its
own work directory and starts its share of the processes, which rendezvous with machine 0
(docs/distributed.md).
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import polars as pl

import prefalign
from prefalign.core.models.checkpoint import ModelBundle, load_bundle, save_bundle
from prefalign.core.training.run import TrainingRun


def check_accelerate_config(accelerate_config: str | None, key: str = "accelerate_config") -> None:
    """The checks an accelerate config gets before any node runs: the file exists, and a DeepSpeed
    config finds deepspeed installed (it is not a project dependency: docs/distributed.md).

    Args:
        accelerate_config: the configured path (relative to the project root), or None.
        key: the parameter's name, for the message (e.g. ``reward.defaults.accelerate_config``).

    Raises:
        FileNotFoundError: the file does not exist (naming the configs in its folder).
        ValueError: a DeepSpeed config (``distributed_type: DEEPSPEED``) without deepspeed installed.
    """
    if not accelerate_config:
        return
    path = Path(accelerate_config)
    if not path.exists():
        shipped = sorted(str(p) for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise FileNotFoundError(f"{key}='{accelerate_config}' does not exist; the configs in {path.parent}/: "
                                f"{', '.join(shipped) or 'none'} (see conf/accelerate/)")
    import importlib.util

    import yaml

    settings = yaml.safe_load(path.read_text()) or {}
    if str(settings.get("distributed_type", "")).upper() == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise ValueError(f"{key}='{accelerate_config}' is a DeepSpeed config, and deepspeed is not installed: "
                         "install it beside the project (docs/distributed.md, 'DeepSpeed ZeRO-3') or use "
                         "conf/accelerate/fsdp.yaml")


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


ENV_NUM_MACHINES = "PREFALIGN_NUM_MACHINES"
ENV_MACHINE_RANK = "PREFALIGN_MACHINE_RANK"
ENV_MAIN_IP = "PREFALIGN_MAIN_PROCESS_IP"
ENV_MAIN_PORT = "PREFALIGN_MAIN_PROCESS_PORT"


@dataclass(frozen=True)
class Machines:
    """Where this machine stands in a multi-node launch (one machine: the defaults)."""

    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None  # machine 0's address, reachable from every machine
    main_process_port: int | None = None  # the same free port on every machine; None = pick one (one machine only)


def machines_from_env(env: Mapping[str, str] | None = None) -> Machines:
    """The multi-node settings from ``PREFALIGN_NUM_MACHINES``, ``PREFALIGN_MACHINE_RANK``,
    ``PREFALIGN_MAIN_PROCESS_IP`` and ``PREFALIGN_MAIN_PROCESS_PORT`` (unset: one machine).

    Args:
        env: the environment (default ``os.environ``).

    Returns:
        Machines.

    Raises:
        ValueError: naming the variable, when a count or rank is not an integer, the rank is not in
            [0, num_machines), or several machines lack the main process's address or port.
    """
    env = os.environ if env is None else env

    def integer(key: str, default: int | None) -> int | None:
        raw = env.get(key)
        if raw in (None, ""):
            return default
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{key}={raw!r} must be an integer") from None

    machines = Machines(integer(ENV_NUM_MACHINES, 1), integer(ENV_MACHINE_RANK, 0), env.get(ENV_MAIN_IP) or None,
                        integer(ENV_MAIN_PORT, None))
    if machines.num_machines < 1 or not 0 <= machines.machine_rank < machines.num_machines:
        raise ValueError(f"{ENV_MACHINE_RANK}={machines.machine_rank} must be in [0, {ENV_NUM_MACHINES}="
                         f"{machines.num_machines})")
    if machines.num_machines > 1 and (machines.main_process_ip is None or machines.main_process_port is None):
        raise ValueError(f"{ENV_NUM_MACHINES}={machines.num_machines}: set {ENV_MAIN_IP} (machine 0's address) and "
                         f"{ENV_MAIN_PORT} (a free port there) to the same values on every machine")
    return machines


def accelerate_command(module: str, work_dir: Path, num_processes: int, accelerate_config: str | None,
                       args: Sequence[str] = (), machines: Machines | None = None) -> list[str]:
    """The ``accelerate launch`` command line.

    Args:
        module: the module every process runs (``python -m``).
        work_dir: its first argument.
        num_processes: processes on ALL machines together (the world size; each machine starts
            num_processes / num_machines).
        accelerate_config: a file in conf/accelerate/, or None for torchrun + gloo/NCCL defaults.
        args: more arguments of the module.
        machines: this machine's place in a multi-node run (default: ``machines_from_env()``).

    Returns:
        The argv list.

    Raises:
        FileNotFoundError: ``accelerate_config`` names a file that does not exist.
        ValueError: ``num_processes`` is not a multiple of the number of machines.
    """
    machines = machines_from_env() if machines is None else machines
    if num_processes % machines.num_machines:
        raise ValueError(f"num_processes={num_processes} must be a multiple of {ENV_NUM_MACHINES}={machines.num_machines} "
                         "(it counts the processes of all machines together)")
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        check_accelerate_config(accelerate_config)
        cmd += ["--config_file", accelerate_config]
    else:
        # --multi_gpu selects the torchrun launcher; without CUDA the loop's Accelerator is created
        # with cpu=True and runs MULTI_CPU over gloo.
        cmd += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--num_machines", str(machines.num_machines), "--num_processes", str(num_processes),
            "--main_process_port", str(machines.main_process_port or free_port())]
    if machines.num_machines > 1:
        cmd += ["--machine_rank", str(machines.machine_rank), "--main_process_ip", machines.main_process_ip]
    return cmd + ["-m", module, str(work_dir), *args]


def run_accelerate_module(module: str, work_dir: Path, num_processes: int, accelerate_config: str | None, what: str,
                          args: Sequence[str] = (), machines: Machines | None = None) -> None:
    """Start ``module`` in ``num_processes`` processes (on all machines, see ``accelerate_command``).

    Args:
        module: the module every process runs.
        work_dir: its first argument.
        num_processes: on all machines together.
        accelerate_config: a conf/accelerate/ file or None.
        what: names the run in the error message.
        args: more arguments of the module.
        machines: None = ``machines_from_env()``.

    Raises:
        RuntimeError: the children exited non-zero (the message carries their stderr's tail).
    """
    env = dict(os.environ)
    src = str(Path(prefalign.__file__).resolve().parents[1])  # the project may not be pip-installed
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = accelerate_command(module, work_dir, num_processes, accelerate_config, args, machines)
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
    machines: Machines | None = None,
) -> TrainingRun:
    """Run ``entry(namespace, args, frames, bundles, tokenizers)`` in ``num_processes`` processes.

    Args:
        entry: ``module:function`` of the training entry point every process calls
            (``prefalign.core.objectives.train_objective:train_objective``); it returns a TrainingRun.
        namespace, args, frames, bundles, tokenizers: its arguments (core/objectives/train.train_objective).
        work_dir: exchange folder (inputs/, result/), one per machine.
        num_processes: > 1, on all machines together (the world size).
        accelerate_config: an accelerate config file, or None for the defaults (:func:`accelerate_command`).
        machines: this machine's place in a multi-node run (default: ``machines_from_env()``, one
            machine when unset).

    Returns:
        This machine's main process's TrainingRun (the same model on every machine; metrics carry
        ``num_processes``, the world size), with its ``generations`` table and ``iteration_bundles``
        when the run has them (on-policy objectives).

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
    run_accelerate_module("prefalign.core.training.launch", work, num_processes, accelerate_config, f"{namespace} training",
                          machines=machines)
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
        entry: e.g. ``prefalign.core.objectives.train_objective:train_objective``.

    Returns:
        The function.

    Raises:
        ValueError: ``entry`` is not ``module:function``.
    """
    module, _, function = entry.partition(":")
    if not module or not function:
        raise ValueError(f"entry point {entry!r} must be 'module:function', e.g. prefalign.core.objectives.train_objective:train_objective")
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
    write, num_processes = state.is_local_main_process, state.num_processes
    state.wait_for_everyone()
    # transformers' save_pretrained writes only on global rank 0 while a process group exists; every
    # machine's main process writes its own copy of the (identical) trained model, so the group is
    # closed first: training is over
    state.destroy_process_group()
    if write:  # one writer per machine: each machine's node reads its own work_dir
        result = work / "result"
        save_bundle(run.bundle, result / "model")
        run.training_curve.write_parquet(result / "training_curve.parquet")
        if run.generations is not None:
            run.generations.write_parquet(result / "generations.parquet")
        for name, iteration in run.iteration_bundles.items():
            save_bundle(iteration, result / "iteration_bundles" / name)
        (result / "iteration_bundles.json").write_text(json.dumps(list(run.iteration_bundles)))  # in their order
        (result / "metrics.json").write_text(json.dumps({**run.metrics, "num_processes": num_processes}))


if __name__ == "__main__":
    main(sys.argv[1])
