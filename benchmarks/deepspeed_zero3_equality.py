"""DeepSpeed ZeRO-3 on CPU (DeepSpeed's CPU accelerator, gloo) against one process: the numbers behind
tests/training/test_zero3.py.

Prints the versions, then per setup and objective (reward BT, reward GPM, DPO, DPO with LoRA, DPO
with 2 accumulated micro-batches; tiny models from config, 4 steps of global batch 2, clipping at
0.5 active): the largest |difference| of the per-step train loss, grad norm, validation loss and
final weights against one process, and each launch's wall time.

Setups: 2 processes with conf/accelerate/deepspeed_zero3.yaml as shipped (its bf16 is overridden
by training.mixed_precision, ``no`` on CPU); that DPO run resumed after process 1 was SIGKILLed
right after its step-2 checkpoint (vs the uninterrupted ZeRO-3 run and vs one process); the Kedro
node's launcher (run_in_subprocesses) with the config, reward BT on the toy pairs, vs one process,
on one machine and as two machines on this one (machine_rank 0 and 1, one process each,
rendezvous on 127.0.0.1; wall time includes the one-process reference run).

deepspeed is not a project dependency: install it beside the environment and put it on the path,
e.g.

    pip install --target ../ds_pkgs --no-deps deepspeed hjson ninja py-cpuinfo msgpack einops
    PYTHONPATH=../ds_pkgs python benchmarks/deepspeed_zero3_equality.py
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
from tests.training.test_distributed import WORKER, max_differences  # noqa: E402

ZERO3 = str(ROOT / "conf" / "accelerate" / "deepspeed_zero3.yaml")


def row(setup: str, objective: str, diff: dict, seconds: float | None) -> None:
    wall = f"{seconds:8.1f}" if seconds is not None else f"{'':>8}"
    print(f"{setup:<30}{objective:<12}{diff['loss']:>11.2e}{diff.get('grad_norm', float('nan')):>11.2e}"
          f"{diff.get('val_loss', float('nan')):>11.2e}{diff['weights']:>11.2e}{wall}", flush=True)


def main() -> int:
    try:
        import deepspeed
    except ImportError:
        print("deepspeed is not importable: install it beside the environment (see this file's docstring)")
        return 1
    import accelerate
    import transformers

    print(f"deepspeed {deepspeed.__version__}, torch {torch.__version__}, accelerate {accelerate.__version__}, "
          f"transformers {transformers.__version__}")
    torch.set_num_threads(1)
    free_port_once = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = {name: run_objective(name, tmp / "one" / name) for name in OBJECTIVES}
        print(f"{'setup':<30}{'objective':<12}{'loss':>11}{'grad norm':>11}{'val loss':>11}{'weights':>11}{'wall s':>8}")
        work = tmp / "zero3"
        work.mkdir()
        t0 = time.perf_counter()
        try:
            run_accelerate_module(WORKER, work, 2, ZERO3, "ZeRO-3", ["kill", *OBJECTIVES])
        except RuntimeError as error:
            assert "SIGKILL" in str(error), error
        seconds = time.perf_counter() - t0
        saved = torch.load(work / "result_run.pt", weights_only=False)
        assert saved["deepspeed"] and saved["num_processes"] == 2, {k: v for k, v in saved.items() if k != "results"}
        for name in OBJECTIVES:
            row("ZeRO-3, 2 processes", name, max_differences(saved["results"][name], one[name]), seconds)
        t0 = time.perf_counter()
        run_accelerate_module(WORKER, work, 2, ZERO3, "ZeRO-3 resume", ["resume", "dpo"])
        seconds = time.perf_counter() - t0
        resumed = torch.load(work / "result_resume.pt", weights_only=False)["results"]["dpo"]
        row("ZeRO-3 killed+resumed vs run", "dpo", max_differences(resumed, saved["results"]["dpo"]), seconds)
        row("ZeRO-3 killed+resumed vs 1", "dpo", max_differences(resumed, one["dpo"]), None)

        from tests.training.test_zero3 import node_runs  # imports deepspeed's test module only once it is there

        for setup, machines in (("ZeRO-3, node launcher", [Machines()]),
                                ("ZeRO-3, 2 machines", [Machines(2, rank, "127.0.0.1", free_port_once) for rank in (0, 1)])):
            t0 = time.perf_counter()
            reference, runs = node_runs(tmp / setup.replace(" ", "_").replace(",", ""), machines)
            seconds = time.perf_counter() - t0  # includes the one-process reference run
            ref_weights, ref_curve = reference.bundle.model.state_dict(), reference.training_curve["train_loss"].to_list()
            for rank, run in enumerate(runs):
                weights, curve = run.bundle.model.state_dict(), run.training_curve["train_loss"].to_list()
                diff = {"loss": max(abs(a - b) for a, b in zip(curve, ref_curve, strict=True)),
                        "val_loss": abs(run.metrics["val_loss"] - reference.metrics["val_loss"]),
                        "weights": max(float((weights[k] - w).abs().max()) for k, w in ref_weights.items())}
                row(setup + (f", node {rank}" if len(runs) > 1 else ""), "reward_bt", diff, seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
