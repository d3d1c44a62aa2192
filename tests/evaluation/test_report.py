"""Score tables -> metrics -> comparison table -> report, on synthetic data with its truth."""

import json

import polars as pl
import pytest

from prefalign.core.evaluation import evaluate, scoring
from prefalign.core.synthetic import SyntheticConfig, cyclic_pairs, generate_cyclic, generate_scalar
from prefalign.pipelines.evaluation import nodes

CONFIG = SyntheticConfig(n_prompts=16, n_triples=6)
PARAMS = {"splits": ["train", "val", "test"], "max_pairs_per_source": 20, "seed": 0, "n_bins": 10,
          "report_location": {"markdown": "r.md", "html": "r.html", "plots": "plots", "metrics": "m.json"}}


@pytest.fixture(scope="module")
def lab():
    triples = generate_cyclic(CONFIG)
    return pl.concat([generate_scalar(CONFIG), cyclic_pairs(triples, CONFIG)]), triples


def test_ground_truth_is_perfect_and_a_scalar_judge_is_not_on_cycles(lab):
    pairs, triples = lab
    truth = nodes.ground_truth_metrics(pairs, triples, {"weights": CONFIG.weights}, {"cyclic_strength": 4.0}, PARAMS)
    assert truth["pairs"]["accuracy"] == 1.0
    assert truth["pairs"]["calibration_true_p"]["ece"] == pytest.approx(0.0, abs=1e-12)
    assert truth["cyclic"]["consistency"] == 1.0
    # the hidden SCALAR reward, used on the cycles, is capped at 2/3
    scalar = evaluate.evaluate_triples(scoring.score_triples(triples, scoring.scalar_truth_scorer(CONFIG.weights)))
    assert scalar["consistency"] <= 2 / 3


def test_select_test_pairs_caps_per_source_and_names_missing_splits(lab):
    pairs, _ = lab
    selected = nodes.select_test_pairs(pairs, PARAMS)
    assert selected.group_by("source").len()["len"].max() <= 20
    with pytest.raises(ValueError, match="evaluation.splits"):
        nodes.select_test_pairs(pairs.filter(pl.col("split") == "train"), {**PARAMS, "splits": ["nope"]})


def test_rewardbench_file_without_subset_column_fails_clearly():
    with pytest.raises(ValueError, match="subset"):
        nodes.prepare_rewardbench(pl.DataFrame({"prompt": ["p"], "chosen": ["a"], "rejected": ["b"]}), {})


def test_report_tells_the_story_and_metrics_are_json(lab):
    pairs, triples = lab
    truth = nodes.ground_truth_metrics(pairs, triples, {"weights": CONFIG.weights}, {"cyclic_strength": 4.0}, PARAMS)
    overconfident = {"kind": "reward", "pairs": evaluate.evaluate_pair_scores(
        pairs.with_columns((pl.col("margin") * 10).alias("logit")), 10)}
    metrics, comparison, data = nodes.collect_metrics(pairs, pairs, PARAMS, ground_truth=truth, sharp=overconfident)
    json.dumps(metrics)  # the catalog writes it as JSON
    assert comparison["model"].to_list() == ["ground_truth", "sharp"]
    sharp = comparison.filter(pl.col("model") == "sharp")
    assert sharp["ece_true_p"].item() > 0.05 and sharp["accuracy"].item() == 1.0
    figures = nodes.make_plots(metrics, pairs)
    assert {"margins_per_source", "reliability_true_p"} <= set(figures)
    markdown, html, files = nodes.write_report(metrics, comparison, data, figures, PARAMS)
    assert "## Comparison" in markdown and "| sharp |" in markdown
    assert "data:image/png;base64," in html and set(files) == {f"{n}.png" for n in figures}
