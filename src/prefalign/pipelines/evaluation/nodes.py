"""Evaluation nodes: parse the parameters, call core/evaluation, return what the catalog saves.

Each function here is a node of pipeline.py under its own name (the per-model ones are bound to
their model's namespace there); the method is core/evaluation: which pairs (evaluated_pairs.py),
one model's metrics (model_metrics.py), the comparison (comparison.py), plots and report.
"""

from __future__ import annotations

import logging
from typing import Any

import polars as pl
from matplotlib.figure import Figure

from prefalign.core.evaluation import comparison, evaluated_pairs, model_metrics, plots, report, pair_scorers, win_rate
from prefalign.core.evaluation import rewardbench as rewardbench_format
from prefalign.core.evaluation.config import EvaluationConfig, RewardBenchConfig
from prefalign.core.models.checkpoint import ModelBundle

logger = logging.getLogger(__name__)

def _config(params: dict[str, Any]) -> EvaluationConfig:
    """``params:evaluation`` parsed and checked by the same rules as the check before the run."""
    return EvaluationConfig.from_params(params)


def select_test_pairs(validated_pairs: pl.DataFrame, params: dict[str, Any]) -> pl.DataFrame:
    """The evaluated pairs: the configured splits, capped per source (seeded) to bound the cost."""
    return evaluated_pairs.select_test_pairs(validated_pairs, _config(params))


def select_heldout_pairs(validated_pairs: pl.DataFrame, params: dict[str, Any]) -> pl.DataFrame:
    """The held-out sources' pairs (split `heldout`), capped per source like the test pairs; may be empty."""
    return evaluated_pairs.select_heldout_pairs(validated_pairs, _config(params))


def select_test_triples(triples: pl.DataFrame, params: dict[str, Any]) -> pl.DataFrame:
    """The cyclic triples of the evaluated splits, held-out ones included (never trained on either)."""
    return evaluated_pairs.select_test_triples(triples, _config(params))


def prepare_rewardbench(rewardbench: pl.DataFrame, params: dict[str, Any]) -> pl.DataFrame:
    """A RewardBench v1 or v2 table as scorable pair rows; capped per subset only when asked (seeded)."""
    config = RewardBenchConfig.from_params(params)
    return rewardbench_format.prepare_rows(rewardbench, config.max_rows_per_subset, config.seed)


def ground_truth_metrics(test_pairs: pl.DataFrame, heldout_pairs: pl.DataFrame, triples: pl.DataFrame,
                         source_params: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The synthetic truth scored like a model (``feedback.sources`` gives the lab sources' parameters)."""
    return model_metrics.ground_truth_metrics({"pairs": test_pairs, "heldout": heldout_pairs}, triples,
                                              source_params, _config(params))


def evaluate_reward_model(bundle: ModelBundle, training_curve: Any, test_pairs: pl.DataFrame,
                          heldout_pairs: pl.DataFrame, rewardbench_rows: pl.DataFrame, triples: pl.DataFrame,
                          params: dict[str, Any]) -> dict[str, Any]:
    """Node ``evaluate_<namespace>`` of a reward checkpoint (BT, MMPO or GPM): its metrics."""
    return model_metrics.reward_model_metrics(bundle, training_curve, {"pairs": test_pairs, "heldout": heldout_pairs},
                                              rewardbench_rows, triples, _config(params))


def reference_logprobs(reference: ModelBundle, test_pairs: pl.DataFrame, heldout_pairs: pl.DataFrame,
                       rewardbench_rows: pl.DataFrame, triples: pl.DataFrame, data_params: dict[str, Any],
                       params: dict[str, Any]) -> pl.DataFrame:
    """log pi_ref of both sides of every pair the policies are evaluated on (rendered and truncated as
    in training), computed ONCE for all policies."""
    tables = evaluated_pairs.policy_subsets(_config(params), test_pairs, heldout_pairs, rewardbench_rows, triples)
    return pair_scorers.pair_logprob_table(reference.model, reference.tokenizer, pair_scorers.pairs_to_score(*tables),
                                      **model_metrics.logprob_args(data_params))


def generation_prompts(test_pairs: pl.DataFrame, params: dict[str, Any],
                       heldout_pairs: pl.DataFrame | None = None) -> pl.DataFrame:
    """Prompts no policy trained on that the judge can read (``evaluation.generation.prompt_sources``)."""
    return evaluated_pairs.generation_prompts(test_pairs, _config(params), heldout_pairs)


def reference_samples(reference: ModelBundle, prompts: pl.DataFrame, params: dict[str, Any],
                      data_params: dict[str, Any]) -> pl.DataFrame:
    """The SFT reference's responses to the held-out prompts, sampled once for every policy (none
    when there is no prompt)."""
    return win_rate.sample_for_prompts(reference, prompts["prompt"].to_list(), _config(params).generation.sampling,
                                       data_params["max_length"], data_params["max_prompt_length"],
                                       prompts["prompt_messages"].to_list())


def evaluate_policy(bundle: ModelBundle, reference: ModelBundle, reference_logps: pl.DataFrame,
                    reference_samples: pl.DataFrame, training_curve: pl.DataFrame, test_pairs: pl.DataFrame,
                    heldout_pairs: pl.DataFrame, rewardbench_rows: pl.DataFrame, triples: pl.DataFrame, judge: Any,
                    params: dict[str, Any], data_params: dict[str, Any], *, namespace: str) -> dict[str, Any]:
    """Node ``evaluate_<namespace>`` of a policy: its implicit reward against the SFT reference, and
    its win rate and KL judged by ``judge`` (a reward checkpoint, or the synthetic lab's parameters)."""
    return model_metrics.policy_metrics(namespace, bundle, reference, reference_logps, reference_samples,
                                        training_curve, {"pairs": test_pairs, "heldout": heldout_pairs},
                                        rewardbench_rows, triples, judge, _config(params), data_params)


def collect_metrics(validated_pairs: pl.DataFrame, test_pairs: pl.DataFrame, heldout_pairs: pl.DataFrame,
                    params: dict[str, Any], **models: dict[str, Any]
                    ) -> tuple[dict[str, Any], pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """All models side by side (core/evaluation/comparison.py ``compare_models``): the metrics JSON,
    the comparison table, the data summary and the RewardBench-format per-row scores."""
    return comparison.compare_models(validated_pairs, test_pairs, heldout_pairs, _config(params), models)


def make_plots(metrics: dict[str, Any], validated_pairs: pl.DataFrame) -> dict[str, Figure]:
    """The report's figures (core/evaluation/plots.py ``report_figures``)."""
    return plots.report_figures(metrics, validated_pairs)


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
