"""The policy objectives end to end, framework-free: SFT, preference policies, iterative GPO.

Each function takes the pairs table and configuration and returns models, curves and metrics;
the Kedro nodes only unpack parameters and hand results to the catalog. Training itself is the
shared loop of core/training/loop.py (one loop for every objective); this module builds the
batches, the reference tables and the loss functions it needs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import polars as pl
import torch

from prefalign.core.models import build_causal_lm, build_tokenizer
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.policy.batches import make_row_batches
from prefalign.core.models.params import dataclass_from_params
from prefalign.core.policy.generation import SamplingConfig
from prefalign.core.policy.losses import PREFERENCE_LOSSES
from prefalign.core.policy.gpo import PreferenceTableFn, make_gpo_loss_fn, rows_logprobs, sample_and_score
from prefalign.core.policy.objectives import (
    implicit_reward_metrics,
    make_preference_loss_fn,
    reference_metrics,
    sft_loss_fn,
)
from prefalign.core.policy.reference import ReferenceLogprobs, compute_reference_logprobs
from prefalign.core.training.batching import (
    TokenizedPairs,
    padding_fraction,
    tokenize_pairs,
    tokenize_sequence,
    tokenize_sequences,
)
from prefalign.core.training.packing import any_padding_fraction, pair_batches
from prefalign.core.training.resume import discard_checkpoints
from prefalign.core.training.loop import TrainConfig, train


@dataclass(frozen=True)
class PolicyDataConfig:
    """Which pairs and how they are tokenised and batched."""

    max_length: int = 256
    max_prompt_length: int = 128
    batch_size: int = 8  # pairs (or sequences for SFT/GPO) per optimizer micro-batch
    eval_batch_size: int = 16
    max_train_pairs: int | None = None  # a deterministic subset (by pair_id) for CPU budgets
    max_val_pairs: int | None = None
    # Train only on these `source` values (None: every source). The embedded default picks
    # synthetic_scalar: template text a tiny CPU model can learn, judged by the lab's r*.
    sources: list[str] | None = None

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "PolicyDataConfig":
        cfg = dataclass_from_params(cls, params, "policy data")
        if cfg.sources is not None and (isinstance(cfg.sources, str) or not cfg.sources):
            raise ValueError(
                f"policy data sources={cfg.sources!r} must be a non-empty list of source names, or null for all sources"
            )
        return cfg


@dataclass(frozen=True)
class PreferenceConfig:
    """DPO / MMPO / cDPO / IPO: the loss, its beta and (cDPO) the constant label smoothing."""

    loss: str = "dpo"
    beta: float = 0.1
    label_smoothing: float = 0.0

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "PreferenceConfig":
        cfg = dataclass_from_params(cls, params, "preference objective")
        if cfg.loss not in PREFERENCE_LOSSES:
            raise ValueError(f"objective.loss={cfg.loss!r} is not one of {PREFERENCE_LOSSES}")
        if cfg.beta <= 0:
            raise ValueError(f"objective.beta={cfg.beta} must be > 0")
        return cfg


@dataclass(frozen=True)
class GPOConfig:
    """Iterative GPO: T iterations of K samples per prompt, scored by a preference model."""

    iterations: int = 3
    beta: float = 1.0
    max_prompts: int | None = None  # training prompts per iteration (deterministic subset)
    sampling: dict[str, Any] = field(default_factory=dict)  # SamplingConfig keys

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "GPOConfig":
        cfg = dataclass_from_params(cls, params, "gpo")
        if cfg.iterations < 1:
            raise ValueError(f"gpo.iterations={cfg.iterations} must be >= 1")
        SamplingConfig.from_dict(cfg.sampling)  # fail before any training
        return cfg


@dataclass
class PolicyRun:
    """What one objective produces."""

    bundle: ModelBundle
    training_curve: pl.DataFrame
    metrics: dict[str, Any]
    generations: pl.DataFrame | None = None
    iteration_bundles: dict[str, ModelBundle] = field(default_factory=dict)


def apply_cpu_threads(training: TrainConfig) -> None:
    """The loop sets torch's CPU threads when training starts; the passes before it (reference
    log-probs, sampling) should run under the same setting."""
    if training.cpu_threads is not None:
        torch.set_num_threads(training.cpu_threads)


def split_pairs(pairs: pl.DataFrame, split: str, limit: int | None, sources: Sequence[str] | None = None) -> pl.DataFrame:
    """Rows of one split (of the given sources, None: all), one per pair_id, in pair_id order (a
    stable pseudo-random subset when limited)."""
    if sources is not None:
        missing = sorted(set(sources) - set(pairs["source"].unique().to_list()))
        if missing:
            raise ValueError(
                f"policy data sources {missing} have no rows in validated_pairs (present: "
                f"{sorted(pairs['source'].unique().to_list())}); enable them in feedback.sources or change "
                "policy.defaults.data.sources"
            )
        pairs = pairs.filter(pl.col("source").is_in(list(sources)))
    frame = pairs.filter(pl.col("split") == split).unique("pair_id", keep="first").sort("pair_id")
    return frame if limit is None else frame.head(limit)


def _tokenize_frame(tokenizer, frame: pl.DataFrame, data: PolicyDataConfig) -> TokenizedPairs:
    return tokenize_pairs(
        tokenizer,
        frame["prompt"].to_list(),
        frame["chosen"].to_list(),
        frame["rejected"].to_list(),
        p_chosen=frame["p_chosen"].to_list(),
        margin=frame["margin"].to_list(),
        max_length=data.max_length,
        max_prompt_length=data.max_prompt_length,
    )


def _curve(history: list[dict[str, float]]) -> pl.DataFrame:
    return pl.DataFrame(history, infer_schema_length=None) if history else pl.DataFrame({"step": []}, schema={"step": pl.Int64})


def _train_and_val(pairs: pl.DataFrame, data: PolicyDataConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    train_frame = split_pairs(pairs, "train", data.max_train_pairs, data.sources)
    if train_frame.height == 0:
        raise ValueError(
            f"validated_pairs has no rows with split == 'train' (sources {data.sources or 'all'}); "
            "the policy has nothing to learn from"
        )
    return train_frame, split_pairs(pairs, "val", data.max_val_pairs, data.sources)


def train_sft(
    pairs: pl.DataFrame,
    tokenizer_params: dict[str, Any],
    model_params: dict[str, Any],
    data: PolicyDataConfig,
    training: TrainConfig,
    work_dir: str | Path,
) -> PolicyRun:
    """SFT on prompt + chosen with the loss on response tokens only; a tokenizer is trained (or
    loaded) on the training texts and saved with the model, which is the reference of every other
    policy."""
    train_frame, val_frame = _train_and_val(pairs, data)
    texts = train_frame["prompt"].to_list() + train_frame["chosen"].to_list() + train_frame["rejected"].to_list()
    tokenizer = build_tokenizer(tokenizer_params, texts)
    model = build_causal_lm(model_params, tokenizer)

    def sequences(frame: pl.DataFrame):
        return tokenize_sequences(tokenizer, frame["prompt"].to_list(), frame["chosen"].to_list(), data.max_length, data.max_prompt_length)

    train_batches = make_row_batches(sequences(train_frame), data.batch_size, tokenizer.pad_token_id, seed=training.seed)
    val_batches = make_row_batches(sequences(val_frame), data.eval_batch_size, tokenizer.pad_token_id, seed=None)
    result = train(model, train_batches, val_batches, sft_loss_fn, training, work_dir)
    discard_checkpoints(work_dir)
    metrics = {
        "objective": "sft",
        "train_pairs": train_frame.height,
        "val_pairs": val_frame.height,
        "steps": result.steps,
        "train_padding_fraction": padding_fraction([b.sequences for b in train_batches]),
        "tokens_per_second": result.tokens_per_second,
        "final_train_loss": result.history[-1]["train_loss"] if result.history else None,
        **result.final_metrics,
    }
    bundle = ModelBundle(result.model.cpu().eval(), tokenizer, {"objective": "sft", "steps": result.steps})
    return PolicyRun(bundle, _curve(result.history), metrics)


def _pair_batches(bundle: ModelBundle, train_frame: pl.DataFrame, val_frame: pl.DataFrame, data: PolicyDataConfig, seed: int | None,
                  training: TrainConfig | None = None):
    """Train and val pair batches (padded, or packed per ``training``) whose pair_index addresses train rows then val rows."""
    pad = bundle.tokenizer.pad_token_id
    train_tok = _tokenize_frame(bundle.tokenizer, train_frame, data)
    train_batches = pair_batches(train_tok, data.batch_size, pad, seed, training)
    train_eval = list(pair_batches(train_tok, data.eval_batch_size, pad, None, training))
    val_eval: list = []
    if val_frame.height:
        val_tok = _tokenize_frame(bundle.tokenizer, val_frame, data)
        val_eval = [
            replace(b, pair_index=b.pair_index + train_frame.height)
            for b in pair_batches(val_tok, data.eval_batch_size, pad, None, training)
        ]
    pair_ids = train_frame["pair_id"].to_list() + val_frame["pair_id"].to_list()
    return train_batches, train_eval, val_eval, pair_ids


def reference_logprobs(reference: ModelBundle, pairs: pl.DataFrame, data: PolicyDataConfig, training: TrainConfig | None = None) -> pl.DataFrame:
    """log pi_ref of chosen and rejected for every train and val pair, once (keyed by pair_id);
    packed when ``training.packing`` / ``training.share_prompt`` says so (same values)."""
    train_frame, val_frame = _train_and_val(pairs, data)
    _, train_eval, val_eval, pair_ids = _pair_batches(reference, train_frame, val_frame, data, None, training)
    return compute_reference_logprobs(reference.model, train_eval + val_eval, pair_ids)


def train_preference(
    reference: ModelBundle,
    pairs: pl.DataFrame,
    reference_table: pl.DataFrame,
    objective: PreferenceConfig,
    data: PolicyDataConfig,
    training: TrainConfig,
    work_dir: str | Path,
) -> PolicyRun:
    """DPO / MMPO / cDPO / IPO from the reference policy; reference log-probs come from the table.

    The policy starts as the reference's weights (trained in place: the loaded reference object
    is not kept, the table stands in for it).
    """
    train_frame, val_frame = _train_and_val(pairs, data)
    train_batches, train_eval, val_eval, pair_ids = _pair_batches(reference, train_frame, val_frame, data, training.seed, training)
    ref = ReferenceLogprobs.from_table(reference_table, pair_ids)
    model = reference.model
    model.train()
    n_train = train_frame.height
    before = {
        "train": reference_metrics(ref, torch.arange(n_train)),
        "val": reference_metrics(ref, torch.arange(n_train, n_train + val_frame.height)),
    }
    loss_fn = make_preference_loss_fn(objective.loss, objective.beta, ref, objective.label_smoothing)
    result = train(model, train_batches, val_eval, loss_fn, training, work_dir)
    discard_checkpoints(work_dir)
    policy = result.model
    after = {
        "train": implicit_reward_metrics(policy, train_eval, ref, objective.beta),
        "val": implicit_reward_metrics(policy, val_eval, ref, objective.beta),
    }
    metrics = {
        "objective": objective.loss,
        "beta": objective.beta,
        "steps": result.steps,
        "train_padding_fraction": any_padding_fraction(train_batches),
        "tokens_per_second": result.tokens_per_second,
        "pairs_per_second": result.examples_per_second,
        # the reference scored as its own policy: h = 0 everywhere (implicit accuracy 0, ties count wrong)
        "reference": before,
        "policy": after,
        **result.final_metrics,
    }
    bundle = ModelBundle(policy.cpu().eval(), reference.tokenizer, {"objective": objective.loss, "beta": objective.beta, "steps": result.steps})
    return PolicyRun(bundle, _curve(result.history), metrics)


def train_gpo(
    reference: ModelBundle,
    preference_table: PreferenceTableFn,
    pairs: pl.DataFrame,
    gpo: GPOConfig,
    data: PolicyDataConfig,
    training: TrainConfig,
    work_dir: str | Path,
    preference_model_name: str,
) -> PolicyRun:
    """T GPO iterations from the reference (SFT) policy; every iteration's policy and texts are kept."""
    train_frame = split_pairs(pairs, "train", None, data.sources)
    prompts_frame = train_frame.unique("prompt_id", keep="first").sort("prompt_id")
    if gpo.max_prompts is not None:
        prompts_frame = prompts_frame.head(gpo.max_prompts)
    prompts = prompts_frame["prompt"].to_list()
    if not prompts:
        raise ValueError("validated_pairs has no training prompts for GPO to sample from")
    tokenizer, policy = reference.tokenizer, reference.model
    sampling = SamplingConfig.from_dict(gpo.sampling)
    loss_fn = make_gpo_loss_fn(gpo.beta)

    def encode(prompt: str, response: str) -> tuple[list[int], int]:
        seq = tokenize_sequence(tokenizer, prompt, response, data.max_length, data.max_prompt_length)
        return seq.input_ids, seq.prompt_length

    curves, generations, iteration_bundles, per_iteration = [], [], {}, []
    for iteration in range(1, gpo.iterations + 1):
        scored = sample_and_score(
            policy, tokenizer, prompts, encode, preference_table, replace(sampling, seed=sampling.seed + iteration)
        )
        seqs = tokenize_sequences(tokenizer, scored["prompt"].to_list(), scored["response"].to_list(), data.max_length, data.max_prompt_length)
        eval_batches = make_row_batches(seqs, data.eval_batch_size, tokenizer.pad_token_id, seed=None)
        old = rows_logprobs(policy, eval_batches, len(seqs))  # pi_t, fixed for this iteration
        scores = scored["score"].to_list()
        train_batches = make_row_batches(
            seqs, data.batch_size, tokenizer.pad_token_id, seed=training.seed + iteration,
            targets={"old_logp": old.tolist(), "score": scores},
        )
        result = train(policy, train_batches, [], loss_fn, replace(training, seed=training.seed + iteration), Path(work_dir) / f"iteration_{iteration}")
        discard_checkpoints(Path(work_dir) / f"iteration_{iteration}")
        policy = result.model
        new = rows_logprobs(policy, eval_batches, len(seqs))
        score_t = torch.tensor(scores, dtype=torch.float32)
        log_ratio = new - old
        per_iteration.append({
            "iteration": iteration,
            "responses": len(seqs),
            "mean_response_tokens": float(scored["n_tokens"].mean()),
            "finished_fraction": float(scored["finished"].mean()),
            "mean_abs_score": float(score_t.abs().mean()),
            "final_train_loss": result.history[-1]["train_loss"],
            # did the policy move toward better-scored samples? corr(log pi_{t+1}/pi_t, s_i)
            "score_logratio_correlation": float(torch.corrcoef(torch.stack([log_ratio, score_t]))[0, 1]),
            "tokens_per_second": result.tokens_per_second,
        })
        curves.append(_curve(result.history).with_columns(pl.lit(iteration).alias("iteration")))
        generations.append(scored.with_columns(
            pl.lit(iteration, dtype=pl.Int64).alias("iteration"),
            pl.Series("old_logp", old.double().tolist(), dtype=pl.Float64),
            pl.Series("new_logp", new.double().tolist(), dtype=pl.Float64),
        ))
        meta = {"objective": "gpo", "iteration": iteration, "preference_model": preference_model_name}
        iteration_bundles[f"iteration_{iteration}"] = ModelBundle(copy.deepcopy(policy).cpu().eval(), tokenizer, meta)

    columns = ["iteration", "prompt_index", "sample_index", "prompt", "response", "n_tokens", "finished",
               "score", "pairwise_scores", "old_logp", "new_logp"]
    metrics = {
        "objective": "gpo",
        "preference_model": preference_model_name,
        "beta": gpo.beta,
        "prompts": len(prompts),
        "samples_per_prompt": sampling.samples_per_prompt,
        "iterations": per_iteration,
    }
    final = ModelBundle(policy.cpu().eval(), tokenizer, {"objective": "gpo", "iterations": gpo.iterations, "preference_model": preference_model_name})
    return PolicyRun(final, pl.concat(curves, how="diagonal_relaxed"), metrics, pl.concat(generations).select(columns), iteration_bundles)
