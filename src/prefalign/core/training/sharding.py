"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the training loop, on CPU (gloo) and GPU (NCCL) alike.

The loop shards the model itself when the run was started with an FSDP accelerate config
(``accelerate launch --config_file conf/accelerate/fsdp.yaml``, which sets
``ACCELERATE_USE_FSDP=true`` and ``FSDP_VERSION=2`` in every process) and more than one
process runs. accelerate's own FSDP wrapping only exists for GPUs (on CPU its state is
MULTI_CPU), so doing it here gives ONE code path that the CPU tests run and a GPU cluster runs.

- ``shard_model``: rank 0's weights are broadcast (as DDP does), every transformer layer
  (the model's ``_no_split_modules``, accelerate's TRANSFORMER_BASED_WRAP) and then the root get
  ``fully_shard``; it returns a skeleton of the unsharded model (parameters on the meta device,
  so it costs no memory) for ``unsharded_model``.
- Gradients: FSDP2 reduce-scatters the MEAN over processes, as DDP all-reduces it, so the loop's
  step normaliser (docs/methods.md s4) is the same for both.
- ``save_sharded`` / ``load_sharded``: every process writes its own shard of the model and the
  optimizer state with ``torch.distributed.checkpoint`` (``get_state_dict``: sharded state dicts;
  no process ever holds the full optimizer state), plus its RNG state; rank 0 the scheduler.
- ``unsharded_model``: at the end, each full parameter is all-gathered one at a time and put into
  the skeleton, so every process returns a plain module (the one the node saves).
"""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch

SHARDED_DIR = "sharded"  # torch.distributed.checkpoint folder inside a checkpoint (one .distcp file per process)
SCHEDULER_FILE = "scheduler.pt"


def fsdp2_requested() -> bool:
    """Whether this process was launched with an FSDP accelerate config (``ACCELERATE_USE_FSDP=true``).

    Returns:
        True for ``fsdp_version: 2`` (conf/accelerate/fsdp.yaml).

    Raises:
        ValueError: the config asks for FSDP version 1, or for parameter offload or FSDP activation
            checkpointing, which the loop's FSDP2 path does not implement (the message says what to use).
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return False
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise ValueError(f"FSDP_VERSION={version!r}: the training loop shards with FSDP2 only; "
                         "set fsdp_config.fsdp_version: 2 in the accelerate config (conf/accelerate/fsdp.yaml)")
    unsupported = {"FSDP_OFFLOAD_PARAMS": "fsdp_offload_params: false (for CPU offload use conf/accelerate/deepspeed_zero3.yaml)",
                   "FSDP_ACTIVATION_CHECKPOINTING": "fsdp_activation_checkpointing: false and model.gradient_checkpointing: true"}
    for key, fix in unsupported.items():
        if os.environ.get(key, "false").lower() == "true":
            raise ValueError(f"{key}=true is not supported by the loop's FSDP2 path; set {fix}")
    return True


def reshard_after_forward() -> bool:
    """``fsdp_reshard_after_forward`` of the accelerate config.

    Returns:
        True (the default: gathered layer weights freed after each forward, ZeRO-3-like) or False.
    """
    return os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() == "true"


def use_fsdp2(num_processes: int) -> bool:
    """FSDP2 in this run: requested by the launcher's config, with a process group of ``num_processes`` > 1.

    Args:
        num_processes: the accelerator's process count (world size).

    Returns:
        True when the loop must shard the model; False runs DDP (or one process) as before.
    """
    return num_processes > 1 and torch.distributed.is_available() and torch.distributed.is_initialized() and fsdp2_requested()


def layer_classes(model: torch.nn.Module) -> set[str]:
    """Class names of the transformer layers of every transformers model inside ``model``.

    Args:
        model: any module (a RewardModel's backbone or a causal LM, maybe peft-wrapped).

    Returns:
        The union of the ``_no_split_modules`` of its submodules (what accelerate's
        TRANSFORMER_BASED_WRAP wraps); empty for a model without any.
    """
    names: set[str] = set()
    for module in model.modules():
        names |= set(getattr(module, "_no_split_modules", None) or [])
    return names


def meta_skeleton(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` whose parameters are on the meta device (tied ones stay tied); buffers are copied.

    Args:
        model: the unsharded model, before FSDP2 or DeepSpeed partitions it.

    Returns:
        The copy (its parameters cost no memory), to fill with ``unsharded_model`` at the end.
    """
    memo: dict[int, object] = {}
    for param in model.parameters():  # deduplicated: a tied parameter is one object
        memo[id(param)] = torch.nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
    return copy.deepcopy(model, memo)


def shard_model(model: torch.nn.Module, device: torch.device, reshard: bool | None = None) -> torch.nn.Module:
    """Shard ``model`` in place over all processes with FSDP2.

    Args:
        model: the unwrapped model (fp32 master weights already set); moved to ``device``.
        device: this process's device (``cpu`` with gloo, ``cuda:<local rank>`` with NCCL).
        reshard: free the gathered layer weights after each forward (ZeRO-3); False keeps them
            until the backward (ZeRO-2-like, faster, more memory); None: the accelerate config's
            ``fsdp_reshard_after_forward``.

    Returns:
        The skeleton to give ``unsharded_model`` at the end (meta parameters: no memory).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    reshard = reshard_after_forward() if reshard is None else reshard
    skeleton = meta_skeleton(model)
    model.to(device)
    with torch.no_grad():  # the processes start from rank 0's weights, as DDP makes them
        for tensor in [*model.parameters(), *model.buffers()]:
            torch.distributed.broadcast(tensor.data, src=0)
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    layers = layer_classes(model)
    for module in list(model.modules()):
        if module is not model and type(module).__name__ in layers:
            fully_shard(module, mesh=mesh, reshard_after_forward=reshard)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard)
    return skeleton


def _full(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_norm(value: torch.Tensor) -> torch.Tensor:
    """A gradient norm returned by ``clip_grad_norm_`` over sharded parameters, as a plain tensor.

    Args:
        value: the total norm (a DTensor over FSDP2 parameters, or a plain tensor).

    Returns:
        The full norm over all shards (a collective for a DTensor: every process calls it).
    """
    return _full(value)


def unsharded_model(model: torch.nn.Module, skeleton: torch.nn.Module, device: torch.device,
                    gather: Callable[[torch.nn.Parameter], torch.Tensor] | None = None) -> torch.nn.Module:
    """The trained weights of the sharded ``model`` in ``skeleton`` (a collective: every process calls it).

    Args:
        model: the sharded model after training (FSDP2, or the module of a DeepSpeed ZeRO-3 engine).
        skeleton: ``meta_skeleton`` of the model before it was sharded (``shard_model``'s return value).
        device: where the returned module's weights go (one parameter is gathered at a time).
        gather: parameter -> its full weights (a collective; core/training/zero3.py ``full_parameter``
            for DeepSpeed); None = FSDP2's ``DTensor.full_tensor``.

    Returns:
        ``skeleton``, now a plain module with every process holding the full weights.

    Raises:
        RuntimeError: the two modules' parameter names differ (the model was changed after sharding).
    """
    gather = gather or (lambda param: _full(param.detach()))
    sharded = dict(model.named_parameters())
    replaced: dict[int, torch.nn.Parameter] = {}
    for name, meta in skeleton.named_parameters():
        if name not in sharded:
            raise RuntimeError(f"parameter {name} of the unsharded skeleton is missing from the sharded model")
        with torch.no_grad():
            full = gather(sharded[name]).to(device).clone()
        replaced[id(meta)] = torch.nn.Parameter(full, requires_grad=meta.requires_grad)
    for module in skeleton.modules():
        for key, param in list(module._parameters.items()):
            if param is not None and id(param) in replaced:
                module._parameters[key] = replaced[id(param)]
    return skeleton.to(device)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, rank: int) -> None:
    """Write this process's shard of the model and optimizer state, its RNG state and (rank 0) the scheduler.

    A collective: every process calls it with the same ``path``.

    Args:
        path: the checkpoint folder (``<output_dir>/checkpoints/step_<n>``).
        model: the FSDP2-sharded model.
        optimizer: its optimizer (state sharded like the parameters).
        scheduler: the learning-rate scheduler (written by rank 0 only).
        rank: this process's global rank (names its RNG file).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(path / SHARDED_DIR))
    torch.save(_rng_state(), path / f"rng_state_{rank}.pt")
    if rank == 0:
        torch.save(scheduler.state_dict(), path / SCHEDULER_FILE)


def load_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, rank: int) -> None:
    """Restore what ``save_sharded`` wrote (each process reads its own shards; a collective).

    Args:
        path: the checkpoint folder.
        model: the sharded model, built and sharded as in the run that saved it.
        optimizer: its optimizer.
        scheduler: the learning-rate scheduler.
        rank: this process's global rank (its RNG file; missing is allowed).

    Raises:
        FileNotFoundError: ``path`` holds no sharded checkpoint (e.g. one written by a DDP run:
            resume with the launcher config that wrote it).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (path / SHARDED_DIR).is_dir():
        raise FileNotFoundError(f"{path} has no {SHARDED_DIR}/ folder: it was not written by an FSDP2 run; "
                                "resume it with the accelerate config it was started with")
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(path / SHARDED_DIR))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    scheduler.load_state_dict(torch.load(path / SCHEDULER_FILE, weights_only=False))
    rng = path / f"rng_state_{rank}.pt"
    if rng.exists():
        _set_rng_state(torch.load(rng, weights_only=False))
