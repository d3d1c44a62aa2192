"""Train one reward model (logistic loss, hard or soft targets; scalar or GPM head) from pairs tables.

This is the single training entry point: the Kedro node calls it in-process, and the
multi-process launcher (``launch.py``) calls the same function in every process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
from transformers import PreTrainedTokenizerBase

from prefalign.core.config_utils import sub_block_of
from prefalign.core.models.backbone import ModelConfig, build_backbone
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.models.lora import trainable_parameters
from prefalign.core.models.tokenizer import TokenizerConfig, build_tokenizer, check_tokenizer_fits, tokenizer_params_for_model
from prefalign.core.reward.model import HEAD_TYPES, HeadConfig, RewardModel
from prefalign.core.reward.objectives import make_reward_loss_fn
from prefalign.core.schema import with_source_names
from prefalign.core.training.token_cache import cached_tokenize_pair_frame
from prefalign.core.training.launch import check_num_processes
from prefalign.core.training.packing import any_padding_fraction, pair_batches, resolve_layout
from prefalign.core.training.loop import TrainConfig, evaluate, make_accelerator, train
from prefalign.core.training.normalisation import StepLoss
from prefalign.core.training.run import TrainingRun, curve_frame
from prefalign.core.models.params import dataclass_from_params
from prefalign.core.pair_selection import cap_rows, rows_of
from prefalign.core.ties import leave_out_ties


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardParams:
    """One reward objective's parameters (``reward.defaults`` deep-merged with ``reward.<objective>``).

    The head type (scalar or gpm) is the registry entry's model kind (core/objectives/registry.py),
    written into ``head["head"]`` before parsing; ``head`` holds the other HeadConfig keys.

    Raises:
        ValueError: from ``from_dict``, before any training (see there).

    Source: docs/methods.md s2 (soft_targets, margin_offset, centering), s3 (GPM head).
    """

    soft_targets: bool = False  # docs/methods.md s2: each pair's p_chosen instead of a hard label; keeps ties
    margin_offset: bool = False  # docs/methods.md s2: logit z - m (Llama 2); pairs without a margin are dropped
    head: dict = field(default_factory=dict)  # HeadConfig keys except the lengths
    centering: float = 0.0  # docs/methods.md s2; scalar heads only
    max_length: int = 256
    max_prompt_length: int = 128
    batch_size: int = 16  # pairs per global micro-batch (2x sequences per forward)
    eval_batch_size: int = 32
    max_train_pairs: int | None = None
    max_val_pairs: int | None = None
    sources: list[str] | None = None  # train/val only on these sources (null = all; a list, or one string "a b"); held-out sources stay for testing
    source_weights: dict = field(default_factory=dict)  # source -> integer repeat factor of its train pairs (1 = as is)
    train_accuracy_pairs: int = 256  # train pairs re-scored at the end (accuracy on train pairs)
    num_processes: int = 1  # > 1: run the same entry point under `accelerate launch`
    accelerate_config: str | None = None  # e.g. conf/accelerate/ddp.yaml (for num_processes > 1)
    checkpoint_dir: str | None = None  # resumable training state; null = a temporary directory
    token_cache_dir: str | None = None  # tokenised pairs read from here on demand (core/training/token_cache.py); null = in memory
    tokenizer: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    @staticmethod
    def key_path(key: str) -> str:
        """Where ``key`` is written in an objective's block (``objective.soft_targets``, ``model``).

        Args:
            key: a field of RewardParams.

        Returns:
            The key under its sub-block (core/config_utils.py REWARD_SUB_BLOCKS), or the key itself.
        """
        home = sub_block_of(key)
        return f"{home}.{key}" if home else key

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "RewardParams":
        """Parse and check every sub-config now, before any training.

        Args:
            params: ``reward.defaults`` deep-merged with ``reward.<name>``, head type set by the registry.

        Returns:
            The RewardParams.

        Raises:
            ValueError: an unknown key (named, with the allowed ones), a bad head/tokenizer/model/
                training value, or num_processes < 1 or > batch_size.
        """
        p = dataclass_from_params(cls, with_source_names(params, "sources"), "reward", key_path=cls.key_path)
        if p.batch_size < 1:  # before the process check, which would blame num_processes
            raise ValueError(f"reward.data.batch_size={p.batch_size} must be >= 1")
        check_num_processes(p.num_processes, p.batch_size, "reward num_processes")
        weight_sources(pl.DataFrame({"source": []}, schema={"source": pl.String}), p.source_weights)  # checks the weights
        # Fail before any training: every sub-config is parsed now.
        p.head_config(), TokenizerConfig.from_dict(p.tokenizer), ModelConfig.from_dict(p.model), TrainConfig.from_dict(p.training)
        return p

    def head_config(self) -> HeadConfig:
        """The HeadConfig of ``head`` with this objective's truncation lengths.

        Returns:
            The parsed HeadConfig.

        Raises:
            ValueError: a bad head setting (HeadConfig.from_dict).
        """
        return HeadConfig.from_dict({**self.head, "max_length": self.max_length, "max_prompt_length": self.max_prompt_length})


def with_head_type(params: dict[str, Any], head_type: str) -> dict[str, Any]:
    """``params`` with ``head.head`` set to the registry's model kind.

    Args:
        params: a reward parameters dict (``defaults`` merged with the objective's block).
        head_type: a registered head's name (``scalar``, ``gpm``, ...: core/reward/heads.py HEADS).

    Returns:
        A new dict; ``params`` is not changed.

    Raises:
        ValueError: when the parameters already name another head type (the registry entry decides it).
    """
    if head_type not in HEAD_TYPES:
        raise ValueError(f"head type {head_type!r} is not one of {HEAD_TYPES}")
    head = dict(params.get("head") or {})
    if head.get("head", head_type) != head_type:
        raise ValueError(
            f"head.head={head['head']!r} contradicts the objective's registered model kind ({head_type!r} of {HEAD_TYPES}); "
            "remove head.head from the parameters"
        )
    return {**params, "head": {**head, "head": head_type}}


def select_pairs(
    pairs: pl.DataFrame, split: str, params: RewardParams, max_pairs: int | None, drop_ties: bool
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Rows of ``split``; ties dropped when ``drop_ties``; null margins dropped under ``margin_offset``.

    Args:
        pairs: the validated pairs table.
        split: ``train`` or ``val``.
        params: the objective's parameters.
        max_pairs: cap, or None for every row; the pairs with the smallest pair_ids are kept
            (core/pair_selection.py ``cap_rows``).
        drop_ties: the registry's ``drops_ties`` of this objective (hard labels drop p = 0.5, docs/methods.md s1).

    Returns:
        (selected rows, counts ``<split>_rows``, ``<split>_ties_dropped`` (with ``drop_ties``),
        ``<split>_null_margin_dropped`` (with ``margin_offset``), ``<split>_pairs_used``).

    Raises:
        ValueError: none of ``params.sources`` has rows in ``pairs``, naming them and the sources
            present (only some missing: a warning, and the others are used).
    """
    frame = rows_of(pairs, split, params.sources)
    if params.sources is not None:
        present = set(pairs["source"].unique().to_list())
        missing = sorted(set(params.sources) - present)
        if len(missing) == len(set(params.sources)):
            raise ValueError(
                f"reward sources {missing} have no rows in validated_pairs (present: "
                f"{sorted(present)}); fix the objective's `sources` or feedback.sources"
            )
        if missing:  # e.g. a source disabled in this environment: train on the others, and say so
            log.warning("reward sources %s have no rows in validated_pairs; training on %s", missing,
                        sorted(set(params.sources) & present))
    counts = {f"{split}_rows": frame.height}
    if drop_ties:
        frame, counts[f"{split}_ties_dropped"] = leave_out_ties(frame, True)
        if counts[f"{split}_ties_dropped"]:
            log.info("reward: %d %s ties (p_chosen = 0.5) left out: a hard-label loss cannot learn 'equal'",
                     counts[f"{split}_ties_dropped"], split)
    if params.margin_offset:
        counts[f"{split}_null_margin_dropped"] = frame.filter(pl.col("margin").is_null()).height
        frame = frame.filter(pl.col("margin").is_not_null())
    frame = cap_rows(frame, max_pairs)  # the smallest pair_ids (core/pair_selection.py)
    counts[f"{split}_pairs_used"] = frame.height
    return frame, counts


def weight_sources(pairs: pl.DataFrame, weights: dict[str, int]) -> pl.DataFrame:
    """Train pairs with each pair of source ``s`` repeated ``weights[s]`` times (oversampling; 1 = as is).

    Args:
        pairs: a pairs table with a ``source`` column.
        weights: source name -> integer >= 1; sources not named keep weight 1.

    Returns:
        ``pairs`` followed by the extra copies (``weights[s] - 1`` per pair of ``s``); the loop shuffles.

    Raises:
        ValueError: a weight that is not an integer >= 1, naming the source.

    Why: a source that teaches something the rest of the mix contradicts (synthetic_cyclic's
    A > B > C > A against synthetic_scalar's transitive r*, docs/reward.md) is seen more often
    without changing the pairs, the tokenizer or the number of optimizer steps.
    """
    return pairs[source_repeat_index(pairs, weights)] if weights else pairs


def source_repeat_index(pairs: pl.DataFrame | pl.LazyFrame, weights: dict[str, int]) -> np.ndarray:
    """The row positions of ``weight_sources(pairs, weights)`` in ``pairs``: every row once, then each
    row of source ``s`` ``weights[s] - 1`` more times (per repeat, in table order).

    Args:
        pairs: a pairs table with a ``source`` column (lazy: only one bool flag per row is collected
            per weighted source; the source strings never become Python objects).
        weights: source name -> integer >= 1; sources not named keep weight 1.

    Returns:
        [pairs.height + extra copies] int64 positions; training repeats already tokenised pairs with it.

    Raises:
        ValueError: a weight that is not an integer >= 1, naming the source.
    """
    for source, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise ValueError(
                f"reward source_weights[{source!r}]={weight!r} must be an integer >= 1 (the number of times "
                "each train pair of that source is seen per epoch); use 1 or drop the key for no oversampling"
            )
    lazy = pairs.lazy()
    height = lazy.select(pl.len()).collect().item()
    extra = []
    for source, weight in weights.items():
        if weight > 1:
            flags = lazy.select((pl.col("source") == source).fill_null(False)).collect().to_series().to_numpy()
            extra += [np.flatnonzero(flags)] * (weight - 1)
    return np.concatenate([np.arange(height), *extra]).astype(np.int64)


def fit_tokenizer(train_pairs: pl.DataFrame, params: RewardParams) -> PreTrainedTokenizerBase:
    """The model's own tokenizer when ``model.name_or_path`` is set (unless another is named), else
    a BPE trained on the training texts only.

    Args:
        train_pairs: the selected train pairs (prompt, chosen, rejected texts; never val or test).
        params: ``params.tokenizer`` (core/models/tokenizer.py TokenizerConfig keys) and ``params.model``.

    Returns:
        A tokenizer with a pad token.

    Raises:
        ValueError: the tokenizer does not fit the pretrained model's vocabulary (checked from the
            model's config, before any training).
    """
    texts = (train_pairs["prompt"].to_list() + train_pairs["chosen"].to_list() + train_pairs["rejected"].to_list())
    tokenizer_params = tokenizer_params_for_model(params.tokenizer, params.model)
    tokenizer = build_tokenizer(tokenizer_params, texts)
    model_path = params.model.get("name_or_path")
    if model_path is not None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_path, trust_remote_code=bool(params.model.get("trust_remote_code")))
        if getattr(config, "vocab_size", None):
            check_tokenizer_fits(tokenizer, config.vocab_size, tokenizer_params.get("name_or_path"), model_path)
    return tokenizer


def train_reward_model(
    train_pairs: pl.DataFrame,
    val_pairs: pl.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    params: RewardParams,
    output_dir: str | Path,
    objective: str,
    loss_factory: Callable[["RewardParams"], StepLoss] = make_reward_loss_fn,
) -> TrainingRun:
    """Tokenise, batch, build backbone + head, train with the shared loop, report metrics.

    Args:
        train_pairs, val_pairs: selected pairs (``select_pairs``); with ``params.token_cache_dir`` set
            either may be a ``pl.LazyFrame`` (read in chunks into the token cache, never whole).
        tokenizer: the fitted tokenizer (saved with the model).
        params: the objective's parameters (head type already set by the registry).
        output_dir: resumable loop checkpoints; a run finds and resumes its newest one.
        objective: the registry name, recorded in the metrics and the checkpoint metadata.
        loss_factory: ``params -> StepLoss``, the registry entry's ``loss`` (default: the s2 logistic
            loss of :func:`make_reward_loss_fn`).

    Returns:
        The TrainingRun (model in eval mode, per-step curve, metrics incl. val/train accuracy).

    Raises:
        ValueError: from the loop when there are no training batches.

    Source: docs/methods.md s2 (loss), s3 (GPM head).
    """
    cfg = params.head_config()

    # Pairs whose two sides are the same ids after truncation carry no preference: they are left
    # out of training and of accuracy (without_identical), and counted (truncation.identical_after_truncation).
    train_all = cached_tokenize_pair_frame(tokenizer, train_pairs, cfg.max_length, cfg.max_prompt_length, params.token_cache_dir)
    val_tok = cached_tokenize_pair_frame(tokenizer, val_pairs, cfg.max_length, cfg.max_prompt_length,
                                         params.token_cache_dir).without_identical()
    train_once = train_all.without_identical()
    # source_weights repeat a source's pairs in the epoch (the tokenised pairs are repeated, not the
    # texts tokenised again); counts and accuracy use each pair once
    train_tok = (train_all.repeat(source_repeat_index(train_pairs, params.source_weights)).without_identical()
                 if params.source_weights else train_once)
    if len(train_tok) == 0:
        raise ValueError(
            f"all {len(train_all)} train pairs are token-identical after truncation to max_length={cfg.max_length}; "
            "raise max_length"
        )
    model = RewardModel(build_backbone(params.model, tokenizer), cfg)
    # packing / share_prompt "auto": packed for causal decoders read at the last token, padded for encoders
    training = resolve_layout(TrainConfig.from_dict(params.training), model)
    train_batches = pair_batches(train_tok, params.batch_size, tokenizer.pad_token_id, training.seed, training)
    val_batches = pair_batches(val_tok, params.eval_batch_size, tokenizer.pad_token_id, None, training) if len(val_tok) else []
    loss_fn = loss_factory(params)
    accelerator = make_accelerator(training.mixed_precision)
    result = train(model, train_batches, val_batches, loss_fn, training, output_dir, accelerator)

    n_check = min(params.train_accuracy_pairs, len(train_tok))
    # the first n_check train rows, already tokenised (as tokenising train_pairs.head(n_check) again)
    check = train_all.repeat(np.arange(min(n_check, len(train_all)))).without_identical() if n_check else None
    train_eval = evaluate(result.model, pair_batches(check, params.eval_batch_size, tokenizer.pad_token_id, None, training), loss_fn, accelerator) if check else {}
    metrics = {
        "objective": objective,
        "head": cfg.head,
        "soft_targets": params.soft_targets,
        "steps": result.steps,
        "resumed_from_step": result.resumed_from_step,
        "num_processes": accelerator.num_processes,
        "train_pairs": len(train_once),
        "train_pairs_weighted": len(train_tok),  # with source_weights' repeats: what one epoch shows
        "val_pairs": len(val_tok),
        **result.final_metrics,
        **{k.replace("val_", "train_", 1): v for k, v in train_eval.items()},
        "train_padding_fraction": any_padding_fraction(train_batches),
        "layout": {"packing": training.packing, "share_prompt": training.share_prompt},
        "truncation": train_tok.truncation.add(val_tok.truncation).as_dict(),
        "excluded_pairs": {
            "reason": "chosen and rejected are token-identical after truncation (no preference left)",
            "train": train_once.truncation.identical_after_truncation,
            "val": val_tok.truncation.identical_after_truncation,
        },
        "tokens_per_second": result.tokens_per_second,
        "pairs_per_second": result.examples_per_second,
        "train_seconds": result.train_seconds,
        "parameters": trainable_parameters(result.model)[1],
        "trainable_parameters": trainable_parameters(result.model)[0],  # LoRA: adapters + head only
    }
    result.model.eval()
    bundle = ModelBundle(result.model, tokenizer, {"objective": objective, "head": cfg.head, "steps": result.steps})
    return TrainingRun(bundle, curve_frame(result.history), metrics)


def run_reward_objective(spec: Any, args: dict[str, Any], frames: dict[str, pl.DataFrame],
                         bundles: dict[str, ModelBundle], tokenizers: dict[str, Any]) -> TrainingRun:
    """The registry's trainer of a reward objective (``ObjectiveSpec.train``; every process runs it).

    Args:
        spec: the registry entry (its ``parse``, ``loss`` factory and ``name``).
        args: ``{params: the reward.<name> block merged with defaults (JSON-able), output_dir}``.
        frames: ``{train, val}`` selected pairs.
        bundles: unused (the trainers' common signature).
        tokenizers: ``{tokenizer}``, fitted before the launch (``fit_tokenizer``).

    Returns:
        :func:`train_reward_model`'s TrainingRun.

    Raises:
        KeyError: a missing frame or tokenizer.
        ValueError: a bad parameter (``spec.parse``).

    Source: docs/methods.md s2, s3.
    """
    return train_reward_model(frames["train"], frames["val"], tokenizers["tokenizer"], spec.parse(args["params"]),
                              args["output_dir"], spec.name, spec.loss)
