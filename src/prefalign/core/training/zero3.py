"""DeepSpeed ZeRO-3 for the training loop (conf/accelerate/deepspeed_zero3.yaml; docs/distributed.md).

``accelerate launch --config_file conf/accelerate/deepspeed_zero3.yaml`` sets
``ACCELERATE_USE_DEEPSPEED=true`` in every process; the loop then hands the model and its AdamW to
DeepSpeed through ``accelerator.prepare`` and DeepSpeed shards parameters, gradients and optimizer
state (ZeRO stage 3). The loop stays the owner of the step (docs/methods.md s4, "One step, one
normaliser"): it fills DeepSpeed's micro-batch size, accumulation count and clipping threshold
from its own ``training`` block, runs each micro-batch's backward without DeepSpeed's 1/accumulation
rescaling (its losses are already divided by the step's totals), and marks the last micro-batch as
the accumulation boundary, where DeepSpeed clips and steps. The learning-rate schedule stays the
loop's (a LambdaLR on the same AdamW DeepSpeed steps). Checkpoints go through
``accelerator.save_state`` (DeepSpeed's per-rank model and optimizer shards). At the end the full
fp32 weights are gathered one parameter at a time into a plain copy of the model on every process.

On CPU (DeepSpeed's CPU accelerator, ``DS_ACCELERATOR=cpu`` or auto-detected without CUDA) the
processes talk over gloo; that is how the tests run it (tests/training/test_zero3.py).
"""

from __future__ import annotations

import os
from typing import Any

import torch

# DeepSpeed config keys the loop fills from its own settings (``configure``); the accelerate config leaves them unset
LOOP_OWNED = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")


def deepspeed_requested() -> bool:
    """Whether this process was launched with a DeepSpeed accelerate config (``ACCELERATE_USE_DEEPSPEED=true``).

    Returns:
        True under ``accelerate launch --config_file conf/accelerate/deepspeed_zero3.yaml``.
    """
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def process_group_settings() -> dict[str, Any]:
    """The ``cpu`` flag and process-group ``backend`` this process's accelerate state must be created with.

    accelerate selects DeepSpeed only when ``cpu`` is False; without CUDA it then knows no backend
    and would fall back to one process, so gloo is named (DeepSpeed's CPU accelerator talks gloo
    when oneCCL is absent).

    Returns:
        ``{"cpu": bool, "backend": str | None}``: under DeepSpeed ``cpu=False`` and ``gloo`` without
        CUDA (None = accelerate's default, NCCL); otherwise ``cpu`` = no CUDA and backend None.
    """
    if deepspeed_requested():
        return {"cpu": False, "backend": None if torch.cuda.is_available() else "gloo"}
    return {"cpu": not torch.cuda.is_available(), "backend": None}


def configure(deepspeed_config: dict[str, Any], micro_batch_size: int, accumulation_steps: int,
              max_grad_norm: float | None) -> dict[str, Any]:
    """Fill the DeepSpeed config's loop-owned keys (``LOOP_OWNED``) from the loop's settings, in place.

    A key the accelerate config leaves unset (``auto``) takes the loop's value; a key it sets must
    agree with it, so the run never clips or accumulates differently from what ``training`` says.

    Args:
        deepspeed_config: accelerate's ``DeepSpeedPlugin.deepspeed_config`` (modified in place).
        micro_batch_size: examples per process per micro-batch (the largest share; DeepSpeed only
            logs it and checks ``train_batch_size`` = it x accumulation x processes).
        accumulation_steps: ``training.gradient_accumulation_steps``.
        max_grad_norm: ``training.max_grad_norm``; None (no clipping) is DeepSpeed's 0.0.

    Returns:
        ``deepspeed_config``.

    Raises:
        ValueError: the accelerate config sets ``gradient_accumulation_steps`` or ``gradient_clipping``
            to another value than the training block; the message names both and the fix.
    """
    wanted = {"train_micro_batch_size_per_gpu": int(micro_batch_size), "gradient_accumulation_steps": int(accumulation_steps),
              "gradient_clipping": 0.0 if max_grad_norm is None else float(max_grad_norm)}
    training = {"gradient_accumulation_steps": ("training.gradient_accumulation_steps", accumulation_steps),
                "gradient_clipping": ("training.max_grad_norm", max_grad_norm)}
    for key, value in wanted.items():
        current = deepspeed_config.get(key, "auto")
        if key in training and current not in ("auto", None) and float(current) != float(value):
            name, given = training[key]
            raise ValueError(f"the accelerate config's deepspeed_config sets {key}={current!r} but {name} is "
                             f"{given!r}; remove {key} from the accelerate config (the loop fills it from {name}) "
                             "or make them equal")
        deepspeed_config[key] = value
    deepspeed_config["train_batch_size"] = "auto"  # accelerate computes it from the three values above
    return deepspeed_config


def backward(engine: Any, loss: torch.Tensor, last_micro_batch: bool) -> None:
    """One micro-batch's backward under DeepSpeed; on the step's last micro-batch also DeepSpeed's
    clip + optimizer step + zero_grad.

    Args:
        engine: the ``DeepSpeedEngine`` ``accelerator.prepare`` returned as the model.
        loss: the micro-batch's step-normalised loss (already over the step's totals: not rescaled
            by 1/accumulation here).
        last_micro_batch: True on the step's last micro-batch (DeepSpeed's accumulation boundary).
    """
    engine.set_gradient_accumulation_boundary(last_micro_batch)
    engine.backward(loss, scale_wrt_gas=False)
    if last_micro_batch:
        engine.step()


def global_grad_norm(engine: Any) -> float:
    """The total gradient norm of the last step, before clipping (as ``clip_grad_norm_`` returns it).

    Args:
        engine: the ``DeepSpeedEngine`` after ``step()``.

    Returns:
        The norm (over all shards and processes).
    """
    norm = engine.get_global_grad_norm()
    return float(norm.item()) if isinstance(norm, torch.Tensor) else float(norm)


def full_parameter(param: torch.nn.Parameter) -> torch.Tensor:
    """The full weights of one ZeRO-3 parameter (a collective: every process calls it, in the same order).

    Args:
        param: a parameter of the DeepSpeed engine's module.

    Returns:
        The trained fp32 master weights for a trainable parameter (``safe_get_full_fp32_param``),
        the gathered module weights for a frozen one; a detached copy on the parameter's device.
    """
    from deepspeed import zero
    from deepspeed.utils import safe_get_full_fp32_param

    if param.requires_grad:
        full = safe_get_full_fp32_param(param)
        if full is not None:
            return full.detach().clone()
    with zero.GatheredParameters([param], modifier_rank=None):
        return param.detach().clone()


def release_hf_config() -> None:
    """Forget the ZeRO-3 config accelerate registers with transformers when it creates the Accelerator.

    While it is registered, every transformers model built in this process is built under
    ``deepspeed.zero.Init`` (partitioned at construction, whatever ``zero3_init_flag`` says): a
    second training in the same process, or a model the caller builds after ``make_accelerator``,
    would come out sharded before the loop sees it. The loop's models are built before DeepSpeed
    starts and sharded by ``accelerator.prepare``, so the registration is dropped.
    """
    try:
        from transformers.integrations import unset_hf_deepspeed_config
    except ImportError:  # pragma: no cover - transformers always has it in our supported versions
        return
    unset_hf_deepspeed_config()
