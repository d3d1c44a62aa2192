"""Train one reward model (BT, margin, MMPO; scalar or GPM head) from pairs tables.

This is the single training entry point: the Kedro node calls it in-process, and the
multi-process launcher (``launch.py``) calls the same function in every process.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from transformers import PreTrainedTokenizerBase

from prefalign.core.models.backbone import ModelConfig, build_backbone
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.models.tokenizer import TokenizerConfig, build_tokenizer
from prefalign.core.reward.losses import OBJECTIVES
from prefalign.core.reward.model import HeadConfig, RewardModel
from prefalign.core.reward.objective import make_reward_loss_fn
from prefalign.core.training.batching import tokenize_pairs
from prefalign.core.training.packing import any_padding_fraction, pair_batches
from prefalign.core.training.loop import TrainConfig, evaluate, make_accelerator, train
from prefalign.core.models.params import dataclass_from_params

TIE_P = 0.5


@dataclass(frozen=True)
class RewardParams:
    """One objective's parameters (``reward.defaults`` deep-merged with ``reward.<objective>``)."""

    objective: str = "bt"  # bt | margin | mmpo
    head: dict = field(default_factory=dict)  # HeadConfig keys except the lengths
    centering: float = 0.0  # methods.md s2; scalar heads only
    drop_ties: bool | None = None  # null: drop p = 0.5 pairs for bt/margin, keep them for mmpo
    max_length: int = 256
    max_prompt_length: int = 128
    batch_size: int = 16  # pairs per global micro-batch (2x sequences per forward)
    eval_batch_size: int = 32
    max_train_pairs: int | None = None
    max_val_pairs: int | None = None
    train_accuracy_pairs: int = 256  # train pairs re-scored at the end (accuracy on train pairs)
    num_processes: int = 1  # > 1: run the same entry point under `accelerate launch`
    accelerate_config: str | None = None  # e.g. conf/accelerate/ddp.yaml (for num_processes > 1)
    checkpoint_dir: str | None = None  # resumable training state; null = a temporary directory
    tokenizer: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "RewardParams":
        p = dataclass_from_params(cls, params, "reward parameter")
        if p.objective not in OBJECTIVES:
            raise ValueError(f"reward objective={p.objective!r} is not one of {OBJECTIVES}")
        if p.num_processes < 1 or p.batch_size < p.num_processes:
            raise ValueError(f"need num_processes >= 1 and batch_size ({p.batch_size}) >= num_processes ({p.num_processes})")
        # Fail before any training: every sub-config is parsed now.
        p.head_config(), TokenizerConfig.from_dict(p.tokenizer), ModelConfig.from_dict(p.model), TrainConfig.from_dict(p.training)
        return p

    def head_config(self) -> HeadConfig:
        return HeadConfig.from_dict({**self.head, "max_length": self.max_length, "max_prompt_length": self.max_prompt_length})

    @property
    def keeps_ties(self) -> bool:
        return self.objective == "mmpo" if self.drop_ties is None else not self.drop_ties


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` wins key by key; nested dicts merge."""
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def select_pairs(pairs: pl.DataFrame, split: str, params: RewardParams, max_pairs: int | None) -> tuple[pl.DataFrame, dict[str, int]]:
    """Rows of ``split``; ties dropped unless the objective keeps them; null margins dropped for 'margin'.

    Capping (``max_pairs``) takes the pairs with the smallest pair_id hash: deterministic and unbiased.
    """
    frame = pairs.filter(pl.col("split") == split)
    counts = {f"{split}_rows": frame.height}
    if not params.keeps_ties:
        ties = frame.filter(pl.col("p_chosen") <= TIE_P)
        counts[f"{split}_ties_dropped"] = ties.height
        frame = frame.filter(pl.col("p_chosen") > TIE_P)
    if params.objective == "margin":
        counts[f"{split}_null_margin_dropped"] = frame.filter(pl.col("margin").is_null()).height
        frame = frame.filter(pl.col("margin").is_not_null())
    if max_pairs is not None and frame.height > max_pairs:
        frame = frame.sort("pair_id").head(max_pairs)
    counts[f"{split}_pairs_used"] = frame.height
    return frame, counts


def fit_tokenizer(train_pairs: pl.DataFrame, params: RewardParams) -> PreTrainedTokenizerBase:
    """The configured pretrained tokenizer, or a BPE trained on the training texts only."""
    texts = (train_pairs["prompt"].to_list() + train_pairs["chosen"].to_list() + train_pairs["rejected"].to_list())
    return build_tokenizer(params.tokenizer, texts)


@dataclass
class RewardTrainingOutput:
    bundle: ModelBundle
    curve: list[dict[str, float]]
    metrics: dict[str, Any]


def train_reward_model(
    train_pairs: pl.DataFrame,
    val_pairs: pl.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    params: RewardParams,
    output_dir: str | Path,
) -> RewardTrainingOutput:
    """Tokenise, batch, build backbone + head, train with the shared loop, report metrics."""
    cfg = params.head_config()

    def tokenize(frame: pl.DataFrame):
        return tokenize_pairs(
            tokenizer, frame["prompt"].to_list(), frame["chosen"].to_list(), frame["rejected"].to_list(),
            frame["p_chosen"].to_list(), frame["margin"].to_list(), cfg.max_length, cfg.max_prompt_length,
        )

    train_tok, val_tok = tokenize(train_pairs), tokenize(val_pairs)
    training = TrainConfig.from_dict(params.training)
    train_batches = pair_batches(train_tok, params.batch_size, tokenizer.pad_token_id, training.seed, training)
    val_batches = pair_batches(val_tok, params.eval_batch_size, tokenizer.pad_token_id, None, training) if len(val_tok) else []
    model = RewardModel(build_backbone(params.model, tokenizer), cfg)
    loss_fn = make_reward_loss_fn(params.objective, params.centering)
    accelerator = make_accelerator(training.mixed_precision)
    result = train(model, train_batches, val_batches, loss_fn, training, output_dir, accelerator)

    n_check = min(params.train_accuracy_pairs, len(train_tok))
    check = tokenize(train_pairs.head(n_check)) if n_check else None
    train_eval = evaluate(result.model, pair_batches(check, params.eval_batch_size, tokenizer.pad_token_id, None, training), loss_fn, accelerator) if check else {}
    metrics = {
        "objective": params.objective,
        "head": cfg.head,
        "steps": result.steps,
        "resumed_from_step": result.resumed_from_step,
        "num_processes": accelerator.num_processes,
        "train_pairs": len(train_tok),
        "val_pairs": len(val_tok),
        **result.final_metrics,
        **{k.replace("val_", "train_", 1): v for k, v in train_eval.items()},
        "train_padding_fraction": any_padding_fraction(train_batches),
        "truncation": train_tok.truncation.add(val_tok.truncation).as_dict(),
        "tokens_per_second": result.tokens_per_second,
        "pairs_per_second": result.examples_per_second,
        "train_seconds": result.train_seconds,
        "parameters": sum(p.numel() for p in result.model.parameters()),
    }
    result.model.eval()
    bundle = ModelBundle(result.model, tokenizer, {"objective": params.objective, "head": cfg.head, "steps": result.steps})
    return RewardTrainingOutput(bundle, result.history, metrics)
