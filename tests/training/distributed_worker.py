"""Run under ``accelerate launch`` (2 CPU processes, gloo; DDP, FSDP2 with conf/accelerate/fsdp.yaml, or
DeepSpeed ZeRO-3 with conf/accelerate/deepspeed_zero3.yaml):
a few optimizer steps of reward BT, reward GPM and DPO on the tiny models of grad_split.py; the
main process saves every step's loss and grad norm, the validation losses and the final (gathered)
weights to ``<work_dir>/result.pt``.

    python -m tests.training.distributed_worker <work_dir> run [objectives...]
    python -m tests.training.distributed_worker <work_dir> kill [objectives...]  # run, then DPO whose rank 1 is SIGKILLed after the step-2 checkpoint
    python -m tests.training.distributed_worker <work_dir> resume dpo            # that DPO run again: resumes from its checkpoint

``run_objective`` is also called in one process by the tests, for the reference.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
from pathlib import Path

import torch

from prefalign.core.models.backbone import prepare_for_training
from prefalign.core.models.lm_head import set_logprob_chunk_tokens
from prefalign.core.training import loop, zero3
from tests.training.grad_split import setup

# name -> (objective, pairs per global micro-batch, accumulation steps); "dpo_lora": LoRA adapters
# (r 4, all linear layers) on a frozen base, as the multi-GPU 8B setting; "dpo_accum": a step of 2
# micro-batches of 1 pair, so process 1's share of each is empty (a stand-in weighted 0) and the
# gradient sync is skipped on the first micro-batch (DDP no_sync / FSDP2 set_requires_gradient_sync)
VARIANTS = {"reward_bt": ("reward_bt", 2, 1), "reward_gpm": ("reward_gpm", 2, 1), "dpo": ("dpo", 2, 1),
            "dpo_lora": ("dpo", 2, 1), "dpo_accum": ("dpo", 1, 2), "dpo_chunked": ("dpo", 2, 1)}
# "dpo_chunked": LM-head chunks of 4 positions, so the fused chunked log-probs (core/models/lm_head.py)
# run over several chunks (the tiny pairs' response tokens fit one default chunk of 256)
CHUNK_TOKENS = 4
LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": "all-linear"}
OBJECTIVES = list(VARIANTS)
# 4 pairs in global batches of 2 (one pair per process), 4 steps = 2 epochs; clipping at 0.5 is active
CONFIG = loop.TrainConfig(max_steps=4, learning_rate=1e-2, lr_schedule="linear", warmup_steps=1, max_grad_norm=0.5,
                          eval_every=2, checkpoint_every=0, progress_bar=False, seed=3)
KILL_AFTER_STEP = 2


def run_objective(objective: str, output_dir: str | Path, checkpoint_every: int = 0) -> dict:
    """Train the variant ``objective`` (VARIANTS); the per-step rows and the final weights (CPU, fp32)."""
    name, batch_size, accum = VARIANTS[objective]
    model, batches, loss_fn = setup(name, 4)
    if objective.endswith("_chunked"):
        set_logprob_chunk_tokens(model, CHUNK_TOKENS)
    if objective.endswith("_lora"):
        model = prepare_for_training(model, {"lora": LORA})
    config = loop.TrainConfig(**{**CONFIG.__dict__, "checkpoint_every": checkpoint_every, "gradient_accumulation_steps": accum})
    result = loop.train(copy.deepcopy(model), batches(batch_size), batches(4), loss_fn, config, output_dir)
    return {"history": result.history, "resumed_from_step": result.resumed_from_step,
            "weights": {k: v.detach().float().cpu().clone() for k, v in result.model.state_dict().items()}}


def _kill_rank_1_after_checkpoint() -> None:
    save = loop.save_checkpoint

    def save_then_die(accelerator, output_dir, step, *args, **kwargs):
        path = save(accelerator, output_dir, step, *args, **kwargs)
        if step == KILL_AFTER_STEP and accelerator.process_index == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # a crashed process: the launcher then stops the other one
        return path

    loop.save_checkpoint = save_then_die


def _partition_every_parameter() -> None:
    """Under DeepSpeed: ZeRO-3 may keep parameters under ``stage3_param_persistence_threshold``
    elements (default 1e5, more than any parameter of these tiny models) whole on every process; 0
    partitions them all, as a real model's large ones are, so the runs go through ZeRO-3's gather and
    release hooks."""
    configure = zero3.configure

    def configure_without_persistence(deepspeed_config, *args, **kwargs):
        deepspeed_config.setdefault("zero_optimization", {})["stage3_param_persistence_threshold"] = 0
        return configure(deepspeed_config, *args, **kwargs)

    zero3.configure = configure_without_persistence


def main(work_dir: str, mode: str, objectives: list[str]) -> None:
    """``run``: train ``objectives`` (default all) -> result_run.pt. ``kill``: the same, then a DPO run
    with checkpoints every 2 steps in ``out_kill_dpo`` whose process 1 dies after step 2.
    ``resume``: that run of ``objectives[0]`` again (it resumes) -> result_resume.pt."""
    from accelerate import PartialState

    torch.set_num_threads(1)
    work = Path(work_dir)
    # the cpu flag and backend make_accelerator uses: the first PartialState fixes the process group
    # (cpu=True without CUDA, else 1 process; under DeepSpeed cpu=False and gloo)
    state = PartialState(**zero3.process_group_settings())
    _partition_every_parameter()

    def save(results: dict, name: str) -> None:
        if state.is_main_process:
            torch.save({"num_processes": state.num_processes, "fsdp": loop.use_fsdp2(state.num_processes),
                        "deepspeed": state.distributed_type.value == "DEEPSPEED",
                        "results": results}, work / name)
        state.wait_for_everyone()

    try:
        if mode == "resume":
            name = objectives[0]
            save({name: run_objective(name, work / f"out_kill_{name}", KILL_AFTER_STEP)}, "result_resume.pt")
            return
        save({name: run_objective(name, work / f"out_{name}") for name in objectives or OBJECTIVES}, "result_run.pt")
        if mode == "kill":
            _kill_rank_1_after_checkpoint()
            run_objective("dpo", work / "out_kill_dpo", KILL_AFTER_STEP)
    finally:
        # as core/training/launch.py does: a gloo group left to interpreter shutdown can abort a
        # process ("terminate called without an active exception"; CI, test_two_process_ddp, once)
        state.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
