"""The policy objectives end to end, framework-free: SFT, preference policies, iterative GPO.

Each function takes the pairs table and configuration and returns models, curves and metrics;
the Kedro nodes only unpack parameters and hand results to the catalog. Training itself is the
shared loop of core/training/loop.py (one loop for every objective); this module builds the
batches, the reference tables and the loss functions it needs.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import polars as pl
import torch

from prefalign.core.models import build_causal_lm, build_tokenizer
from prefalign.core.models.tokenizer import tokenizer_params_for_model
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.policy.batches import make_row_batches
from prefalign.core.models.params import dataclass_from_params
from prefalign.core.policy.generation import SamplingConfig
from prefalign.core.policy.gpo import (PreferenceTableFn, check_gpo_beta, make_gpo_loss_fn, rows_logprobs,
                                       sample_and_score)
from prefalign.core.policy.objectives import (
    implicit_reward_metrics,
    make_pairwise_loss_fn,
    reference_metrics,
    sft_loss_fn,
)
from prefalign.core.policy.preference import preference_table_fn
from prefalign.core.policy.reference import ReferenceLogprobs, compute_reference_logprobs
from prefalign.core.schema import with_source_names
from prefalign.core.training.batching import (
    TokenizedPairs,
    padding_fraction,
    prompt_messages_of,
    prompt_token_ids,
    tokenize_sequences,
)
from prefalign.core.pair_selection import cap_rows, rows_of
from prefalign.core.training.token_cache import cached_tokenize_pair_frame
from prefalign.core.ties import leave_out_ties
from prefalign.core.training.packing import any_padding_fraction, pair_batches, resolve_layout
from prefalign.core.training.resume import discard_checkpoints
from prefalign.core.training.loop import TrainConfig, train
from prefalign.core.training.normalisation import StepLoss
from prefalign.core.training.run import TrainingRun, curve_frame


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicyDataConfig:
    """Which pairs and how they are tokenised and batched.

    Raises:
        ValueError: from ``from_dict``: an unknown key, or ``sources`` not a non-empty list / null.
    """

    max_length: int = 256
    max_prompt_length: int = 128
    batch_size: int = 8  # pairs (or sequences for SFT/GPO) per optimizer micro-batch
    eval_batch_size: int = 16
    max_train_pairs: int | None = None  # a deterministic subset (by pair_id) for CPU budgets
    max_val_pairs: int | None = None
    # Train only on these `source` values (None: every source; a list, or one string "a b"). The
    # embedded default picks synthetic_scalar: template text a tiny CPU model can learn, judged by the lab's r*.
    sources: list[str] | None = None
    token_cache_dir: str | None = None  # tokenised pairs read from here on demand (core/training/token_cache.py); null = in memory

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "PolicyDataConfig":
        """Parse ``policy.defaults.data``.

        Args:
            params: PolicyDataConfig keys, or None (all defaults).

        Returns:
            The config.

        Raises:
            ValueError: an unknown key, a bad ``sources``, or a size < 1.
        """
        cfg = dataclass_from_params(cls, with_source_names(params, "sources"), "data")
        if cfg.sources is not None and (isinstance(cfg.sources, str) or not cfg.sources):
            raise ValueError(
                f"policy data sources={cfg.sources!r} must be a non-empty list of source names, or null for all sources"
            )
        for key in ("batch_size", "eval_batch_size", "max_length", "max_prompt_length"):
            if getattr(cfg, key) < 1:
                raise ValueError(f"data.{key}={getattr(cfg, key)} must be >= 1")
        return cfg


@dataclass(frozen=True)
class GPOConfig:
    """Iterative GPO: T iterations of K samples per prompt, scored by a preference model.

    Raises:
        ValueError: from ``from_dict``: an unknown key, iterations < 1, beta <= 0, max_prompts < 1, or a
            bad sampling config.

    Source: docs/methods.md s4.6.
    """

    iterations: int = 3
    beta: float = 1.0
    max_prompts: int | None = None  # training prompts per iteration (deterministic subset)
    sampling: dict[str, Any] = field(default_factory=dict)  # SamplingConfig keys

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "GPOConfig":
        """Parse ``policy.<name>.gpo``.

        Args:
            params: GPOConfig keys, or None (all defaults).

        Returns:
            The config.

        Raises:
            ValueError: an unknown key, iterations < 1, beta <= 0, max_prompts < 1, or a bad sampling config.
        """
        cfg = dataclass_from_params(cls, params, "on-policy (GPO) config")
        if cfg.iterations < 1:
            raise ValueError(f"gpo.iterations={cfg.iterations} must be >= 1")
        check_gpo_beta(cfg.beta)
        if cfg.max_prompts is not None and cfg.max_prompts < 1:
            raise ValueError(f"gpo.max_prompts={cfg.max_prompts} must be >= 1, or null for every training prompt")
        SamplingConfig.from_dict(cfg.sampling)  # fail before any training
        return cfg


def checkpoint_dir_of(block: dict[str, Any], where: str) -> str:
    """``checkpoint_dir`` of a policy objective's parameters (``policy.defaults`` merged with its block):
    the folder under which an interrupted run resumes; required, a non-empty path.

    Args:
        block: the objective's merged parameters.
        where: its name in messages (``policy.dpo``).

    Returns:
        The folder (text); each run's state is a fingerprinted sub-folder of it.

    Raises:
        ValueError: missing, or not a non-empty text.
    """
    checkpoint_dir = block.get("checkpoint_dir")
    if not isinstance(checkpoint_dir, str) or not checkpoint_dir:
        raise ValueError(f"{where}.checkpoint_dir={checkpoint_dir!r}: give the folder an interrupted run resumes from "
                         "(text, e.g. data/06_models/policy_work, in policy.defaults)")
    return checkpoint_dir


def scoring_batch_size_of(block: dict[str, Any], where: str) -> int:
    """``policy.<name>.scoring_batch_size`` of an on-policy objective: prompts per preference-model call (default 16).

    Args:
        block: the objective's parameters block.
        where: its name in messages (``policy.gpo``).

    Returns:
        The batch size (prompts per preference-model call).

    Raises:
        ValueError: not an integer >= 1.
    """
    size = block.get("scoring_batch_size", 16)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{where}.scoring_batch_size={size!r} must be an integer >= 1 (prompts per scoring call)")
    return size


def apply_cpu_threads(training: TrainConfig) -> None:
    """Set torch's CPU threads to ``training.cpu_threads`` now (the loop sets them when training
    starts; the passes before it, reference log-probs and sampling, should run under the same setting).

    Args:
        training: the objective's TrainConfig (``cpu_threads`` None: leave torch's setting).

    Returns:
        None.
    """
    if training.cpu_threads is not None:
        torch.set_num_threads(training.cpu_threads)


def split_pairs(pairs: pl.DataFrame, split: str, limit: int | None, sources: Sequence[str] | None = None) -> pl.DataFrame:
    """Rows of one split (of the given sources, None: all), one per pair_id, in pair_id order (a
    stable pseudo-random subset when limited).

    Args:
        pairs: validated pairs.
        split: train | val.
        limit: max rows (the smallest pair_ids are kept), or None for every row.
        sources: the sources to keep, or None for every source.

    Returns:
        The selected rows, columns unchanged, in pair_id order.

    Raises:
        ValueError: naming sources that have no rows (and the ones present).
    """
    if sources is not None:
        missing = sorted(set(sources) - set(pairs["source"].unique().to_list()))
        if missing:
            raise ValueError(
                f"policy data sources {missing} have no rows in validated_pairs (present: "
                f"{sorted(pairs['source'].unique().to_list())}); enable them in feedback.sources or change "
                "policy.defaults.data.sources"
            )
    frame = rows_of(pairs, split, sources).unique("pair_id", keep="first")
    return cap_rows(frame, limit).sort("pair_id")  # the smallest pair_ids (core/pair_selection.py)


def _tokenize_frame(tokenizer, frame: pl.DataFrame, data: PolicyDataConfig) -> TokenizedPairs:
    return cached_tokenize_pair_frame(tokenizer, frame, data.max_length, data.max_prompt_length, data.token_cache_dir)


def _without_identical(tokenizer, frame: pl.DataFrame, data: PolicyDataConfig) -> tuple[pl.DataFrame, TokenizedPairs, int]:
    """Pairs whose two sides are token-identical after truncation carry no preference: drop them
    from the frame and the tokenised table together (pair_index keeps addressing frame rows)."""
    tokenized = _tokenize_frame(tokenizer, frame, data)
    keep = ~tokenized.identical
    return frame.filter(pl.Series(keep)), tokenized.subset(keep), int((~keep).sum())


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
    name: str,
    loss_fn: StepLoss = sft_loss_fn,
) -> TrainingRun:
    """SFT on prompt + chosen with the loss on response tokens only; a tokenizer is trained (or
    loaded) on the training texts and saved with the model, which is the reference of every other
    policy.

    Args:
        pairs: validated pairs (train and val splits used).
        tokenizer_params: a TokenizerConfig dict.
        model_params: a ModelConfig dict.
        data: data selection and lengths (PolicyDataConfig).
        training: loop settings (TrainConfig).
        work_dir: resumable loop checkpoints.
        name: the registry name (metrics, metadata).
        loss_fn: the loop's loss on RowBatches of prompt + chosen: the registry entry's ``loss``
            (default :data:`sft_loss_fn`, response-token NLL).

    Returns:
        TrainingRun (model in eval mode on CPU, per-step curve, metrics incl. val_loss).

    Raises:
        ValueError: no train pairs, or a bad tokenizer/model config.

    Source: docs/methods.md s4.1.
    """
    train_frame, val_frame = _train_and_val(pairs, data)
    texts = train_frame["prompt"].to_list() + train_frame["chosen"].to_list() + train_frame["rejected"].to_list()
    tokenizer = build_tokenizer(tokenizer_params_for_model(tokenizer_params, model_params), texts)
    model = build_causal_lm(model_params, tokenizer)

    def sequences(frame: pl.DataFrame):
        return tokenize_sequences(tokenizer, frame["prompt"].to_list(), frame["chosen"].to_list(), data.max_length,
                                  data.max_prompt_length, prompt_messages=prompt_messages_of(frame))

    train_batches = make_row_batches(sequences(train_frame), data.batch_size, tokenizer.pad_token_id, seed=training.seed)
    val_batches = make_row_batches(sequences(val_frame), data.eval_batch_size, tokenizer.pad_token_id, seed=None)
    result = train(model, train_batches, val_batches, loss_fn, training, work_dir)
    metrics = {
        "objective": name,
        "train_pairs": train_frame.height,
        "val_pairs": val_frame.height,
        "steps": result.steps,
        "train_padding_fraction": padding_fraction([b.sequences for b in train_batches]),
        "tokens_per_second": result.tokens_per_second,
        "final_train_loss": result.history[-1]["train_loss"] if result.history else None,
        **result.final_metrics,
    }
    bundle = ModelBundle(result.model.cpu().eval(), tokenizer, {"objective": name, "steps": result.steps})
    return TrainingRun(bundle, curve_frame(result.history), metrics)


def _pair_batches(bundle: ModelBundle, train_frame: pl.DataFrame, val_frame: pl.DataFrame, data: PolicyDataConfig, seed: int | None,
                  training: TrainConfig | None = None):
    """Train and val pair batches (padded, or packed per ``training``: core/training/packing.py) whose
    pair_index addresses train rows then val rows of one table, the number of train and val pairs
    kept, and the pairs excluded as identical after truncation."""
    pad = bundle.tokenizer.pad_token_id
    training = None if training is None else resolve_layout(training, bundle.model)  # "auto": packed for causal LMs
    train_frame, train_tok, train_identical = _without_identical(bundle.tokenizer, train_frame, data)
    if len(train_tok) == 0:
        raise ValueError(f"every train pair is token-identical after truncation to max_length={data.max_length}; raise it")
    train_batches = pair_batches(train_tok, data.batch_size, pad, seed, training)
    train_eval = list(pair_batches(train_tok, data.eval_batch_size, pad, None, training))
    val_eval: list = []
    val_frame, val_tok, val_identical = _without_identical(bundle.tokenizer, val_frame, data) if val_frame.height else (val_frame, None, 0)
    if val_frame.height:
        val_eval = [
            replace(b, pair_index=b.pair_index + train_frame.height)
            for b in pair_batches(val_tok, data.eval_batch_size, pad, None, training)
        ]
    pair_ids = train_frame["pair_id"].to_list() + val_frame["pair_id"].to_list()
    excluded = {"reason": "chosen and rejected are token-identical after truncation (no preference left)",
                "train": train_identical, "val": val_identical}
    return train_batches, train_eval, val_eval, pair_ids, (train_frame.height, val_frame.height), excluded


def reference_logprobs(reference: ModelBundle, pairs: pl.DataFrame, data: PolicyDataConfig,
                       training: TrainConfig | None = None) -> pl.DataFrame:
    """log pi_ref of chosen and rejected for every train and val pair, once.

    Args:
        reference: the SFT policy.
        pairs: validated pairs.
        data: the same selection the training uses.
        training: its ``packing`` / ``share_prompt`` switches pick the batch layout (same values), its
            ``mixed_precision`` the compute precision (the training forward's autocast, so h = 0 at the start).

    Returns:
        A table pair_id, ref_chosen_logp, ref_rejected_logp (summed response log-probs, nats).

    Source: docs/methods.md s4 (reference log-probs are constant: computed once).
    """
    train_frame, val_frame = _train_and_val(pairs, data)
    _, train_eval, val_eval, pair_ids, _, _ = _pair_batches(reference, train_frame, val_frame, data, None, training)
    return compute_reference_logprobs(reference.model, train_eval + val_eval, pair_ids,
                                      training.mixed_precision if training is not None else "no")


def train_preference(
    reference: ModelBundle,
    pairs: pl.DataFrame,
    reference_table: pl.DataFrame | None,
    spec: Any,
    config: Any,
    data: PolicyDataConfig,
    training: TrainConfig,
    work_dir: str | Path,
) -> TrainingRun:
    """A pairwise policy objective (DPO, MMPO, IPO, ... : the registry entry ``spec``) from the reference.

    Args:
        reference: the SFT policy; the policy starts as its weights (trained in place).
        pairs: validated pairs; train and val splits are used.
        reference_table: log pi_ref per pair_id (``reference_logprobs``) when ``spec.needs_reference``;
            None for reference-free objectives (no reference pass at all).
        spec: the registry entry (its ``loss`` objective function, ``name``, ``needs_reference``).
        config: the entry's parsed config (``spec.parse``).
        data, training: data selection and loop settings.
        work_dir: resumable loop checkpoints (dropped when the run finishes).

    Returns:
        TrainingRun; metrics hold the reference's and the policy's pair rankings on train and val.

    Raises:
        ValueError: no train pairs, or a reference table missing for an objective that needs one.

    Source: docs/methods.md s4.
    """
    if spec.needs_reference and reference_table is None:
        raise ValueError(f"objective {spec.name!r} needs reference log-probs, but no reference table was given")
    train_frame, val_frame = _train_and_val(pairs, data)
    # Hard-label losses leave ties out (core/ties.py); after the cap, so the pairs stay a subset of
    # the reference table's (computed once for every objective).
    drop = spec.drops_ties(config)
    train_frame, train_ties = leave_out_ties(train_frame, drop)
    val_frame, val_ties = leave_out_ties(val_frame, drop)
    if train_ties or val_ties:
        log.info("policy %s: %d train and %d val ties (p_chosen = 0.5) left out: a hard-label loss cannot learn 'equal'",
                 spec.name, train_ties, val_ties)
    if train_frame.height == 0:
        raise ValueError(f"every train pair is a tie (p_chosen = 0.5); policy.{spec.name} has hard labels and needs "
                         "preferences: set objective.soft_targets: true to train on ties, or add non-tie pairs")
    train_batches, train_eval, val_eval, pair_ids, (n_train, n_val), excluded = _pair_batches(
        reference, train_frame, val_frame, data, training.seed, training
    )
    ref = ReferenceLogprobs.from_table(reference_table, pair_ids) if spec.needs_reference else None
    model = reference.model
    model.train()
    beta = getattr(config, "beta", None)
    before = None
    if ref is not None:
        before = {
            "train": reference_metrics(ref, torch.arange(n_train)),
            "val": reference_metrics(ref, torch.arange(n_train, n_train + n_val)),
        }
    loss_fn = make_pairwise_loss_fn(spec.loss, config, ref)
    result = train(model, train_batches, val_eval, loss_fn, training, work_dir)
    policy = result.model
    after = {
        "train": implicit_reward_metrics(policy, train_eval, ref, beta, training.mixed_precision),
        "val": implicit_reward_metrics(policy, val_eval, ref, beta, training.mixed_precision),
    }
    metrics = {
        "objective": spec.name,
        **({"beta": beta} if beta is not None else {}),
        "soft_targets": bool(getattr(config, "soft_targets", False)),
        "ties_dropped": {"train": train_ties, "val": val_ties},
        "steps": result.steps,
        "train_padding_fraction": any_padding_fraction(train_batches),
        "tokens_per_second": result.tokens_per_second,
        "pairs_per_second": result.examples_per_second,
        "excluded_pairs": excluded,
        # the reference scored as its own policy: h = 0 everywhere (every pair a tie: implicit accuracy 0.5)
        **({"reference": before} if before is not None else {}),
        "policy": after,
        **result.final_metrics,
    }
    meta = {"objective": spec.name, "steps": result.steps, **({"beta": beta} if beta is not None else {})}
    bundle = ModelBundle(policy.cpu().eval(), reference.tokenizer, meta)
    return TrainingRun(bundle, curve_frame(result.history), metrics)


def train_gpo(
    reference: ModelBundle,
    preference_table: PreferenceTableFn,
    pairs: pl.DataFrame,
    gpo: GPOConfig,
    data: PolicyDataConfig,
    training: TrainConfig,
    work_dir: str | Path,
    preference_model_name: str,
    name: str,
    loss_factory: Callable[[float], StepLoss] = make_gpo_loss_fn,
) -> TrainingRun:
    """T GPO iterations from the reference (SFT) policy; every iteration's policy and texts are kept.

    Under several processes (``launch``) every process samples and scores the same responses (the
    same weights and sampling seeds) and trains on its share of each batch (DDP), so the run equals
    the one-process run (tests/policy/test_multiprocess.py).

    Args:
        reference: the SFT policy (trained in place).
        preference_table: (prompts, groups of K responses, prompt_messages) -> (P, K, K) log-odds.
        pairs: validated pairs; the training prompts come from the train split.
        gpo, data, training: GPO, data and loop settings.
        work_dir: loop checkpoints, one folder per iteration.
        preference_model_name, name: recorded in metrics and metadata.
        loss_factory: ``beta -> StepLoss`` on RowBatches with ``old_logp`` and ``score`` targets: the
            registry entry's ``loss`` (default :func:`make_gpo_loss_fn`, the s4.6 square loss).

    Returns:
        TrainingRun with generations (every sample, its score and log-probs) and iteration_bundles.

    Raises:
        ValueError: when there are no training prompts.

    Source: docs/methods.md s4.6.
    """
    train_frame = split_pairs(pairs, "train", None, data.sources)
    prompts_frame = train_frame.unique("prompt_id", keep="first").sort("prompt_id")
    if gpo.max_prompts is not None:
        prompts_frame = prompts_frame.head(gpo.max_prompts)
    prompts = prompts_frame["prompt"].to_list()
    if not prompts:
        raise ValueError("validated_pairs has no training prompts for GPO to sample from")
    messages = prompt_messages_of(prompts_frame)
    tokenizer, policy = reference.tokenizer, reference.model
    sampling = SamplingConfig.from_dict(gpo.sampling)
    loss_fn = loss_factory(gpo.beta)
    # the prompts as every other policy pass renders them (the chat template's turns when there is one)
    prompt_ids = prompt_token_ids(tokenizer, prompts, data.max_length, data.max_prompt_length, messages)

    curves, generations, iteration_bundles, per_iteration = [], [], {}, []
    for iteration in range(1, gpo.iterations + 1):
        timings: dict[str, float] = {}  # where an iteration's time goes: sampling, scoring, log-prob passes, training
        scored = sample_and_score(
            policy, tokenizer, prompts, prompt_ids, preference_table, replace(sampling, seed=sampling.seed + iteration),
            messages, timings,
        )
        started = time.perf_counter()
        seqs = tokenize_sequences(tokenizer, scored["prompt"].to_list(), scored["response"].to_list(), data.max_length,
                                  data.max_prompt_length, prompt_messages=prompt_messages_of(scored))
        eval_batches = make_row_batches(seqs, data.eval_batch_size, tokenizer.pad_token_id, seed=None)
        old = rows_logprobs(policy, eval_batches, len(seqs), training.mixed_precision)  # pi_t, fixed for this iteration
        timings["logprob_seconds"] = time.perf_counter() - started
        scores = scored["score"].to_list()
        train_batches = make_row_batches(
            seqs, data.batch_size, tokenizer.pad_token_id, seed=training.seed + iteration,
            targets={"old_logp": old.tolist(), "score": scores},
        )
        started = time.perf_counter()
        result = train(policy, train_batches, [], loss_fn, replace(training, seed=training.seed + iteration), Path(work_dir) / f"iteration_{iteration}")
        timings["training_seconds"] = time.perf_counter() - started
        discard_checkpoints(Path(work_dir) / f"iteration_{iteration}")
        policy = result.model
        started = time.perf_counter()
        new = rows_logprobs(policy, eval_batches, len(seqs), training.mixed_precision)
        timings["logprob_seconds"] += time.perf_counter() - started
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
            **timings,
            "sampled_tokens_per_second": float(scored["n_tokens"].sum()) / max(timings["sampling_seconds"], 1e-9),
        })
        curves.append(curve_frame(result.history).with_columns(pl.lit(iteration).alias("iteration")))
        generations.append(scored.with_columns(
            pl.lit(iteration, dtype=pl.Int64).alias("iteration"),
            pl.Series("old_logp", old.double().tolist(), dtype=pl.Float64),
            pl.Series("new_logp", new.double().tolist(), dtype=pl.Float64),
        ))
        meta = {"objective": name, "iteration": iteration, "preference_model": preference_model_name}
        iteration_bundles[f"iteration_{iteration}"] = ModelBundle(copy.deepcopy(policy).cpu().eval(), tokenizer, meta)

    columns = ["iteration", "prompt_index", "sample_index", "prompt", "prompt_messages", "response", "n_tokens", "finished",
               "score", "pairwise_scores", "old_logp", "new_logp"]
    metrics = {
        "objective": name,
        "preference_model": preference_model_name,
        "beta": gpo.beta,
        "prompts": len(prompts),
        "samples_per_prompt": sampling.samples_per_prompt,
        "iterations": per_iteration,
    }
    final = ModelBundle(policy.cpu().eval(), tokenizer, {"objective": name, "iterations": gpo.iterations, "preference_model": preference_model_name})
    return TrainingRun(final, pl.concat(curves, how="diagonal_relaxed"), metrics, pl.concat(generations).select(columns), iteration_bundles)


# The registry's trainers (``ObjectiveSpec.train``): one signature, (spec, args, frames, bundles,
# tokenizers) -> TrainingRun, called by core/objectives/train.train_objective in every process. Each
# calls its entry's ``loss`` factory; ``args`` is JSON-able (it crosses to `accelerate launch`).
def run_sft_objective(spec: Any, args: dict[str, Any], frames: dict[str, pl.DataFrame],
                      bundles: dict[str, ModelBundle], tokenizers: dict[str, Any]) -> TrainingRun:
    """The supervised trainer (SFT, the reference policy).

    Args:
        spec: the registry entry (``loss``: a ready StepLoss, ``name``).
        args: ``{tokenizer, model, data, training, output_dir}`` (TokenizerConfig, ModelConfig,
            PolicyDataConfig, TrainConfig dicts).
        frames: ``{pairs}``.
        bundles, tokenizers: unused (the trainers' common signature).

    Returns:
        :func:`train_sft`'s TrainingRun.

    Raises:
        ValueError: a bad config, or no train pairs.

    Source: docs/methods.md s4.1.
    """
    return train_sft(frames["pairs"], args["tokenizer"], args["model"], PolicyDataConfig.from_dict(args["data"]),
                     TrainConfig.from_dict(args["training"]), args["output_dir"], spec.name, spec.loss)


def run_pairwise_objective(spec: Any, args: dict[str, Any], frames: dict[str, pl.DataFrame],
                           bundles: dict[str, ModelBundle], tokenizers: dict[str, Any]) -> TrainingRun:
    """The pairwise trainer (DPO, MMPO, IPO, SimPO, ORPO, ...): ``spec.loss`` is the objective on PairLogprobs.

    Args:
        spec: the registry entry.
        args: ``{config (the objective's block), data, training, output_dir}``.
        frames: ``{pairs}`` and ``reference_logprobs`` when ``spec.needs_reference``.
        bundles: ``{reference}`` (the SFT policy, trained in place).
        tokenizers: unused (the trainers' common signature).

    Returns:
        :func:`train_preference`'s TrainingRun.

    Raises:
        ValueError: a bad config, no train pairs, or a missing reference table.

    Source: docs/methods.md s4.
    """
    return train_preference(bundles["reference"], frames["pairs"], frames.get("reference_logprobs"), spec,
                            spec.parse(args["config"]), PolicyDataConfig.from_dict(args["data"]),
                            TrainConfig.from_dict(args["training"]), args["output_dir"])


def run_on_policy_objective(spec: Any, args: dict[str, Any], frames: dict[str, pl.DataFrame],
                            bundles: dict[str, ModelBundle], tokenizers: dict[str, Any]) -> TrainingRun:
    """The on-policy trainer (GPO): samples scored by the preference model, ``spec.loss(beta)`` per iteration.

    Args:
        spec: the registry entry.
        args: ``{config (GPOConfig dict), data, training, output_dir, scoring_batch_size,
            preference_model_name}``.
        frames: ``{pairs}``.
        bundles: ``{reference (the SFT policy, trained in place), preference (a reward-pipeline model)}``;
        tokenizers: unused.

    Returns:
        :func:`train_gpo`'s TrainingRun (with generations and iteration bundles).

    Raises:
        ValueError: a bad config, no training prompts, or a preference model that is not a reward model.

    Source: docs/methods.md s4.6.
    """
    return train_gpo(bundles["reference"], preference_table_fn(bundles["preference"], args["scoring_batch_size"]),
                     frames["pairs"], spec.parse(args["config"]), PolicyDataConfig.from_dict(args["data"]),
                     TrainConfig.from_dict(args["training"]), args["output_dir"], args["preference_model_name"],
                     spec.name, spec.loss)
