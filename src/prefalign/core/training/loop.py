"""ONE training loop for every objective (reward BT/MMPO/GPM, policy SFT/DPO/MMPO/IPO/GPO).

The objective is a function ``loss_fn(model, batch) -> (loss, metrics)``; the loop owns the rest:
AdamW, warmup + schedule, gradient accumulation and clipping, mixed precision (bf16 on CUDA,
none on CPU), periodic validation, a progress bar (loss, tokens/s, ETA), periodic checkpoints
(model + optimizer + scheduler + RNG + step) and resume from the newest one.

Batches are plain objects with ``to(device)``, ``shard(rank, world_size)``, ``len()`` and
``num_tokens`` (``PairBatch`` and ``SequenceBatch`` in ``batching.py`` qualify). Each batch is a
GLOBAL batch: with W processes each takes its 1/W share, so DDP's gradient mean equals the
single-process gradient of the same batch. The batch order of epoch e is a permutation seeded
by (seed, e), a function of the step alone, so a resumed run sees exactly the batches an
uninterrupted run would have.
"""

from __future__ import annotations

import json
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
from accelerate.utils import set_seed
from prefalign.core.models.params import dataclass_from_params
from prefalign.core.training.progress import Progress
from prefalign.core.training.memory import release_free_heap, set_malloc_mmap_threshold

LR_SCHEDULES = ("constant", "linear", "cosine")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
CHECKPOINT_PREFIX = "step_"
STATE_FILE = "trainer_state.json"


class Batch(Protocol):
    num_tokens: int

    def to(self, device: torch.device | str) -> "Batch": ...
    def shard(self, rank: int, world_size: int) -> "Batch": ...
    def __len__(self) -> int: ...


LossFn = Callable[[torch.nn.Module, Any], "tuple[torch.Tensor, dict[str, float | torch.Tensor]]"]


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
        cfg = dataclass_from_params(cls, params, "training")
        cfg.validate()
        return cfg

    def validate(self) -> None:
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
        """Multiplier of the learning rate after ``step`` optimizer steps: linear warmup, then decay."""
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


def resolve_mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def make_accelerator(mixed_precision: str = "auto") -> Accelerator:
    """An Accelerator; re-creatable in one process (tests, notebooks) with another precision."""
    if AcceleratorState._shared_state:  # keep the process group (PartialState), reset the rest
        AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True without CUDA: under `accelerate launch` that selects MULTI_CPU (gloo) instead of silently
    # running N independent single-process trainings.
    return Accelerator(mixed_precision=resolve_mixed_precision(mixed_precision), cpu=not torch.cuda.is_available())


def epoch_order(num_batches: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_batches)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest COMPLETE checkpoint (its state file is written last), or None."""
    root = Path(output_dir) / "checkpoints"
    done = sorted(p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).exists())
    return done[-1] if done else None


def _scalar(value: float | torch.Tensor) -> float:
    return float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)


def evaluate(model: torch.nn.Module, batches: Sequence[Batch], loss_fn: LossFn, accelerator: Accelerator) -> dict[str, float]:
    """Example-weighted mean of loss and metrics over ``batches``, summed across processes."""
    if not batches:
        return {}
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0.0
    with torch.no_grad():
        for batch in batches:
            local = batch.shard(accelerator.process_index, accelerator.num_processes)
            if len(local) == 0:
                continue
            loss, metrics = loss_fn(model, local.to(accelerator.device))
            n = len(local)
            count += n
            for key, value in {"loss": loss, **metrics}.items():
                sums[key] = sums.get(key, 0.0) + _scalar(value) * n
    keys = sorted(sums)
    totals = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        totals = accelerator.reduce(totals, reduction="sum")
    model.train(was_training)
    return {f"val_{k}": float(totals[i] / totals[-1]) for i, k in enumerate(keys)}


def train(
    model: torch.nn.Module,
    train_batches: Sequence[Batch],
    val_batches: Sequence[Batch],
    loss_fn: LossFn,
    config: TrainConfig | dict[str, Any],
    output_dir: str | Path,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Train ``model`` on ``loss_fn``; resume from ``output_dir/checkpoints`` when one is there."""
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

    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
    )
    # Not passed to prepare(): accelerate would step it once per process per step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cfg.lr_factor)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_save_state_pre_hook(drop_tied_weights)

    step, history = 0, []
    resume_from = latest_checkpoint(output_dir)
    if resume_from is not None:
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
        step_loss, step_metrics, step_tokens, step_examples = 0.0, {}, 0, 0
        for micro in range(accum):
            epoch, position = divmod(step * accum + micro, n_batches)
            batch = train_batches[epoch_order(n_batches, cfg.seed, epoch)[position]].shard(rank, world)
            step_tokens += batch.num_tokens
            step_examples += len(batch)
            # Skip the gradient all-reduce on all but the last micro-batch of an accumulation.
            sync = nullcontext() if micro == accum - 1 else accelerator.no_sync(model)
            with sync:
                with accelerator.autocast():
                    loss, metrics = loss_fn(model, batch.to(accelerator.device))
                # backward outside autocast (as torch.amp advises): under it, every backward matmul
                # re-casts its operands, which cost bf16 runs on CPU ~10% of their time in copies
                accelerator.backward(loss / accum)
            step_loss += _scalar(loss) / accum
            for key, value in metrics.items():
                step_metrics[key] = step_metrics.get(key, 0.0) + _scalar(value) / accum
        grad_norm = None  # JSON-friendly "not measured"
        if cfg.max_grad_norm is not None:
            grad_norm = _scalar(accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if cfg.cpu_malloc_trim and accelerator.device.type == "cpu":
            release_free_heap()
        step += 1

        summed = torch.tensor([step_loss, step_tokens, step_examples], dtype=torch.float64, device=accelerator.device)
        if world > 1:
            summed = accelerator.reduce(summed, reduction="sum")
        tokens_seen += float(summed[1])
        examples_seen += float(summed[2])
        elapsed = time.perf_counter() - start
        row = {
            "step": step,
            "train_loss": float(summed[0]) / world,
            "learning_rate": scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "tokens_per_second": tokens_seen / max(elapsed, 1e-9),
            **{f"train_{k}": v for k, v in step_metrics.items()},  # this process's share
        }
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.max_steps:
            final_metrics = evaluate(model, val_batches, loss_fn, accelerator)
            row.update(final_metrics)
        history.append(row)
        bar.update(1, loss=row["train_loss"], tok_s=row["tokens_per_second"])
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
            save_checkpoint(accelerator, output_dir, step, history, cfg.keep_checkpoints)
    bar.close()
    if not final_metrics and history:  # resumed at max_steps: report the last validation seen
        final_metrics = {k: v for k, v in history[-1].items() if k.startswith("val_")}
    elapsed = time.perf_counter() - start
    accelerator.wait_for_everyone()
    return TrainResult(
        model=accelerator.unwrap_model(model),
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


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, history: list[dict], keep: int) -> Path:
    """Model, optimizer, scheduler and RNG via accelerate; the step/history file last (marks it complete)."""
    path = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:08d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / STATE_FILE).write_text(json.dumps({"step": step, "history": history}))
        complete = sorted(p for p in path.parent.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).exists())
        for old in complete[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path
