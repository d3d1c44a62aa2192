"""ONE training loop for every objective (reward BT/MMPO/GPM, policy SFT/DPO/MMPO/IPO/GPO).

The objective is a ``StepLoss`` (core/training/normalisation.py: summed terms divided by the
step's token and example counts), or a plain ``loss_fn(model, batch) -> (mean over the batch's
examples, metrics)``; the loop owns the rest: AdamW on fp32 master weights, warmup + schedule,
gradient accumulation and clipping, mixed precision (bf16 autocast on CUDA, none on CPU), dropout
off (``disable_dropout``), periodic validation, a progress bar (loss, tokens/s, ETA), periodic
checkpoints (model + optimizer + scheduler + RNG + step) and resume from the newest one.

One step = ``gradient_accumulation_steps`` micro-batches on each of W processes. Before the first
forward pass of a step the loop counts the step's units (tokens, examples) on every process and
sums them across processes once; each micro-batch's loss is its summed terms over those totals
(times W, because DDP averages the processes' gradients). So the loss and the gradient of a step
do not depend on how its examples are split into micro-batches and processes
(docs/methods.md s4, "One step, one normaliser").

Batches are plain objects with ``to(device)``, ``shard(rank, world_size)``, ``len()`` and
``num_tokens`` (``PairBatch`` and ``SequenceBatch`` in ``batching.py`` qualify). Each batch is a
GLOBAL batch: with W processes each takes its 1/W share, so DDP's gradient mean equals the
single-process gradient of the same batch. The batch order of epoch e is a permutation seeded
by (seed, e), a function of the step alone, so a resumed run sees exactly the batches an
uninterrupted run would have.

Distribution: DDP through accelerate (``accelerator.prepare``), or FSDP2 when the launcher's
accelerate config asks for it (conf/accelerate/fsdp.yaml): the loop then shards the model itself
with ``fully_shard``, on CPU and GPU alike, writes sharded checkpoints with
``torch.distributed.checkpoint`` and returns the gathered, unsharded model (core/training/sharding.py;
docs/distributed.md). Or DeepSpeed ZeRO-3 (conf/accelerate/deepspeed_zero3.yaml) through
``accelerator.prepare``, the loop keeping the step's normaliser, accumulation, clipping threshold
and schedule (core/training/zero3.py).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, InitProcessGroupKwargs, set_seed
from prefalign.core.models.dropout import disable_dropout
from prefalign.core.models.params import dataclass_from_params
from prefalign.core.models.precision import resolve_mixed_precision, use_fp32_master_weights, warn_if_updates_round_away
from prefalign.core.training.normalisation import Units, loss_units, step_normalised_loss
from prefalign.core.training.progress import Progress
from prefalign.core.training.memory import release_free_heap, set_malloc_mmap_threshold
from prefalign.core.training import zero3
from prefalign.core.training.sharding import (
    full_norm,
    load_sharded,
    meta_skeleton,
    save_sharded,
    shard_model,
    unsharded_model,
    use_fsdp2,
)

log = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "linear", "cosine")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
CHECKPOINT_PREFIX = "step_"
STATE_FILE = "trainer_state.json"


class Batch(Protocol):
    """What the loop needs of a batch: ``num_tokens`` (real, non-padding tokens), ``len()`` (examples)."""

    num_tokens: int

    def to(self, device: torch.device | str) -> "Batch":
        """The batch with every tensor moved to ``device``.

        Args:
            device: a torch device or its name ("cpu", "cuda:0").

        Returns:
            A batch of the same type (may be ``self`` when nothing moves).
        """
        ...

    def shard(self, rank: int, world_size: int) -> "Batch":
        """Process ``rank``'s share of this global batch.

        Args:
            rank: the process index, 0 <= rank < world_size.
            world_size: the number of processes.

        Returns:
            A batch with this process's examples (about len(self) / world_size of them).
        """
        ...

    def __len__(self) -> int: ...


# A StepLoss (core/training/normalisation.py), or a plain function returning the mean over its batch's examples.
LossFn = Callable[..., "tuple[torch.Tensor, dict[str, float | torch.Tensor]]"]


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings; ``from_dict`` fails before training, naming the bad key and what is allowed."""

    max_steps: int = 100  # optimizer steps
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "cosine"  # one of LR_SCHEDULES
    min_lr_ratio: float = 0.0  # cosine/linear decay down to learning_rate * min_lr_ratio
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0  # null disables clipping
    mixed_precision: str = "auto"  # auto = bf16 on CUDA with bf16 support, else no
    # Trainable weights are kept and updated in fp32 (bf16/fp16 ones are cast up before training);
    # compute precision is mixed_precision's. false = train them in the dtype they were loaded in
    # (pure bf16 when model.dtype is bfloat16): the run warns when the learning rate is below what
    # that dtype can represent at the weights' scale (core/models/precision.py).
    fp32_master_weights: bool = True
    # Every dropout probability set to 0 before training (nn.Dropout incl. LoRA dropout, and the
    # attention-dropout rates attention functions read from the modules): a policy's training
    # forward then equals the reference's eval-mode forward (TRL's disable_dropout; core/models/dropout.py).
    disable_dropout: bool = True
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    eval_every: int = 50  # steps; 0 = only at the end
    checkpoint_every: int = 50  # steps; 0 = never
    keep_checkpoints: int = 2
    seed: int = 0
    progress_bar: bool = True
    cpu_threads: int | None = None  # torch intra-op threads; 1 avoids oversubscription on a busy CPU; null = torch default
    # true | false | auto; auto (resolve_layout in core/training/packing.py, where the model is known): on for
    # causal decoders read at the last token, padded for encoders
    packing: bool | str = "auto"  # pair batches packed into rows without padding (core/training/packing.py)
    share_prompt: bool | str = "auto"  # one pass over a pair's common prompt (implies packing; docs/performance.md)
    cpu_malloc_mmap_threshold: int | None = None  # bytes; e.g. 65536 stops heap growth on CPU (core/training/memory.py)
    cpu_malloc_trim: bool = False  # free heap pages back to the OS after every step on CPU: lower peak RSS, ~17% slower

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "TrainConfig":
        """The ``training`` parameter block, checked by type (``dataclass_from_params``) and by value (``validate``).

        Args:
            params: the block; None = all defaults.

        Returns:
            The checked configuration.

        Raises:
            ParameterError: an unknown key or a value of the wrong type.
            ValueError: a value outside its allowed range (see ``validate``).
        """
        cfg = dataclass_from_params(cls, params, "training")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check every value's range, before any work starts.

        Raises:
            ValueError: the first invalid setting, naming the key, its value and what it must be (e.g.
                ``lr_schedule`` not in LR_SCHEDULES, ``warmup_steps`` outside [0, max_steps]).
        """
        checks = [
            ("lr_schedule", self.lr_schedule in LR_SCHEDULES, f"one of {LR_SCHEDULES}"),
            ("mixed_precision", self.mixed_precision in MIXED_PRECISION, f"one of {MIXED_PRECISION}"),
            ("max_steps", self.max_steps >= 1, "an integer >= 1"),
            ("learning_rate", self.learning_rate > 0, "a number > 0"),
            ("warmup_steps", 0 <= self.warmup_steps <= self.max_steps, f"between 0 and max_steps ({self.max_steps})"),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps >= 1, "an integer >= 1"),
            ("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0, "null or a number > 0"),
            ("eval_every", self.eval_every >= 0, "an integer >= 0"),
            ("checkpoint_every", self.checkpoint_every >= 0, "an integer >= 0"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, "an integer >= 1"),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "a number in [0, 1]"),
            ("cpu_threads", self.cpu_threads is None or self.cpu_threads >= 1, "null or an integer >= 1"),
            ("packing", self.packing in (True, False, "auto"), "true, false or auto"),
            ("share_prompt", self.share_prompt in (True, False, "auto"), "true, false or auto"),
            ("cpu_malloc_mmap_threshold", self.cpu_malloc_mmap_threshold is None or 0 <= self.cpu_malloc_mmap_threshold <= 32 * 2**20,
             "null or a byte count in [0, 33554432]"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise ValueError(f"training.{key}={getattr(self, key)!r} is invalid; it must be {allowed}")

    def lr_factor(self, step: int) -> float:
        """Multiplier of the learning rate after ``step`` optimizer steps: linear warmup, then decay.

        Warmup: (step + 1) / (warmup_steps + 1). After it, with progress
        t = (step - warmup_steps) / max(1, max_steps - warmup_steps): ``constant`` 1, ``linear``
        min_lr_ratio + (1 - min_lr_ratio) (1 - t), ``cosine`` min_lr_ratio + (1 - min_lr_ratio) (1 + cos(pi t)) / 2.

        Args:
            step: optimizer steps taken so far (0-based; what ``LambdaLR`` passes).

        Returns:
            The factor (dimensionless, in [0, 1]); the learning rate is ``learning_rate * factor``.
        """
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.lr_schedule == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
        decay = 1.0 - progress if self.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay


@dataclass
class TrainResult:
    model: torch.nn.Module  # unwrapped (no DDP wrapper), on the training device
    history: list[dict[str, float]] = field(default_factory=list)  # one row per optimizer step
    final_metrics: dict[str, float] = field(default_factory=dict)  # last validation
    steps: int = 0
    resumed_from_step: int = 0
    train_seconds: float = 0.0  # this process's wall time in the loop (excludes resumed steps)
    tokens_per_second: float = 0.0  # real (non-padding) tokens, all processes
    examples_per_second: float = 0.0


def make_accelerator(mixed_precision: str = "auto") -> Accelerator:
    """An Accelerator; re-creatable in one process (tests, notebooks) with another precision.

    Args:
        mixed_precision: ``auto`` | ``no`` | ``bf16`` | ``fp16`` (``auto`` resolved by
            core/models/precision.py ``resolve_mixed_precision``).

    Returns:
        A fresh Accelerator (CPU/gloo when CUDA is absent; DeepSpeed when the launcher's config asks
        for it, over gloo on CPU); the process group is kept.
    """
    if AcceleratorState._shared_state:  # keep the process group (PartialState), reset the rest
        AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True without CUDA: under `accelerate launch` that selects MULTI_CPU (gloo) instead of silently
    # running N independent single-process trainings (DeepSpeed needs cpu=False and names gloo instead).
    settings = zero3.process_group_settings()
    handlers = [InitProcessGroupKwargs(backend=settings["backend"])] if settings["backend"] else None
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(mixed_precision), cpu=settings["cpu"],
                              kwargs_handlers=handlers)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        zero3.release_hf_config()  # models built from now on stay plain; prepare() shards the loop's model
    return accelerator


def epoch_order(num_batches: int, seed: int, epoch: int) -> np.ndarray:
    """The batch order of one epoch: a permutation seeded by (seed, epoch), so a resumed run sees the same batches.

    Args:
        num_batches: the number of global batches per epoch.
        seed: the run's seed.
        epoch: the epoch index (0-based).

    Returns:
        An int64 array of shape [num_batches], a permutation of 0..num_batches-1.
    """
    return np.random.default_rng([seed, epoch]).permutation(num_batches)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest COMPLETE checkpoint (its state file is written last), or None.

    Args:
        output_dir: the run directory (checkpoints live in ``output_dir/checkpoints/step_XXXXXXXX``).

    Returns:
        The path of the highest-step checkpoint holding ``trainer_state.json``, or None when there is none.
    """
    root = Path(output_dir) / "checkpoints"
    done = sorted(p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).exists())
    return done[-1] if done else None


def _scalar(value: float | torch.Tensor) -> float:
    return float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)


def local_share(batch: Batch, rank: int, world: int) -> tuple[Batch, bool]:
    """This process's share of a global batch, and whether it is real.

    A short last batch may hold fewer examples than processes; a process whose share is empty gets
    the batch's first example as a stand-in (False), whose loss the caller weighs 0: under DDP every
    process must run the forward and backward passes of every micro-batch for the gradient all-reduce.

    Args:
        batch: a global batch.
        rank: this process's index.
        world: the number of processes.

    Returns:
        (this process's share, True) when ``rank < len(batch)``, else (a one-example stand-in, False).
    """
    if rank < len(batch):
        return batch.shard(rank, world), True
    return batch.shard(0, len(batch)), False


def _all_sum(values: list[float], accelerator: Accelerator) -> list[float]:
    """Element-wise sum over processes (one all-reduce; the values themselves with one process)."""
    if accelerator.num_processes == 1:
        return values
    summed = accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=accelerator.device), reduction="sum")
    return summed.tolist()


def evaluate(model: torch.nn.Module, batches: Sequence[Batch], loss_fn: LossFn, accelerator: Accelerator) -> dict[str, float]:
    """The loss over all of ``batches`` (token-level terms over all their tokens, example-level terms
    over all their examples, on every process) and the example-weighted mean of each metric.

    Args:
        model: the model (left in the train/eval mode it came in).
        batches: the global validation batches.
        loss_fn: a StepLoss or a plain ``loss_fn(model, batch) -> (mean loss, metrics)``.
        accelerator: the run's Accelerator (device and all-reduce).

    Returns:
        ``{"val_loss": the step-normalised loss over all batches (the objective's unit: nats for the
        log-likelihood losses), "val_<metric>": example-weighted mean, ...}``, the same on every
        process; ``{}`` when ``batches`` is empty.
    """
    if not batches:
        return {}
    was_training = model.training
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    shares = [local_share(b, rank, world) for b in batches]
    units = sum((loss_units(loss_fn, share) for share, real in shares if real), Units())
    denominators = Units(*_all_sum([units.tokens, units.examples], accelerator))
    loss_sum, sums, count = 0.0, {}, 0.0
    with torch.no_grad():
        for local, real in shares:
            loss, metrics = step_normalised_loss(loss_fn, model, local.to(accelerator.device), denominators)
            # a stand-in (empty share) weighs 0 but keeps the metric keys alike on every process
            n = len(local) if real else 0
            loss_sum += _scalar(loss) if real else 0.0
            count += n
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + _scalar(value) * n
    keys = sorted(sums)
    totals = _all_sum([loss_sum] + [sums[k] for k in keys] + [count], accelerator)
    model.train(was_training)
    return {"val_loss": totals[0], **{f"val_{k}": totals[i + 1] / totals[-1] for i, k in enumerate(keys)}}


def train(
    model: torch.nn.Module,
    train_batches: Sequence[Batch],
    val_batches: Sequence[Batch],
    loss_fn: LossFn,
    config: TrainConfig | dict[str, Any],
    output_dir: str | Path,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Train ``model`` on ``loss_fn``; resume from ``output_dir/checkpoints`` when one is there.

    Args:
        model: the model to train (updated in place; dropout disabled and trainable weights cast to
            fp32 as the config says). Under FSDP2 it is sharded in place: use ``TrainResult.model``
            afterwards, not this object.
        train_batches: the global training batches; epochs cycle through them in a seeded order.
        val_batches: the global validation batches (evaluated every ``eval_every`` steps and at the end).
        loss_fn: a StepLoss (core/training/normalisation.py) or a plain ``loss_fn(model, batch) ->
            (mean over the batch's examples, metrics)``.
        config: a TrainConfig or the ``training`` parameter block.
        output_dir: the run directory; checkpoints go to ``output_dir/checkpoints``.
        accelerator: the Accelerator to use; None = ``make_accelerator(config.mixed_precision)``.

    Returns:
        A TrainResult: the unwrapped model, one history row per optimizer step (train_loss,
        learning_rate, grad_norm, tokens_per_second, train_/val_ metrics), the last validation metrics,
        the step count, the step resumed from and throughput (tokens/s and examples/s, all processes).
        Under FSDP2 and DeepSpeed ZeRO-3 the model is a plain module with the full (fp32 master)
        weights gathered from the shards, on every process.

    Raises:
        ValueError: ``train_batches`` is empty, or fp16 under FSDP2 (use bf16), or the DeepSpeed
            accelerate config sets gradient_accumulation_steps / gradient_clipping to other values than
            the training block (core/training/zero3.py ``configure``).
        ParameterError: ``config`` is a dict with an unknown key or a wrong type (``TrainConfig.from_dict``).
        FileNotFoundError: an FSDP2 run finds a checkpoint a DDP run wrote in ``output_dir`` (the node's
            run folders are named by the parameters, accelerate_config included, so this needs a hand-made folder).
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    if not train_batches:
        raise ValueError("no training batches: the train split is empty after filtering")
    accelerator = accelerator or make_accelerator(cfg.mixed_precision)
    output_dir = Path(output_dir)
    if cfg.cpu_threads is not None:
        torch.set_num_threads(cfg.cpu_threads)
    if cfg.cpu_malloc_mmap_threshold is not None and accelerator.device.type == "cpu":
        set_malloc_mmap_threshold(cfg.cpu_malloc_mmap_threshold)
    set_seed(cfg.seed)
    if cfg.disable_dropout:
        changed = disable_dropout(model)
        if changed:
            log.info("training.disable_dropout: set to 0: %s", ", ".join(changed))
    if cfg.fp32_master_weights:
        use_fp32_master_weights(model)
    else:
        warn_if_updates_round_away(model, cfg.learning_rate)

    fsdp = use_fsdp2(accelerator.num_processes)
    if fsdp and accelerator.mixed_precision == "fp16":
        raise ValueError("training.mixed_precision='fp16' is not supported with FSDP2 (no gradient scaler on sharded "
                         "gradients); use bf16")
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    # FSDP2: shard before the optimizer is built, so it holds the sharded parameters; DeepSpeed shards
    # in prepare(): keep an empty copy to gather the trained weights into at the end
    skeleton = shard_model(model, accelerator.device) if fsdp else meta_skeleton(model) if deepspeed else None
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]] if deepspeed else groups,  # ZeRO-3 cannot flatten an empty group
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
    )
    # Not passed to prepare(): accelerate would step it once per process per step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cfg.lr_factor)
    if deepspeed:  # the loop's micro-batch, accumulation and clipping, not DeepSpeed's defaults
        zero3.configure(accelerator.state.deepspeed_plugin.deepspeed_config,
                        -(-len(train_batches[0]) // accelerator.num_processes), cfg.gradient_accumulation_steps,
                        cfg.max_grad_norm)
    if not fsdp:
        model, optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(scheduler)
        accelerator.register_save_state_pre_hook(drop_tied_weights)

    step, history = 0, []
    resume_from = latest_checkpoint(output_dir)
    if resume_from is not None:
        if fsdp:
            load_sharded(resume_from, model, optimizer, scheduler, accelerator.process_index)
        else:
            accelerator.load_state(str(resume_from))
        saved = json.loads((resume_from / STATE_FILE).read_text())
        step, history = saved["step"], saved["history"]
    resumed_from_step = step

    rank, world = accelerator.process_index, accelerator.num_processes
    n_batches = len(train_batches)
    accum = cfg.gradient_accumulation_steps
    bar = Progress(cfg.max_steps, initial=step, desc="train", enabled=cfg.progress_bar and accelerator.is_main_process)
    start, tokens_seen, examples_seen = time.perf_counter(), 0.0, 0.0
    final_metrics: dict[str, float] = {}
    model.train()
    while step < cfg.max_steps:
        shares = []
        for micro in range(accum):
            epoch, position = divmod(step * accum + micro, n_batches)
            shares.append(local_share(train_batches[epoch_order(n_batches, cfg.seed, epoch)[position]], rank, world))
        # The step's units on every process, summed once: each micro-batch's loss is its summed
        # terms over them, times W because DDP averages the W processes' gradients.
        units = sum((loss_units(loss_fn, batch) for batch, real in shares if real), Units())
        totals = Units(*_all_sum([units.tokens, units.examples], accelerator))
        denominators = totals.scaled(1.0 / world)
        step_loss, metric_sums = 0.0, {}
        for micro, (batch, real) in enumerate(shares):
            # Skip the gradient all-reduce on all but the last micro-batch of an accumulation.
            if fsdp:
                model.set_requires_gradient_sync(micro == accum - 1)
                sync = nullcontext()
            elif deepspeed:  # ZeRO-3 reduce-scatters every micro-batch's gradients (no no_sync)
                sync = nullcontext()
            else:
                sync = nullcontext() if micro == accum - 1 else accelerator.no_sync(model)
            with sync:
                with accelerator.autocast():
                    loss, metrics = step_normalised_loss(loss_fn, model, batch.to(accelerator.device), denominators)
                if not real:  # a stand-in for an empty share: its backward only joins the all-reduce
                    loss = loss * 0.0
                # backward outside autocast (as torch.amp advises): under it, every backward matmul
                # re-casts its operands, which cost bf16 runs on CPU ~10% of their time in copies
                if deepspeed:  # no 1/accumulation rescaling; DeepSpeed clips and steps after the last one
                    zero3.backward(model, loss, micro == accum - 1)
                else:
                    accelerator.backward(loss)
            step_loss += _scalar(loss)
            weight = len(batch) if real else 0  # a stand-in's metrics keep the keys alike on every process
            for key, value in metrics.items():
                metric_sums[key] = metric_sums.get(key, 0.0) + _scalar(value) * weight
        grad_norm = None  # JSON-friendly "not measured"
        if cfg.max_grad_norm is not None and fsdp:  # the norm over all shards (a collective)
            grad_norm = _scalar(full_norm(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)))
        elif cfg.max_grad_norm is not None and deepspeed:  # DeepSpeed clipped at max_grad_norm inside its step
            grad_norm = zero3.global_grad_norm(model)
        elif cfg.max_grad_norm is not None:
            grad_norm = _scalar(accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
        optimizer.step()  # a no-op under DeepSpeed (its engine stepped after the last backward)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if cfg.cpu_malloc_trim and accelerator.device.type == "cpu":
            release_free_heap()
        step += 1

        keys = sorted(metric_sums)
        step_tokens = sum(batch.num_tokens for batch, real in shares if real)
        summed = _all_sum([step_loss, step_tokens] + [metric_sums[k] for k in keys], accelerator)
        tokens_seen += summed[1]
        examples_seen += totals.examples
        elapsed = time.perf_counter() - start
        row = {
            "step": step,
            "train_loss": summed[0] / world,  # each process's share is (its sums) * W / (the step's totals)
            "learning_rate": scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "tokens_per_second": tokens_seen / max(elapsed, 1e-9),
            # example-weighted means over the step's micro-batches and processes
            **{f"train_{k}": summed[2 + i] / totals.examples for i, k in enumerate(keys)},
        }
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.max_steps:
            final_metrics = evaluate(model, val_batches, loss_fn, accelerator)
            row.update(final_metrics)
        history.append(row)
        bar.update(1, loss=row["train_loss"], tok_s=row["tokens_per_second"])
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
            save_checkpoint(accelerator, output_dir, step, history, cfg.keep_checkpoints,
                            sharded=(model, optimizer, scheduler) if fsdp else None)
    bar.close()
    if not final_metrics and history:  # resumed at max_steps: report the last validation seen
        final_metrics = {k: v for k, v in history[-1].items() if k.startswith("val_")}
    elapsed = time.perf_counter() - start
    accelerator.wait_for_everyone()
    if fsdp:
        trained = unsharded_model(model, skeleton, accelerator.device)
    elif deepspeed:  # the fp32 master weights, gathered from every process's shard
        trained = unsharded_model(model.module, skeleton, accelerator.device, zero3.full_parameter)
    else:
        trained = accelerator.unwrap_model(model)
    return TrainResult(
        model=trained,
        history=history,
        final_metrics=final_metrics,
        steps=step,
        resumed_from_step=resumed_from_step,
        train_seconds=elapsed,
        tokens_per_second=tokens_seen / max(elapsed, 1e-9),
        examples_per_second=examples_seen / max(elapsed, 1e-9),
    )


def drop_tied_weights(models: list[torch.nn.Module], weights: list[dict[str, Any]], output_dir: str) -> None:
    """Accelerate save-state pre-hook: leave out the tied copies (``lm_head.weight`` when
    ``tie_word_embeddings``) before safetensors sees them.

    safetensors cannot store two names for one tensor, so accelerate drops the duplicates itself,
    with a warning per save ("Removed shared tensor ..."). Loading re-ties them (``load_state``
    loads non-strictly into the tied model), so leaving them out here is the same checkpoint,
    without the warning. Only keys that share storage with an earlier key are dropped.

    Args:
        models: the models accelerate is saving (unused; the hook's signature).
        weights: their state dicts; tied duplicates are deleted from them in place.
        output_dir: the checkpoint directory (unused; the hook's signature).
    """
    for state in weights:
        seen: set[tuple[Any, int, tuple[int, ...]]] = set()
        for name in list(state):
            tensor = state[name]
            if not isinstance(tensor, torch.Tensor):
                continue
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if key in seen:
                del state[name]
            else:
                seen.add(key)


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, history: list[dict], keep: int,
                    sharded: tuple[torch.nn.Module, torch.optim.Optimizer, Any] | None = None) -> Path:
    """Model, optimizer, scheduler and RNG via accelerate (or, under FSDP2, each process's shards via
    torch.distributed.checkpoint); the step/history file last (marks it complete).

    Args:
        accelerator: the run's Accelerator (saves model, optimizer, registered scheduler and RNG).
        output_dir: the run directory.
        step: the optimizer steps taken (names the folder ``step_XXXXXXXX``).
        history: the history rows so far (written to ``trainer_state.json``).
        keep: how many complete checkpoints to keep (older ones are deleted by the main process).
        sharded: (model, optimizer, scheduler) of an FSDP2 run (core/training/sharding.py ``save_sharded``);
            None = ``accelerator.save_state``.

    Returns:
        The checkpoint folder.
    """
    path = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:08d}"
    if sharded is not None:
        path.mkdir(parents=True, exist_ok=True)
        save_sharded(path, *sharded, accelerator.process_index)
    else:
        accelerator.save_state(str(path))
    accelerator.wait_for_everyone()  # every process's files are written before the state file marks it complete
    if accelerator.is_main_process:
        (path / STATE_FILE).write_text(json.dumps({"step": step, "history": history}))
        complete = sorted(p for p in path.parent.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).exists())
        for old in complete[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path
