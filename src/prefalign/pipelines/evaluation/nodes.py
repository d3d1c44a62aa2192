"""Evaluation nodes: thin, typed calls into core/evaluation (the catalog does all I/O)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import polars as pl
from matplotlib.figure import Figure

from prefalign.core.evaluation import comparison, evaluate, generation, plots, report, scoring, statistics
from prefalign.core.evaluation import rewardbench as rewardbench_format
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.schema import MESSAGES_DTYPE, with_prompt_messages
from prefalign.core.evaluation.config import EvaluationConfig, RewardBenchConfig

logger = logging.getLogger(__name__)


def _config(params: dict[str, Any]) -> EvaluationConfig:
    """``params:evaluation`` parsed and checked by the same rules as the check before the run."""
    return EvaluationConfig.from_params(params)


def select_test_pairs(validated_pairs: pl.DataFrame, params: dict[str, Any]) -> pl.DataFrame:
    """The evaluated pairs: the configured splits, capped per source (seeded) to bound the cost."""
    config = _config(params)
    splits = config.splits
    chosen = validated_pairs.filter(pl.col("split").is_in(splits))
    if config.sources is not None:
        chosen = chosen.filter(pl.col("source").is_in(config.sources))
    if chosen.is_empty():
        raise ValueError(
            f"validated_pairs has no rows in splits {splits}{'' if config.sources is None else f' of sources {config.sources}'} "
            f"(it has splits {validated_pairs['split'].unique().to_list()}); set evaluation.splits / evaluation.sources"
        )
    cap = config.max_pairs_per_source
    if cap:
        chosen = chosen.filter(pl.int_range(pl.len()).shuffle(seed=config.seed).over("source") < cap)
    return chosen.sort("pair_id")


def select_heldout_pairs(validated_pairs: pl.DataFrame, params: dict[str, Any]) -> pl.DataFrame:
    """The held-out sources' pairs (split `heldout`), capped per source like the test pairs; may be empty."""
    splits = _config(params).heldout_splits
    chosen = validated_pairs.filter(pl.col("split").is_in(splits))
    if chosen.is_empty():
        logger.warning("no held-out pairs (splits %s): set feedback.split.heldout_sources to evaluate on sources "
                       "no model was trained on", splits)
        return chosen
    return select_test_pairs(chosen, {**params, "splits": splits, "sources": None})  # every held-out source


def prepare_rewardbench(rewardbench: pl.DataFrame, params: dict[str, Any]) -> pl.DataFrame:
    """A RewardBench v1 or v2 table as scorable pair rows; capped per subset only when asked (seeded)."""
    config = RewardBenchConfig.from_params(params)
    return rewardbench_format.prepare_rows(rewardbench, config.max_rows_per_subset, config.seed)


def select_test_triples(triples: pl.DataFrame, params: dict[str, Any]) -> pl.DataFrame:
    """The cyclic triples of the evaluated splits, held-out ones included (never trained on either)."""
    config = _config(params)
    splits = [*config.splits, *config.heldout_splits]
    return triples.filter(pl.col("split").is_in(splits)) if triples.height else triples


def _bootstrap(params: dict[str, Any]) -> statistics.BootstrapConfig:
    return _config(params).bootstrap


def _scored_metrics(scorer: scoring.PairScorer, tables: dict[str, pl.DataFrame], rewardbench_rows: pl.DataFrame,
                    triples: pl.DataFrame, params: dict[str, Any], audit=None) -> dict[str, Any]:
    """Pair sets (test, held-out), RewardBench and cycles scored by one judge, then measured.

    `audit(pairs) -> (identical mask, truncation stats)` marks pairs that are token-identical
    after the model's truncation: they are reported apart, not scored."""
    config = _config(params)
    metrics: dict[str, Any] = {"_scores": {}, "truncation": {}}
    for set_name, pairs in tables.items():
        if pairs.is_empty():
            continue
        scored = scoring.score_pairs(pairs, scorer)
        if audit is not None:
            identical, stats = audit(pairs)
            scored = scored.with_columns(pl.Series("identical_after_truncation", identical))
            metrics["truncation"][set_name] = stats
        metrics[set_name] = evaluate.evaluate_pair_scores(scored, config.n_bins, config.bootstrap)
        metrics["_scores"][set_name] = evaluate.pair_score_record(scored)
    if rewardbench_rows.height:
        rb_config = config.rewardbench
        scored_rows = scoring.score_pairs(rewardbench_rows, scorer)
        metrics["rewardbench"] = rewardbench_format.score(
            scored_rows, rb_config.sections, rb_config.subset_weights, rb_config.max_rows_per_subset,
            config.bootstrap, config.n_bins)
        metrics["_rewardbench_scores"] = rewardbench_format.score_rows(scored_rows)
        if audit is not None and "response_index" not in rewardbench_rows.columns:
            metrics["truncation"]["rewardbench"] = audit(rewardbench_rows)[1]
    if triples.height:
        metrics["cyclic"] = evaluate.evaluate_triples(scoring.score_triples(triples, scorer))
    return metrics


def _audit(tokenizer, max_length: int, max_prompt_length: int):
    return lambda pairs: scoring.truncation_audit(tokenizer, pairs, max_length, max_prompt_length)


def _reward_model_scorer(bundle: Any) -> scoring.PairScorer:
    """A reward checkpoint as a PairScorer (its pair_logits, with each row's chat turns)."""
    from prefalign.core.reward.scoring import pair_logits

    def scorer(prompts, first, second, prompt_messages=None):
        return pair_logits(bundle.model, bundle.tokenizer, list(prompts), list(first), list(second),
                           prompt_messages=prompt_messages)

    return scorer


def make_reward_model_metrics(name: str):
    """Node factory: a reward checkpoint (BT, MMPO or GPM: the reward branch's pair_logits) -> metrics."""

    def reward_model_metrics(bundle: Any, training_curve: list[dict[str, Any]], test_pairs: pl.DataFrame,
                             heldout_pairs: pl.DataFrame, rewardbench_rows: pl.DataFrame, triples: pl.DataFrame,
                             params: dict[str, Any]) -> dict[str, Any]:
        scorer = _reward_model_scorer(bundle)
        head = bundle.model.head_config
        metrics = _scored_metrics(scorer, {"pairs": test_pairs, "heldout": heldout_pairs}, rewardbench_rows,
                                  triples, params, _audit(bundle.tokenizer, head.max_length, head.max_prompt_length))
        metrics["training_curve"] = _curve_records(training_curve)
        return {"kind": "reward model", "description": _describe_bundle(bundle), **metrics}

    reward_model_metrics.__name__ = f"{name}_metrics"
    return reward_model_metrics


def _logprob_args(data_params: dict[str, Any]) -> dict[str, int]:
    """The policies' own truncation (policy.defaults.data), so scores match training."""
    return {"max_length": data_params["max_length"], "max_prompt_length": data_params["max_prompt_length"],
            "batch_size": data_params.get("eval_batch_size", 16)}


def _policy_tables(params: dict[str, Any], *tables: pl.DataFrame) -> list[pl.DataFrame]:
    """The evaluated tables (test, held-out, RewardBench rows, triples) cut to
    ``evaluation.policy_max_pairs_per_source`` rows per source (per subset for RewardBench rows, in
    all for triples), seeded: the pairs every policy and the reference are scored on."""
    config = _config(params)
    cap = config.policy_max_pairs_per_source
    if cap is None:
        return list(tables)
    out = []
    for table in tables:
        if not table.height or "response_index" in table.columns:  # RewardBench v2 rows score whole prompts: kept
            out.append(table)
            continue
        group = next((c for c in ("source", "subset") if c in table.columns), None)
        rank = pl.int_range(pl.len()).shuffle(seed=config.seed)
        out.append(table.filter((rank.over(group) if group else rank) < cap))
    return out


def reference_logprobs(reference: Any, test_pairs: pl.DataFrame, heldout_pairs: pl.DataFrame,
                       rewardbench_rows: pl.DataFrame, triples: pl.DataFrame, data_params: dict[str, Any],
                       params: dict[str, Any]) -> pl.DataFrame:
    """log pi_ref of both sides of every pair the policies are evaluated on (rendered and truncated as
    in training), computed ONCE for all policies."""
    pairs = scoring.pairs_to_score(*_policy_tables(params, test_pairs, heldout_pairs, rewardbench_rows, triples))
    return scoring.pair_logprob_table(reference.model, reference.tokenizer, pairs, **_logprob_args(data_params))


def generation_prompts(test_pairs: pl.DataFrame, params: dict[str, Any],
                       heldout_pairs: pl.DataFrame | None = None) -> pl.DataFrame:
    """Prompts no policy trained on that the judge can read, with their turns (``prompt_messages``:
    what the policy reads): the test (or held-out) prompts of ``evaluation.generation.prompt_sources``
    (default synthetic_scalar, whose r* is the judge)."""
    generation_config = _config(params).generation
    sources = list(generation_config.prompt_sources or ["synthetic_scalar"])
    pairs = test_pairs if heldout_pairs is None or heldout_pairs.is_empty() else pl.concat(
        [test_pairs, heldout_pairs.select(test_pairs.columns)])
    prompts = (with_prompt_messages(pairs).filter(pl.col("source").is_in(sources))
               .select("prompt", pl.col("prompt_messages").cast(MESSAGES_DTYPE)).unique()
               .sort("prompt").head(generation_config.max_prompts))
    if prompts.is_empty():
        logger.warning("no %s prompts among the evaluated pairs: win rates are not measured "
                       "(enable those sources, or set evaluation.generation.prompt_sources)", sources)
    return prompts


def reference_samples(reference: Any, prompts: pl.DataFrame, params: dict[str, Any],
                      data_params: dict[str, Any]) -> pl.DataFrame:
    """The SFT reference's responses to the held-out prompts, sampled once for every policy."""
    if prompts.is_empty():
        return pl.DataFrame(schema={"prompt": pl.String, "prompt_messages": MESSAGES_DTYPE, "sample_index": pl.Int64,
                                    "response": pl.String, "length": pl.Float64, "finished": pl.Boolean,
                                    "prompt_token_ids": pl.List(pl.Int64), "token_ids": pl.List(pl.Int64)})
    return generation.sample_for_prompts(reference, prompts["prompt"].to_list(), _config(params).generation.sampling,
                                         data_params["max_length"], data_params["max_prompt_length"],
                                         prompts["prompt_messages"].to_list())


def make_policy_metrics(name: str):
    """Node factory: a policy checkpoint scored as an implicit reward against the SFT reference."""

    def policy_metrics(bundle: Any, reference: Any, reference_logps: pl.DataFrame, reference_samples: pl.DataFrame,
                       training_curve: pl.DataFrame, test_pairs: pl.DataFrame, heldout_pairs: pl.DataFrame,
                       rewardbench_rows: pl.DataFrame, triples: pl.DataFrame, judge: Any,
                       params: dict[str, Any],
                       data_params: dict[str, Any]) -> dict[str, Any]:
        pairs = reference_logps.select("prompt", "prompt_messages", "first", "second")
        args = _logprob_args(data_params)
        policy_logps = scoring.pair_logprob_table(bundle.model, bundle.tokenizer, pairs, **args)
        config = _config(params)
        beta = float((bundle.metadata or {}).get("beta", config.implicit_reward_beta))
        scorer = scoring.implicit_reward_scorer(policy_logps, reference_logps, beta)
        test_pairs, heldout_pairs, rewardbench_rows, triples = _policy_tables(params, test_pairs, heldout_pairs,
                                                                              rewardbench_rows, triples)
        metrics = _scored_metrics(scorer, {"pairs": test_pairs, "heldout": heldout_pairs}, rewardbench_rows, triples,
                                  params, _audit(bundle.tokenizer, args["max_length"], args["max_prompt_length"]))
        metrics["training_curve"] = _curve_records(training_curve)
        if reference_samples.height:
            prompts = reference_samples.select("prompt", "prompt_messages").unique(maintain_order=True)
            samples = generation.sample_for_prompts(bundle, prompts["prompt"].to_list(), config.generation.sampling,
                                                    data_params["max_length"], data_params["max_prompt_length"],
                                                    prompts["prompt_messages"].to_list())
            if isinstance(judge, ModelBundle):  # a reward model none of the policies trained against
                judge_scorer = _reward_model_scorer(judge)
                judge_name = f"reward model {config.generation.judge} ({(judge.metadata or {}).get('checkpoint', 'loaded')})"
            else:  # the synthetic lab's parameters: its hidden reward r*
                judge_scorer = scoring.scalar_truth_scorer(judge["weights"], judge.get("temperature", 1.0))
                judge_name = "synthetic ground truth r*"
            judged = generation.judge_against_reference(samples, reference_samples, judge_scorer)
            sampling = config.generation.sampling
            if sampling.get("temperature", 1.0) != 1.0 or sampling.get("top_p", 1.0) != 1.0:
                # the samples then come from a tempered / truncated pi, not pi: the mean log-ratio is biased
                logger.warning("%s: evaluation.generation.sampling has temperature=%s top_p=%s; the KL estimate "
                               "assumes samples from pi itself (set both to 1.0)", name,
                               sampling.get("temperature", 1.0), sampling.get("top_p", 1.0))
            judged = generation.with_kl_terms(judged, bundle, reference, args["batch_size"])
            metrics["generation"] = {"judge": judge_name, **evaluate.evaluate_generations(judged)}
        described = _describe_bundle(bundle)
        if "beta" not in (bundle.metadata or {}):  # the metadata, when it has beta, already names it
            described = f"beta={beta}; " + described
        return {"kind": "policy (implicit reward)", "description": described, **metrics}

    policy_metrics.__name__ = f"{name}_metrics"
    return policy_metrics


def _curve_records(curve: pl.DataFrame | list[dict[str, Any]] | None) -> list[dict[str, float]]:
    """Training loss by step (and by iteration where the curve has one, e.g. GPO's, whose steps
    restart each iteration), for the training-curves plot (rows without a train loss are skipped)."""
    if curve is None:
        return []
    if not isinstance(curve, pl.DataFrame):
        curve = pl.DataFrame(curve, infer_schema_length=None) if curve else pl.DataFrame()
    loss = next((c for c in ("loss", "train_loss") if c in curve.columns), None)
    if loss is None or "step" not in curve.columns:
        return []
    keys = ["iteration", "step"] if "iteration" in curve.columns else ["step"]
    return curve.select(*keys, pl.col(loss).alias("loss")).drop_nulls().to_dicts()


def _describe_bundle(bundle: Any) -> str:
    """The checkpoint's metadata in a line; the checkpoint path (environment folder and version) in full."""
    metadata = dict(getattr(bundle, "metadata", None) or {})
    checkpoint = metadata.pop("checkpoint", None)
    described = ", ".join(f"{k}={v}" for k, v in metadata.items() if isinstance(v, (str, int, float)))[:200]
    return f"{described}; checkpoint {checkpoint}" if checkpoint else described


def ground_truth_metrics(test_pairs: pl.DataFrame, heldout_pairs: pl.DataFrame, triples: pl.DataFrame,
                         scalar_params: dict[str, Any], cyclic_params: dict[str, Any],
                         params: dict[str, Any]) -> dict[str, Any]:
    """The synthetic truth scored like a model: the ceiling row of the comparison table."""
    scalar = scoring.scalar_truth_scorer(scalar_params["weights"], scalar_params.get("temperature", 1.0))
    cyclic = scoring.cyclic_truth_scorer(cyclic_params.get("cyclic_strength", 4.0))
    metrics: dict[str, Any] = {"kind": "ground truth",
                               "description": "the synthetic lab's hidden reward / majority rule (synthetic pairs only)"}
    for set_name, pairs in (("pairs", test_pairs), ("heldout", heldout_pairs)):
        scored = scoring.score_by_source(pairs, {"synthetic_scalar": scalar, "synthetic_cyclic": cyclic})
        if scored.height:
            metrics[set_name] = evaluate.evaluate_pair_scores(scored, _config(params).n_bins, _bootstrap(params))
    if triples.height:
        metrics["cyclic"] = evaluate.evaluate_triples(scoring.score_triples(triples, cyclic))
    return metrics


def collect_metrics(validated_pairs: pl.DataFrame, test_pairs: pl.DataFrame, heldout_pairs: pl.DataFrame,
                    params: dict[str, Any], **models: dict[str, Any]
                    ) -> tuple[dict[str, Any], pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """All models side by side with the length baselines, paired tests and the verdict: the run's
    metrics JSON, the comparison table (one row per evaluated set and model), the data summary, and
    every model's per-row scores of the RewardBench-format file (model + rewardbench.score_rows)."""
    config = _config(params)
    order = config.model_order or list(models)  # default: the pipeline's (registry) order
    ordered = {name: models[name] for name in order if name in models}
    ordered.update({name: m for name, m in models.items() if name not in ordered})
    tables = {"pairs": test_pairs, "heldout": heldout_pairs}
    bootstrap = config.bootstrap
    ordered.update(comparison.baseline_metrics(tables, bootstrap))
    kinds = {"reward models": [n for n, m in ordered.items() if m.get("kind") == "reward model"],
             "policies": [n for n, m in ordered.items() if str(m.get("kind", "")).startswith("policy")]}
    groups = [names + list(comparison.BASELINES) for names in kinds.values() if names]
    tests = comparison.paired_tests(ordered, tables, groups, bootstrap, config.n_bins)
    rewardbench_scores = [metrics.pop("_rewardbench_scores").with_columns(pl.lit(name).alias("model"))
                          for name, metrics in ordered.items() if metrics.get("_rewardbench_scores") is not None]
    for metrics in ordered.values():
        metrics.pop("_scores", None)  # per-pair logits: used above, too bulky for the JSON
    data = evaluate.data_summary(validated_pairs)
    table = comparison.comparison_table(ordered)
    uninformative = comparison.uninformative_rows(tables, bootstrap, config.n_bins)
    metrics = {
        "run": {"evaluated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "evaluated_splits": ",".join(config.splits), "evaluated_pairs": test_pairs.height,
                "heldout_pairs": heldout_pairs.height,
                "heldout_sources": ", ".join(f"{source} {n}" for source, n in heldout_pairs.group_by("source").len()
                                             .sort(["len", "source"], descending=[True, False]).iter_rows()),
                "bootstrap": f"{bootstrap.resamples} prompt resamples, seed {bootstrap.seed}, "
                             f"{bootstrap.label} percentile intervals"},
        "interval_level": bootstrap.level,
        "data": data.to_dicts(),
        "models": ordered,
        "uninformative": uninformative,
        "paired_tests": tests,
        "verdict": comparison.verdict(ordered, tests, kinds, uninformative),
        "generation_verdict": comparison.generation_verdict(ordered, kinds["policies"]),
        "comparison": table.to_dicts(),
    }
    logger.info("evaluation verdict:\n%s", "\n".join(f"  [{comparison.SETS[v['set']]}] {v['statement']}"
                                                     for v in metrics["verdict"]))
    scores = (pl.concat(rewardbench_scores, how="diagonal_relaxed").select("model", pl.exclude("model"))
              if rewardbench_scores else pl.DataFrame(schema={"model": pl.String, "row": pl.Int64, "logit": pl.Float64}))
    return metrics, table, data, scores


def make_plots(metrics: dict[str, Any], validated_pairs: pl.DataFrame) -> dict[str, Figure]:
    """Accuracy forest plot, reliability diagrams, margin histograms per source, win-rate bars (when
    policies were judged), training curves."""
    models = metrics["models"]
    ranked = [n for n, m in models.items() if m.get("kind") not in ("baseline", "ground truth")]
    figures = {"margins_per_source": plots.margin_histograms(validated_pairs),
               "reliability_p_chosen": plots.reliability_diagram(models, "p_chosen")}
    if ranked:
        figures = {"accuracy_forest": plots.accuracy_forest(models, comparison.SETS, ranked), **figures}
    if any((m.get("pairs") or {}).get("reliability_true_p") for m in models.values()):
        figures["reliability_true_p"] = plots.reliability_diagram(models, "true_p")
    if any((m.get("heldout") or {}).get("reliability_p_chosen") for m in models.values()):
        figures["reliability_heldout_p_chosen"] = plots.reliability_diagram(models, "p_chosen", "heldout",
                                                                            "held-out sources")
    if any(m.get("generation") for m in models.values()):
        figures["win_rates"] = plots.win_rate_bars(models)
    curves = {name: m["training_curve"] for name, m in models.items() if m.get("training_curve")}
    if curves:
        figures["training_curves"] = plots.training_curves(curves)
    return figures


def write_report(metrics: dict[str, Any], data: pl.DataFrame, figures: dict[str, Figure]
                 ) -> tuple[dict[str, Any], str, dict[str, Figure]]:
    """Markdown report saved with its plots (links plots/<name>.png work in its version folder),
    a self-contained HTML report, and the latest plots as PNG files. Where the catalog wrote them is
    logged at the end of the run (hooks.RunSummaryHooks: every saved dataset of layer `reporting`)."""
    images = {name: plots.figure_png_base64(fig) for name, fig in figures.items()}
    pngs = {f"{name}.png": fig for name, fig in figures.items()}
    markdown = report.render_markdown(data, metrics, list(figures), "plots")
    html = report.render_html(data, metrics, images)
    return {"markdown": markdown, "plots": pngs}, html, pngs
