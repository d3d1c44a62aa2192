"""DeepSpeed ZeRO-3 on CPU (DeepSpeed's CPU accelerator, gloo) equals one process with the same global batch.

conf/accelerate/deepspeed_zero3.yaml as shipped (its bf16 is overridden by training.mixed_precision,
``no`` on CPU), 2 processes, through the loop's DeepSpeed path (core/training/zero3.py):

- reward BT, reward GPM and DPO (also with LoRA on a frozen base, and with 2 accumulated micro-batches
  of 1 pair: process 1's shares empty): every step's loss and grad norm (clipping at 0.5 active,
  done by DeepSpeed), the validation losses and the final gathered fp32 weights against one process
  (the same tolerances as DDP and FSDP2 in test_distributed.py);
- checkpoint (DeepSpeed's per-rank model and optimizer shards, via accelerate's save_state), SIGKILL
  of process 1 after it, resume: the same curve and weights as the uninterrupted run;
- the Kedro node's launcher (``run_in_subprocesses``) with the config: reward BT on the toy pairs, on
  one machine, and as two machines on this one (two launchers with machine_rank 0 and 1, one process
  each, rendezvous on 127.0.0.1: deepspeed_multinode_launcher standard, torchrun on each node).

deepspeed is not a project dependency (CI does not install it): without it these tests skip. To run
them: ``pip install --target <dir> deepspeed hjson ninja py-cpuinfo msgpack einops --no-deps`` and put
<dir> on PYTHONPATH (docs/distributed.md; DeepSpeed compiles its small shared-memory op with the
system C++ compiler on first use).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed", reason="deepspeed is not installed (not a project dependency; docs/distributed.md)")

from prefalign.core.training.launch import Machines, free_port, run_accelerate_module  # noqa: E402
from tests.training.distributed_worker import KILL_AFTER_STEP, OBJECTIVES  # noqa: E402
from tests.training.test_distributed import (  # noqa: E402,F401 (one_process is a fixture)
    TOL,
    WORKER,
    assert_equal_runs,
    assert_node_run_equals,
    max_differences,
    node_runs,
    one_process,
)

ROOT = Path(__file__).resolve().parents[2]
ZERO3 = str(ROOT / "conf" / "accelerate" / "deepspeed_zero3.yaml")


@pytest.fixture(scope="module")
def zero3_runs(tmp_path_factory):
    """One ZeRO-3 launch: the uninterrupted runs of every objective, then a DPO run whose process 1 is
    SIGKILLed right after its step-2 checkpoint (so the launch fails)."""
    work = tmp_path_factory.mktemp("zero3")
    with pytest.raises(RuntimeError, match="SIGKILL"):
        run_accelerate_module(WORKER, work, 2, ZERO3, "ZeRO-3 test", ["kill", *OBJECTIVES])
    return work


@pytest.mark.slow
def test_two_process_zero3_equals_one_process(zero3_runs, one_process):
    saved = torch.load(zero3_runs / "result_run.pt", weights_only=False)
    assert saved["num_processes"] == 2 and saved["deepspeed"] and not saved["fsdp"]
    assert_equal_runs(saved["results"], one_process)


@pytest.mark.slow
def test_zero3_resume_after_kill_equals_uninterrupted_run(zero3_runs, one_process):
    checkpoint = zero3_runs / "out_kill_dpo" / "checkpoints" / f"step_{KILL_AFTER_STEP:08d}"
    # DeepSpeed's checkpoint: each process wrote its own partition of the weights and optimizer state
    assert sorted(p.name for p in (checkpoint / "pytorch_model").glob("*_optim_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    run_accelerate_module(WORKER, zero3_runs, 2, ZERO3, "ZeRO-3 resume", ["resume", "dpo"])
    saved = torch.load(zero3_runs / "result_resume.pt", weights_only=False)
    resumed = saved["results"]["dpo"]
    assert saved["deepspeed"] and resumed["resumed_from_step"] == KILL_AFTER_STEP
    uninterrupted = torch.load(zero3_runs / "result_run.pt", weights_only=False)["results"]["dpo"]
    diff = max_differences(resumed, uninterrupted)
    assert diff["loss"] <= TOL and diff["weights"] <= 1e-6, diff
    assert_equal_runs({"dpo": resumed}, one_process, ["dpo"])


@pytest.mark.slow
def test_node_launcher_with_the_zero3_config_equals_one_process(tmp_path):
    """The Kedro node's path: run_in_subprocesses starts 2 processes with conf/accelerate/deepspeed_zero3.yaml."""
    one, (run,) = node_runs(tmp_path, [Machines()], ZERO3)
    assert_node_run_equals(run, one)


@pytest.mark.slow
def test_two_machines_with_the_zero3_config_equal_one_process(tmp_path):
    """Two launchers as two nodes (machine_rank 0 and 1, one process each, rendezvous on 127.0.0.1)."""
    port = free_port()
    one, runs = node_runs(tmp_path, [Machines(2, rank, "127.0.0.1", port) for rank in (0, 1)], ZERO3)
    for run in runs:  # each node's run gets the (identical) trained model back
        assert_node_run_equals(run, one)
