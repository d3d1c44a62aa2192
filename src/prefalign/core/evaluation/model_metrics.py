"""One model's metrics: a reward model, a policy (as an implicit reward, and by its samples against
the SFT reference), or the synthetic lab's ground truth, scored on the evaluated tables
(core/evaluation/evaluated_pairs.py) and measured (docs/evaluation.md, docs/methods.md s5, s9).

Each model becomes a ``PairScorer`` (core/evaluation/pair_scorers.py); ``scored_metrics`` measures any
scorer the same way, so the rows of the comparison table are comparable.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import polars as pl

from prefalign.core.evaluation import evaluate, pair_scorers, win_rate
from prefalign.core.evaluation import rewardbench as rewardbench_format
from prefalign.core.evaluation.config import EvaluationConfig
from prefalign.core.evaluation.evaluated_pairs import policy_subsets
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.synthetic import CYCLIC_SOURCE, SCALAR_SOURCE

log = logging.getLogger(__name__)

# audit(pairs) -> (mask of pairs token-identical after the model's truncation, truncation statistics)
Audit = Callable[[pl.DataFrame], tuple[Any, dict[str, Any]]]


def scored_metrics(scorer: pair_scorers.PairScorer, tables: Mapping[str, pl.DataFrame], rewardbench_rows: pl.DataFrame,
                   triples: pl.DataFrame, config: EvaluationConfig, audit: Audit | None = None) -> dict[str, Any]:
    """Pair sets (``{"pairs": test, "heldout": held-out}``), RewardBench rows and cycles scored by one
    judge, then measured.

    Args:
        scorer: the model as a PairScorer.
        tables: set name -> pairs table; empty tables are skipped.
        rewardbench_rows: core/evaluation/rewardbench.py ``prepare_rows`` output (may be empty).
        triples: cyclic triples (may be empty).
        config: the ``evaluation`` block.
        audit: marks pairs token-identical after truncation (reported apart, not scored); None: no audit.

    Returns:
        ``{set: metrics, "rewardbench": ..., "cyclic": ..., "truncation": {set: stats},
        "_scores": {set: per-pair logits}, "_rewardbench_scores": per-row scores}`` (the keys whose
        table was non-empty; the underscored ones are dropped before the metrics JSON is written).
    """
    metrics: dict[str, Any] = {"_scores": {}, "truncation": {}}
    for set_name, pairs in tables.items():
        if pairs.is_empty():
            continue
        scored = pair_scorers.score_pairs(pairs, scorer)
        if audit is not None:
            identical, stats = audit(pairs)
            scored = scored.with_columns(pl.Series("identical_after_truncation", identical))
            metrics["truncation"][set_name] = stats
        metrics[set_name] = evaluate.evaluate_pair_scores(scored, config.n_bins, config.bootstrap)
        metrics["_scores"][set_name] = evaluate.pair_score_record(scored)
    if rewardbench_rows.height:
        rb_config = config.rewardbench
        scored_rows = pair_scorers.score_pairs(rewardbench_rows, scorer)
        metrics["rewardbench"] = rewardbench_format.score(
            scored_rows, rb_config.sections, rb_config.subset_weights, rb_config.max_rows_per_subset,
            config.bootstrap, config.n_bins)
        metrics["_rewardbench_scores"] = rewardbench_format.score_rows(scored_rows)
        if audit is not None and "response_index" not in rewardbench_rows.columns:
            metrics["truncation"]["rewardbench"] = audit(rewardbench_rows)[1]
    if triples.height:
        metrics["cyclic"] = evaluate.evaluate_triples(pair_scorers.score_triples(triples, scorer))
    return metrics


def truncation_audit(tokenizer: Any, max_length: int, max_prompt_length: int) -> Audit:
    """The audit of a model that reads at most ``max_length`` tokens, ``max_prompt_length`` of them prompt.

    Args:
        tokenizer: the model's tokenizer.
        max_length: the model's sequence cap (tokens).
        max_prompt_length: the model's prompt cap (tokens).

    Returns:
        ``pairs -> (identical, stats)``: ``pair_scorers.truncation_audit`` with these caps (identical: bool
        [n_pairs], True where both sides are token-identical once truncated).
    """
    return lambda pairs: pair_scorers.truncation_audit(tokenizer, pairs, max_length, max_prompt_length)


def reward_model_scorer(bundle: ModelBundle) -> pair_scorers.PairScorer:
    """A reward checkpoint (BT, MMPO or GPM) as a PairScorer: its pair_logits, with each row's chat turns.

    Args:
        bundle: the loaded reward checkpoint (model and tokenizer).

    Returns:
        ``(prompts, first, second, prompt_messages=None) -> [B]`` logits of P(first > second)
        (``reward.scoring.pair_logits``; docs/methods.md s2, s3).
    """
    from prefalign.core.reward.scoring import pair_logits

    def scorer(prompts, first, second, prompt_messages=None):
        return pair_logits(bundle.model, bundle.tokenizer, list(prompts), list(first), list(second),
                           prompt_messages=prompt_messages)

    return scorer


def curve_records(curve: pl.DataFrame | list[dict[str, Any]] | None) -> list[dict[str, float]]:
    """Training loss by step (and by iteration where the curve has one, e.g. GPO's, whose steps
    restart each iteration), for the training-curves plot (rows without a train loss are skipped).

    Args:
        curve: the training log (a table or its rows, with ``step`` and ``loss`` or ``train_loss``), or None.

    Returns:
        ``[{"step", "loss"}]`` (with ``"iteration"`` first where the curve has it), in the curve's
        order; empty when there is no curve, no ``step`` or no loss column.
    """
    if curve is None:
        return []
    if not isinstance(curve, pl.DataFrame):
        curve = pl.DataFrame(curve, infer_schema_length=None) if curve else pl.DataFrame()
    loss = next((c for c in ("loss", "train_loss") if c in curve.columns), None)
    if loss is None or "step" not in curve.columns:
        return []
    keys = ["iteration", "step"] if "iteration" in curve.columns else ["step"]
    return curve.select(*keys, pl.col(loss).alias("loss")).drop_nulls().to_dicts()


def describe_bundle(bundle: Any) -> str:
    """The checkpoint's metadata in a line; the checkpoint path (environment folder and version) in full.

    Args:
        bundle: a loaded checkpoint (anything with a ``metadata`` mapping, or none).

    Returns:
        ``"k=v, ..."`` of the scalar metadata (cut to 200 characters), then ``"; checkpoint <path>"``
        when the metadata has one.
    """
    metadata = dict(getattr(bundle, "metadata", None) or {})
    checkpoint = metadata.pop("checkpoint", None)
    described = ", ".join(f"{k}={v}" for k, v in metadata.items() if isinstance(v, (str, int, float)))[:200]
    return f"{described}; checkpoint {checkpoint}" if checkpoint else described


def reward_model_metrics(bundle: ModelBundle, training_curve: Any, tables: Mapping[str, pl.DataFrame],
                         rewardbench_rows: pl.DataFrame, triples: pl.DataFrame,
                         config: EvaluationConfig) -> dict[str, Any]:
    """A reward checkpoint's metrics (``scored_metrics`` with its own truncation audit), its training
    curve and description; ``kind`` "reward model".

    Args:
        bundle: the reward checkpoint (its head config gives max_length / max_prompt_length).
        training_curve: its training log (see ``curve_records``).
        tables: set name -> pairs table (``{"pairs": test, "heldout": held-out}``).
        rewardbench_rows: prepared RewardBench rows (may be empty).
        triples: cyclic triples (may be empty).
        config: the ``evaluation`` block.

    Returns:
        ``{"kind": "reward model", "description": ..., **scored_metrics(...), "training_curve": [...]}``.
    """
    head = bundle.model.head_config
    metrics = scored_metrics(reward_model_scorer(bundle), tables, rewardbench_rows, triples, config,
                             truncation_audit(bundle.tokenizer, head.max_length, head.max_prompt_length))
    metrics["training_curve"] = curve_records(training_curve)
    return {"kind": "reward model", "description": describe_bundle(bundle), **metrics}


def win_rate_judge(judge: ModelBundle | Mapping[str, Any], config: EvaluationConfig) -> tuple[pair_scorers.PairScorer, str]:
    """The judge of policy vs reference samples, and its name in the report.

    Args:
        judge: a reward checkpoint none of the policies trained against (``evaluation.generation.judge``),
            or the parameters of the synthetic lab's scalar source (its hidden reward r* judges).
        config: the ``evaluation`` block.

    Returns:
        (scorer, name): a PairScorer of logits of P(first > second), and the judge's name for the report.
    """
    if isinstance(judge, ModelBundle):
        name = f"reward model {config.generation.judge} ({(judge.metadata or {}).get('checkpoint', 'loaded')})"
        return reward_model_scorer(judge), name
    return pair_scorers.scalar_truth_scorer(judge["weights"], judge.get("temperature", 1.0)), "synthetic ground truth r*"


def generation_metrics(name: str, policy: ModelBundle, reference: ModelBundle, reference_samples: pl.DataFrame,
                       judge: ModelBundle | Mapping[str, Any], config: EvaluationConfig,
                       data_params: Mapping[str, Any]) -> dict[str, Any]:
    """The policy's samples on the reference's prompts, judged against the reference's samples, with
    the sampled KL(pi || pi_ref) (docs/methods.md s5 "Win rate"); ``evaluate_generations`` of them.

    Args:
        name: the policy's namespace (for the log).
        policy: the policy checkpoint that samples.
        reference: the SFT reference checkpoint (its log-probs of the policy's samples give the KL).
        reference_samples: ``win_rate.sample_for_prompts`` of the reference (non-empty).
        judge: see ``win_rate_judge``.
        config: the ``evaluation`` block (``generation.sampling``).
        data_params: ``policy.defaults.data`` (max_length, max_prompt_length, eval_batch_size).

    Returns:
        ``{"judge": name, **evaluate_generations(...)}``: win rates, mean lengths (characters), kl and
        kl_se (nats per sequence).
    """
    prompts = reference_samples.select("prompt", "prompt_messages").unique(maintain_order=True)
    sampling = config.generation.sampling
    samples = win_rate.sample_for_prompts(policy, prompts["prompt"].to_list(), sampling,
                                          data_params["max_length"], data_params["max_prompt_length"],
                                          prompts["prompt_messages"].to_list())
    judge_scorer, judge_name = win_rate_judge(judge, config)
    judged = win_rate.judge_against_reference(samples, reference_samples, judge_scorer)
    if sampling.get("temperature", 1.0) != 1.0 or sampling.get("top_p", 1.0) != 1.0:
        # the samples then come from a tempered / truncated pi, not pi: the mean log-ratio is biased
        log.warning("%s: evaluation.generation.sampling has temperature=%s top_p=%s; the KL estimate "
                    "assumes samples from pi itself (set both to 1.0)", name,
                    sampling.get("temperature", 1.0), sampling.get("top_p", 1.0))
    judged = win_rate.with_kl_terms(judged, policy, reference, logprob_args(data_params)["batch_size"])
    return {"judge": judge_name, **evaluate.evaluate_generations(judged)}


def logprob_args(data_params: Mapping[str, Any]) -> dict[str, int]:
    """The policies' own truncation (``policy.defaults.data``), so scores match training.

    Args:
        data_params: ``policy.defaults.data`` (max_length, max_prompt_length; eval_batch_size, default 16).

    Returns:
        ``{"max_length", "max_prompt_length", "batch_size"}`` (tokens, tokens, sequences per forward).
    """
    return {"max_length": data_params["max_length"], "max_prompt_length": data_params["max_prompt_length"],
            "batch_size": data_params.get("eval_batch_size", 16)}


def policy_metrics(name: str, policy: ModelBundle, reference: ModelBundle, reference_logps: pl.DataFrame,
                   reference_samples: pl.DataFrame, training_curve: Any, tables: Mapping[str, pl.DataFrame],
                   rewardbench_rows: pl.DataFrame, triples: pl.DataFrame, judge: ModelBundle | Mapping[str, Any],
                   config: EvaluationConfig, data_params: Mapping[str, Any]) -> dict[str, Any]:
    """A policy checkpoint scored as an implicit reward beta * (log pi - log pi_ref) against the SFT
    reference (docs/methods.md s5) on the policies' subset (``policy_subsets``), plus its win rate and
    KL when the reference has samples; ``kind`` "policy (implicit reward)".

    beta is the checkpoint's own (metadata ``beta``), else ``evaluation.implicit_reward_beta``.

    Args:
        name: the policy's namespace.
        policy: the policy checkpoint.
        reference: the SFT reference checkpoint.
        reference_logps: ``pair_scorers.pair_logprob_table`` of the reference on every pair to score.
        reference_samples: the reference's samples (empty: no win rate).
        training_curve: the policy's training log (see ``curve_records``).
        tables: ``{"pairs": test, "heldout": held-out}``.
        rewardbench_rows: prepared RewardBench rows (may be empty).
        triples: cyclic triples (may be empty).
        judge: see ``win_rate_judge``.
        config: the ``evaluation`` block.
        data_params: ``policy.defaults.data``.

    Returns:
        ``{"kind": "policy (implicit reward)", "description": ..., **scored_metrics(...),
        "training_curve": [...]}``, plus ``"generation"`` (``generation_metrics``) when the
        reference has samples.
    """
    pairs = reference_logps.select("prompt", "prompt_messages", "first", "second")
    args = logprob_args(data_params)
    policy_logps = pair_scorers.pair_logprob_table(policy.model, policy.tokenizer, pairs, **args)
    beta = float((policy.metadata or {}).get("beta", config.implicit_reward_beta))
    scorer = pair_scorers.implicit_reward_scorer(policy_logps, reference_logps, beta)
    test, heldout, rewardbench_rows, triples = policy_subsets(config, tables["pairs"], tables["heldout"],
                                                              rewardbench_rows, triples)
    metrics = scored_metrics(scorer, {"pairs": test, "heldout": heldout}, rewardbench_rows, triples, config,
                             truncation_audit(policy.tokenizer, args["max_length"], args["max_prompt_length"]))
    metrics["training_curve"] = curve_records(training_curve)
    if reference_samples.height:
        metrics["generation"] = generation_metrics(name, policy, reference, reference_samples, judge, config,
                                                   data_params)
    described = describe_bundle(policy)
    if "beta" not in (policy.metadata or {}):  # the metadata, when it has beta, already names it
        described = f"beta={beta}; " + described
    return {"kind": "policy (implicit reward)", "description": described, **metrics}


def truth_scorers(source_params: Mapping[str, Mapping[str, Any]]) -> dict[str, pair_scorers.PairScorer]:
    """The synthetic lab's ground truth per source, from ``feedback.sources``: the scalar source's
    hidden reward r* (its ``weights``, ``temperature``) and the cyclic source's majority rule (its
    ``cyclic_strength``); a source without parameters has no scorer.

    Args:
        source_params: source name -> its ``feedback.sources`` parameters (or None).

    Returns:
        Source name -> PairScorer (logits of P(first > second) under that source's truth).
    """
    scorers: dict[str, pair_scorers.PairScorer] = {}
    if source_params.get(SCALAR_SOURCE) is not None:
        scalar = source_params[SCALAR_SOURCE]
        scorers[SCALAR_SOURCE] = pair_scorers.scalar_truth_scorer(scalar["weights"], scalar.get("temperature", 1.0))
    if source_params.get(CYCLIC_SOURCE) is not None:
        scorers[CYCLIC_SOURCE] = pair_scorers.cyclic_truth_scorer(source_params[CYCLIC_SOURCE].get("cyclic_strength", 4.0))
    return scorers


def ground_truth_metrics(tables: Mapping[str, pl.DataFrame], triples: pl.DataFrame,
                         source_params: Mapping[str, Mapping[str, Any]], config: EvaluationConfig) -> dict[str, Any]:
    """The synthetic truth scored like a model (the ceiling row of the comparison table): each lab
    source's pairs by its own truth (``truth_scorers``; other sources are not scored), the triples by
    the cyclic rule; ``kind`` "ground truth".

    Args:
        tables: set name -> pairs table.
        triples: cyclic triples (may be empty).
        source_params: source name -> its ``feedback.sources`` parameters.
        config: the ``evaluation`` block (n_bins, bootstrap).

    Returns:
        ``{"kind": "ground truth", "description": ..., set: metrics, "cyclic": ...}`` (a set only when
        some of its pairs have a truth; ``cyclic`` only with triples and a cyclic source).
    """
    scorers = truth_scorers(source_params)
    metrics: dict[str, Any] = {"kind": "ground truth",
                               "description": "the synthetic lab's hidden reward / majority rule (synthetic pairs only)"}
    for set_name, pairs in tables.items():
        scored = pair_scorers.score_by_source(pairs, scorers)
        if scored.height:
            metrics[set_name] = evaluate.evaluate_pair_scores(scored, config.n_bins, config.bootstrap)
    if triples.height and CYCLIC_SOURCE in scorers:
        metrics["cyclic"] = evaluate.evaluate_triples(pair_scorers.score_triples(triples, scorers[CYCLIC_SOURCE]))
    return metrics
