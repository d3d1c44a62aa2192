"""Score tables -> metrics -> comparison table -> report, on synthetic data with its truth."""

import json

import polars as pl
import pytest

from prefalign.core.evaluation import evaluate, pair_scorers, statistics
from prefalign.core.synthetic import SyntheticConfig, cyclic_pairs, generate_cyclic, generate_scalar
from prefalign.pipelines.evaluation import nodes

CONFIG = SyntheticConfig(n_prompts=16, n_triples=6)
PARAMS = {"splits": ["train", "val", "test"], "max_pairs_per_source": 20, "seed": 0, "n_bins": 10,
          "bootstrap": {"resamples": 100}}
SOURCES = {"synthetic_scalar": {"weights": CONFIG.weights}, "synthetic_cyclic": {"cyclic_strength": 4.0}}  # feedback.sources


@pytest.fixture(scope="module")
def lab():
    triples = generate_cyclic(CONFIG)
    return pl.concat([generate_scalar(CONFIG), cyclic_pairs(triples, CONFIG)]), triples


def test_ground_truth_is_perfect_and_a_scalar_judge_is_not_on_cycles(lab):
    pairs, triples = lab
    truth = nodes.ground_truth_metrics(pairs, pairs.clear(), triples, SOURCES, PARAMS)
    assert truth["pairs"]["accuracy"] == 1.0 and "heldout" not in truth
    assert truth["pairs"]["intervals"]["ece_true_p"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert truth["cyclic"]["consistency"] == 1.0
    # the hidden SCALAR reward, used on the cycles, is capped at 2/3
    scalar = evaluate.evaluate_triples(pair_scorers.score_triples(triples, pair_scorers.scalar_truth_scorer(CONFIG.weights)))
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
    test, heldout = pairs.filter(pl.col("source") == "synthetic_scalar"), pairs.filter(pl.col("source") != "synthetic_scalar")
    truth = nodes.ground_truth_metrics(test, heldout, triples, SOURCES, PARAMS)
    sharp, flat = ({"kind": "reward model", "description": name} for name in ("sharp", "flat"))
    for model, scale in ((sharp, 10.0), (flat, 0.1)):
        for set_name, table in (("pairs", test), ("heldout", heldout)):
            scored = table.with_columns((pl.col("margin") * scale).alias("logit"))
            model[set_name] = evaluate.evaluate_pair_scores(scored, 10, statistics.BootstrapConfig(resamples=100))
            model.setdefault("_scores", {})[set_name] = evaluate.pair_score_record(scored)
    metrics, comparison, data, _ = nodes.collect_metrics(pairs, test, heldout, PARAMS, ground_truth=truth, sharp=sharp,
                                                      flat=flat)
    json.dumps(metrics)  # the catalog writes it as JSON
    assert "_scores" not in metrics["models"]["sharp"]
    assert set(comparison["set"]) == {"pairs", "heldout"}
    assert {"sharp", "flat", "baseline_longer", "baseline_shorter", "ground_truth"} <= set(comparison["model"])
    row = comparison.filter((pl.col("model") == "sharp") & (pl.col("set") == "pairs"))
    assert row["ece_true_p"].item() > 0.05 and row["accuracy"].item() == 1.0
    assert row["accuracy_low"].item() <= 1.0 and row["nll_p_chosen_low"].item() <= row["nll_p_chosen"].item()
    # same ranking, same accuracy: the accuracy difference is 0 and not significant; the calibration differs
    accuracy = [t for t in metrics["paired_tests"] if t["metric"] == "accuracy" and {t["a"], t["b"]} == {"sharp", "flat"}]
    assert len(accuracy) == 2 and all(t["difference"] == 0 and not t["significant"] for t in accuracy)
    assert any(v["metric"] == "ece_p_chosen" and v["set"] == "heldout" for v in metrics["verdict"])
    figures = nodes.make_plots(metrics, pairs)
    assert {"margins_per_source", "reliability_true_p", "reliability_heldout_p_chosen"} <= set(figures)
    markdown, html, files = nodes.write_report(metrics, data, figures)
    text = markdown["markdown"]
    assert text.index("## Verdict") < text.index("## Data")
    assert "### Reward models on the held-out sources" in text and "pick-the-longer" in text and "NLL ↓ (nats)" in text
    assert "### Accuracy by held-out source" in text and "| synthetic_cyclic ↑ |" in text
    per_source = metrics["models"]["sharp"]["heldout"]["by_source"]["synthetic_cyclic"]["intervals"]
    # the held-out cyclic pairs come from 6 prompts: no interval, and the cell says so
    assert per_source["accuracy"]["prompts"] == 6 and per_source["accuracy"]["low"] is None
    assert "; n<10 prompts: no interval) |" in text
    assert "![reliability_true_p](plots/reliability_true_p.png)" in text and set(markdown["plots"]) == set(files)
    assert "data:image/png;base64," in html and set(files) == {f"{n}.png" for n in figures}


def test_heldout_sources_are_listed_by_size_then_name(lab):
    # equal counts used to come out in group_by's (random) order: the report changed from run to run
    pairs, _ = lab
    test = pairs.filter(pl.col("source") == "synthetic_scalar")
    heldout = pl.concat([test.head(3).with_columns(source=pl.lit(name)) for name in ("zeta", "alpha", "mid")]
                        + [test.head(5).with_columns(source=pl.lit("big"))])
    for _ in range(5):
        metrics, _, _, _ = nodes.collect_metrics(pairs, test, heldout, PARAMS)
        assert metrics["run"]["heldout_sources"] == "big 5, alpha 3, mid 3, zeta 3"
