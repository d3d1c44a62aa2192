"""Master-weight precision of training (``training.fp32_master_weights``, on by default).

bf16 keeps 8 significant bits: a weight w can only move in steps of one ULP, 2^floor(log2|w|) * 2^-7,
and an update smaller than half a ULP rounds away. AdamW moves each weight by about the learning
rate per step (its normalised update m / sqrt(v) is of order 1), so on bf16 weights of a
pretrained model's scale (median |w| ~ 0.01-0.02, half ULP ~ 3e-5-6e-5) a DPO learning rate of
5e-7 changes almost nothing (measured on a tiny model in the `gpu` settings: 1.06% of the weights
moved after one step, against 100% with fp32 master weights).

The default therefore keeps every trainable weight in fp32 (the optimizer updates fp32 values)
and leaves the compute precision to ``training.mixed_precision`` (bf16 autocast on GPUs). Frozen
weights (a LoRA base, frozen lower layers) keep their dtype: they are never updated. A user who
asks for pure bf16 (``fp32_master_weights: false``) gets a warning when the learning rate is below
what bf16 can represent at the weights' scale.

The passes that give the constants a policy is trained against (the reference log-probs, GPO's
log pi_t) run under the same compute precision as the training forward (:func:`compute_precision`):
an fp32 reference against a bf16-autocast policy makes h != 0 at policy = reference (measured on a
1-layer model: |DPO loss - ln 2| 7.8e-5 against 1.7e-6 with the same precision on both sides).
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractContextManager, nullcontext

import torch

log = logging.getLogger(__name__)

LOW_PRECISION = (torch.bfloat16, torch.float16)
MEDIAN_SAMPLE = 1_000_000  # weights read to estimate the median |w| (an evenly spaced sample of big models)


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_mixed_precision(setting: str) -> str:
    """``training.mixed_precision`` with ``auto`` resolved: bf16 on a CUDA device with bf16 support, else no.

    Args:
        setting: auto | no | bf16 | fp16 (anything but ``auto`` is returned as is).

    Returns:
        ``no``, ``bf16`` or ``fp16`` (or ``setting`` unchanged when it is not ``auto``).
    """
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def compute_precision(device: torch.device | str, mixed_precision: str = "no") -> AbstractContextManager:
    """The autocast context the training forward runs under, for passes outside the loop.

    Args:
        device: where the model runs.
        mixed_precision: ``training.mixed_precision`` (auto | no | bf16 | fp16).

    Returns:
        ``torch.autocast`` of the resolved dtype on ``device``'s type, or a no-op context for ``no``.
    """
    resolved = resolve_mixed_precision(mixed_precision)
    if resolved == "no":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AUTOCAST_DTYPES[resolved])


def use_fp32_master_weights(model: torch.nn.Module) -> list[str]:
    """Cast every trainable bf16 / fp16 parameter of ``model`` to fp32, in place (before the optimizer is built).

    Args:
        model: the model about to be trained; parameters with ``requires_grad`` False are left as they are.

    Returns:
        The names of the parameters cast (empty when every trainable weight was fp32 already).
    """
    cast = []
    for name, param in model.named_parameters():
        if param.requires_grad and param.dtype in LOW_PRECISION:
            param.data = param.data.float()
            cast.append(name)
    if cast:
        log.info("training.fp32_master_weights: %d trainable low-precision tensors kept in fp32 (compute: mixed_precision)", len(cast))
    return cast


def half_ulp(value: float, dtype: torch.dtype) -> float:
    """Half the spacing of ``dtype`` numbers at ``value``: the smallest change of ``value`` that survives rounding.

    Args:
        value: a magnitude > 0.
        dtype: a floating dtype (bf16: 8 significant bits, eps 2^-7).

    Returns:
        2^floor(log2 value) * eps(dtype) / 2.
    """
    return 2.0 ** math.floor(math.log2(value)) * torch.finfo(dtype).eps / 2


def median_abs_weight(params: list[torch.Tensor]) -> float:
    """The median |w| over ``params`` (an evenly spaced sample of about MEDIAN_SAMPLE values, read as fp32).

    Args:
        params: weight tensors of any shapes (flattened and concatenated).

    Returns:
        The median absolute value, in the weights' own units.
    """
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    step = max(1, flat.numel() // MEDIAN_SAMPLE)
    return float(flat[::step].float().abs().median())


def warn_if_updates_round_away(model: torch.nn.Module, learning_rate: float) -> str | None:
    """Warn when pure low-precision training cannot represent updates of the learning rate's size.

    AdamW's per-step change of a weight is about ``learning_rate`` (module doc). When that is below
    half a ULP of the median trainable |w| in the weights' dtype, most updates round to nothing.

    Args:
        model: the model about to be trained.
        learning_rate: the peak learning rate (warmup is smaller still).

    Returns:
        The warning text, or None when every trainable weight is fp32 or the rate is representable.
    """
    low = [p for p in model.parameters() if p.requires_grad and p.dtype in LOW_PRECISION]
    if not low:
        return None
    dtype = low[0].dtype
    median = median_abs_weight(low)
    if median == 0 or learning_rate >= half_ulp(median, dtype):
        return None
    message = (
        f"training.fp32_master_weights is false and the trainable weights are {dtype}: learning_rate={learning_rate:g} "
        f"is below half a ULP ({half_ulp(median, dtype):.3g}) of their median |w| ({median:.3g}), so most AdamW "
        "updates (about the learning rate per step) round away and the weights barely move; set "
        "training.fp32_master_weights: true (fp32 weights, bf16 compute via mixed_precision) or raise the learning rate"
    )
    log.warning(message)
    return message
