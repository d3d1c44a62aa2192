"""Distributed training on CPU (gloo) against one process: the numbers behind tests/training/test_distributed.py.

Prints, per setup and objective (reward BT, reward GPM, DPO; tiny models from config, 4 steps of
global batch 2, clipping at 0.5 active): the largest |difference| of the per-step train loss, grad
norm, validation loss and final weights against one process, and each launch's wall time.

Setups: 2-process DDP (accelerate launch, torchrun defaults); 2-process FSDP2
(conf/accelerate/fsdp.yaml: the loop's fully_shard path); FSDP2 DPO resumed after process 1 was
SIGKILLed right after its step-2 sharded checkpoint (vs the uninterrupted FSDP2 run and vs one
process); two launchers as two machines (machine_rank 0 and 1, rendezvous on 127.0.0.1, one
process each) through the Kedro node's launcher, reward BT on the toy pairs, vs one process.

    python benchmarks/distributed_equality.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
os.chdir(ROOT)  # the workers are imported as tests.training.distributed_worker
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from prefalign.core.training.launch import Machines, free_port, run_accelerate_module  # noqa: E402
from tests.training.distributed_worker import OBJECTIVES, run_objective  # noqa: E402
from tests.training.test_distributed import FSDP, WORKER, max_differences, node_runs  # noqa: E402


def row(setup: str, objective: str, diff: dict, seconds: float | None) -> None:
    wall = f"{seconds:8.1f}" if seconds is not None else f"{'':>8}"
    print(f"{setup:<28}{objective:<12}{diff['loss']:>11.2e}{diff.get('grad_norm', float('nan')):>11.2e}"
          f"{diff.get('val_loss', float('nan')):>11.2e}{diff['weights']:>11.2e}{wall}", flush=True)


def main() -> int:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = {name: run_objective(name, tmp / "one" / name) for name in OBJECTIVES}
        print(f"{'setup':<28}{'objective':<12}{'loss':>11}{'grad norm':>11}{'val loss':>11}{'weights':>11}{'wall s':>8}")
        t0 = time.perf_counter()
        run_accelerate_module(WORKER, tmp, 2, None, "DDP", ["run"])
        seconds = time.perf_counter() - t0
        ddp = torch.load(tmp / "result_run.pt", weights_only=False)["results"]
        for name in OBJECTIVES:
            row("DDP 2 processes", name, max_differences(ddp[name], one[name]), seconds)
        fsdp_dir = tmp / "fsdp"
        fsdp_dir.mkdir()
        t0 = time.perf_counter()
        try:
            run_accelerate_module(WORKER, fsdp_dir, 2, FSDP, "FSDP2", ["kill", *OBJECTIVES])
        except RuntimeError as error:
            assert "SIGKILL" in str(error)
        seconds = time.perf_counter() - t0
        fsdp = torch.load(fsdp_dir / "result_run.pt", weights_only=False)["results"]
        for name in OBJECTIVES:
            row("FSDP2 2 processes", name, max_differences(fsdp[name], one[name]), seconds)
        t0 = time.perf_counter()
        run_accelerate_module(WORKER, fsdp_dir, 2, FSDP, "FSDP2 resume", ["resume", "dpo"])
        seconds = time.perf_counter() - t0
        resumed = torch.load(fsdp_dir / "result_resume.pt", weights_only=False)["results"]["dpo"]
        row("FSDP2 killed+resumed vs run", "dpo", max_differences(resumed, fsdp["dpo"]), seconds)
        row("FSDP2 killed+resumed vs 1", "dpo", max_differences(resumed, one["dpo"]), None)

        port = free_port()
        t0 = time.perf_counter()  # includes the one-process reference run of node_runs
        reference, node_run_list = node_runs(tmp, [Machines(2, rank, "127.0.0.1", port) for rank in (0, 1)])
        seconds = time.perf_counter() - t0
        runs = dict(enumerate(node_run_list))
        ref_curve, ref_weights = reference.training_curve["train_loss"].to_list(), reference.bundle.model.state_dict()
        for rank in (0, 1):
            run = runs[rank]
            weights = run.bundle.model.state_dict()
            diff = {"loss": max(abs(a - b) for a, b in zip(run.training_curve["train_loss"].to_list(), ref_curve, strict=True)),
                    "val_loss": abs(run.metrics["val_loss"] - reference.metrics["val_loss"]),
                    "weights": max(float((weights[k] - w).abs().max()) for k, w in ref_weights.items())}
            row(f"2 machines, node {rank}", "reward_bt", diff, seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
