"""Run a module under ``accelerate launch`` as a subprocess: the one launcher of every objective.

A training node writes its inputs to ``work_dir``, calls :func:`run_accelerate_module`, and reads
the main process's result back from ``work_dir``; Kedro itself runs once. The module's ``main``
receives ``work_dir`` as its only argument.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import prefalign


def free_port() -> int:
    # Several trainings may share a machine: never assume accelerate's default port is free.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_command(module: str, work_dir: Path, num_processes: int, accelerate_config: str | None) -> list[str]:
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
    """Start ``module`` in ``num_processes`` processes; raise with the children's stderr if it fails."""
    env = dict(os.environ)
    src = str(Path(prefalign.__file__).resolve().parents[1])  # the project may not be pip-installed
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = accelerate_command(module, work_dir, num_processes, accelerate_config)
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"multi-process {what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
