"""Evaluation on label ties, the log-loss of confident mistakes, and a calibration error that does
not depend on which side of a pair is listed first (issue 20, items 5, 6, 6b and 7).

Every expected value is computed by hand or independently (numpy.logaddexp), not by the code tested.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from prefalign.core.evaluation import comparison, evaluate, metrics as m, report, statistics as st
from prefalign.core.evaluation import rewardbench as rb

BOOT = st.BootstrapConfig(resamples=200, seed=0)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def _pairs(p_chosen: list[float], sources: list[str]) -> pl.DataFrame:
    n = len(p_chosen)
    return pl.DataFrame({
        "pair_id": [f"p{i}" for i in range(n)], "prompt_id": [f"q{i // 2}" for i in range(n)],
        "prompt": [f"q{i // 2}" for i in range(n)], "chosen": ["a longer answer"] * n, "rejected": ["short"] * n,
        "p_chosen": p_chosen, "true_p": [None] * n, "source": sources, "split": ["test"] * n,
    }, schema_overrides={"true_p": pl.Float64})


# 12 pairs: source "mixed" has 2 ties of 8, source "all_ties" only ties (4)
P_CHOSEN = [0.9, 0.5, 0.75, 1.0, 0.6, 0.5, 0.95, 0.8, 0.5, 0.5, 0.5, 0.5]
SOURCES = ["mixed"] * 8 + ["all_ties"] * 4


# ---------------------------------------------------------------------------------------------
# Item 5: label ties are set aside from accuracy and the paired tests, kept in calibration
# ---------------------------------------------------------------------------------------------
def test_a_calibrated_oracle_scores_one_and_first_listed_on_ties_does_not_beat_it():
    table = _pairs(P_CHOSEN, SOURCES)
    oracle = _logit(np.array(P_CHOSEN))  # logit(p_chosen): 0 on every tie
    first_listed = np.where(np.array(P_CHOSEN) == 0.5, 1e-9, oracle)
    result = evaluate.evaluate_pair_scores(table.with_columns(pl.Series("logit", oracle)), 10, BOOT)
    cheat = evaluate.evaluate_pair_scores(table.with_columns(pl.Series("logit", first_listed)), 10, BOOT)
    assert result["accuracy"] == 1.0  # was 6/12: every tie counted wrong
    assert cheat["accuracy"] <= result["accuracy"]  # was 1.0 > 0.5
    assert (result["pairs"], result["label_ties"], result["accuracy_pairs"]) == (12, 6, 6)
    # 12 pairs of 6 prompts: too few prompts for an interval (it was the zero-width [1.000, 1.000])
    assert result["intervals"]["accuracy"] == {"value": 1.0, "low": None, "high": None, "level": 0.95, "prompts": 6}
    # calibration keeps the ties: the oracle's NLL is the mean binary entropy of p over all 12 pairs
    p = np.array(P_CHOSEN)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = np.where(p < 1, -(p * np.log(p) + (1 - p) * np.log1p(-p)), 0.0)  # p = 1: 0 nats
    assert result["intervals"]["nll_p_chosen"]["value"] == pytest.approx(entropy.mean())
    assert result["intervals"]["brier_p_chosen"]["value"] == pytest.approx(0.0, abs=1e-12)


def test_a_source_whose_pairs_are_all_ties_has_no_accuracy_and_the_report_says_so():
    table = _pairs(P_CHOSEN, SOURCES)
    logits = np.where(np.arange(12) % 3 == 0, -1.0, 1.0)  # wrong on pairs 0, 3, 6, 9
    result = evaluate.evaluate_pair_scores(table.with_columns(pl.Series("logit", logits)), 10, BOOT)
    by_source = result["by_source"]
    assert by_source["all_ties"]["accuracy"] is None and by_source["all_ties"]["intervals"]["accuracy"] is None
    assert by_source["all_ties"]["label_ties"] == 4
    # mixed: non-tie pairs 0, 2, 3, 4, 6, 7; wrong on 0, 3, 6 -> 3/6
    assert by_source["mixed"]["accuracy"] == pytest.approx(0.5)
    assert result["accuracy"] == pytest.approx(0.5)
    rows = {r["source"]: r for r in result["accuracy_by_source_split"]}
    assert rows["all_ties"]["accuracy"] is None and rows["all_ties"]["ties"] == 4 and rows["all_ties"]["pairs"] == 4
    assert rows["mixed"]["accuracy"] == pytest.approx(0.5) and rows["mixed"]["ties"] == 2
    models = {"m": {"kind": "reward model", "heldout": result}}
    cells = report._by_source_table(models, "heldout", ["m"]).row(0, named=True)
    assert cells["all_ties ↑"] == "no accuracy: all 4 pairs are ties"
    assert cells["mixed ↑"].endswith("(n=8, 2 ties set aside; n<10 prompts: no interval)")


def test_length_bias_accuracies_leave_ties_out():
    lengths_c, lengths_r = np.array([10, 10, 10, 2]), np.array([5, 5, 5, 8])
    logits = np.array([1.0, -1.0, 1.0, -1.0])
    ties = np.array([False, True, False, False])
    bias = st.length_bias(logits, lengths_c, lengths_r, ties)
    assert bias["accuracy_chosen_longer"] == 1.0  # pairs 0 and 2 (pair 1 is a tie: was 2/3)
    assert bias["chosen_longer_rate"] == pytest.approx(2 / 3)  # of the 3 non-tie unequal pairs
    assert bias["prefers_longer_rate"] == pytest.approx(3 / 4)  # the model's behaviour: every unequal pair


def test_paired_tests_and_mcnemar_use_non_tie_pairs_only():
    table = _pairs([0.9, 0.5] * 20, ["s"] * 40)
    ties = np.arange(40) % 2 == 1
    first_listed = np.full(40, 2.0)  # picks the first-listed side on the ties
    last_listed = np.where(ties, -2.0, 2.0)  # the same on every non-tie pair, the other side on ties
    models = {}
    for name, logits in (("first", first_listed), ("last", last_listed)):
        scored = table.with_columns(pl.Series("logit", logits))
        models[name] = {"kind": "reward model", "pairs": evaluate.evaluate_pair_scores(scored, 10, BOOT),
                        "_scores": {"pairs": evaluate.pair_score_record(scored)}}
    tests = comparison.paired_tests(models, {"pairs": table}, [["first", "last"]], BOOT, 10)
    accuracy = next(t for t in tests if t["metric"] == "accuracy")
    assert accuracy["difference"] == 0.0 and accuracy["mcnemar_p"] == 1.0  # was +0.5 and p ~ 1e-5
    assert (accuracy["pairs"], accuracy["ties_set_aside"]) == (20, 20)
    nll = next(t for t in tests if t["metric"] == "nll_p_chosen")
    # NLL keeps the 40 pairs; on a tie (t = 1/2) logits +2 and -2 have the same log-loss
    assert nll["pairs"] == 40 and nll["difference"] == pytest.approx(0.0, abs=1e-12)
    baselines = comparison.baseline_metrics({"pairs": table}, BOOT)
    assert baselines["baseline_longer"]["pairs"]["accuracy"] == 1.0  # chosen is the longer one on every non-tie
    assert baselines["baseline_longer"]["pairs"]["label_ties"] == 20


def test_the_report_says_how_many_ties_were_set_aside():
    table = _pairs(P_CHOSEN, SOURCES)
    scored = table.with_columns(pl.Series("logit", np.ones(12)))
    models = {"m": {"kind": "reward model", "description": "", "pairs": evaluate.evaluate_pair_scores(scored, 10, BOOT)},
              **comparison.baseline_metrics({"pairs": table}, BOOT)}
    metrics = {"models": models, "interval_level": 0.95}
    text = report.render_markdown(pl.DataFrame({"pairs": [12]}), metrics, [])
    assert "6 of the 12 pairs are label ties" in text
    assert "| m | 12 | 6 | 1.000 (n<10 prompts: no interval) |" in text


# ---------------------------------------------------------------------------------------------
# Item 6: the log-loss from the logit (no clipping), in every place that reports it
# ---------------------------------------------------------------------------------------------
NLL_CASES = [
    ([-40.0], [1.0], 40.0),
    ([-30.0, -45.0, -60.0, 5.0, 8.0], [1.0] * 5, 27.0014),
    ([-35.0, 35.0], [0.9, 0.9], 17.5),
    ([-3.0, 2.0, 0.5], [1.0, 0.8, 0.6], 1.416531),
]


@pytest.mark.parametrize("logits, target, expected", NLL_CASES)
def test_nll_of_confident_mistakes_is_not_capped(logits, target, expected):
    x, t = np.array(logits), np.array(target)
    independent = float(np.mean(t * np.logaddexp(0, -x) + (1 - t) * np.logaddexp(0, x)))
    assert independent == pytest.approx(expected, abs=5e-5)
    weights = st.prompt_resample_weights([f"n{i}" for i in range(x.size)], 20, 0)
    assert st.pair_metric_intervals(x, t, weights, 10)["nll"]["value"] == pytest.approx(independent, rel=1e-12)
    assert st.calibration_report(x, t)["nll"] == pytest.approx(independent, rel=1e-12)


def test_nll_is_finite_and_exact_far_out():
    x = np.array([-800.0, 800.0, 0.0])
    assert m.per_pair_nll(x, np.array([1.0, 1.0, 0.5])).tolist() == pytest.approx([800.0, 0.0, math.log(2)])


# ---------------------------------------------------------------------------------------------
# Item 6b: a symmetric ECE (each pair in both orientations), for pairs and benchmark files alike
# ---------------------------------------------------------------------------------------------
def test_ece_does_not_change_when_pairs_are_listed_the_other_way_round():
    rng = np.random.default_rng(3)
    x, t = rng.normal(0, 2, 300), rng.uniform(0, 1, 300)
    flip = rng.uniform(size=300) < 0.5
    x2, t2 = np.where(flip, -x, x), np.where(flip, 1 - t, t)
    assert st.calibration_report(x2, t2)["ece"] == pytest.approx(st.calibration_report(x, t)["ece"], abs=1e-12)
    bins, flipped_bins = m.reliability_bins(x, t), m.reliability_bins(x2, t2)
    assert bins["count"].to_list() == flipped_bins["count"].to_list()


def test_ece_on_a_chosen_first_file_is_not_one_minus_mean_p():
    # a model at chance on a file whose targets are all 1 (the correct answer always listed first)
    rng = np.random.default_rng(0)
    chance = rng.normal(0, 1, 400)
    report_ = st.calibration_report(chance, np.ones(400))
    assert abs(report_["ece"] - (1 - m.sigmoid(chance).mean())) > 0.25  # one-orientation ECE: 0.50
    # what is left is the over-confidence: p is spread around 1/2 while the truth (either orientation) is 1/2
    assert report_["ece"] == pytest.approx(np.abs(m.sigmoid(chance) - 0.5).mean(), abs=0.03)
    assert st.calibration_report(np.zeros(400), np.ones(400))["ece"] == pytest.approx(0.0, abs=1e-12)
    # an over-confident model at chance: p = 0.99 or 0.01 at random, right on a share r of the pairs.
    # Bin 9 holds (0.99, 1) for each right pair and (0.99, 0) for each wrong one: |0.99 - r|, and
    # bin 0 mirrors it, so ECE = 0.99 - r (about 0.49)
    wild = np.where(rng.uniform(size=400) < 0.5, _logit(0.99), -_logit(0.99))
    right = float((wild > 0).mean())
    assert st.calibration_report(wild, np.ones(400))["ece"] == pytest.approx(0.99 - right, abs=1e-9)


def _v1_rows() -> pl.DataFrame:
    subsets = ["s1"] * 6 + ["s2"] * 4 + ["s3"] * 5
    logits = [1.0, 2.0, -1.0, 1.0, 3.0, -2.0, 1.0, 1.0, 1.0, -1.0, 2.0, 0.0, 1.0, 1.0, -3.0]
    return pl.DataFrame({"prompt": [f"q{i}" for i in range(15)], "chosen": ["good"] * 15, "rejected": ["bad"] * 15,
                         "subset": subsets, "logit": logits})


def test_rewardbench_sections_get_intervals_over_prompts_and_a_symmetric_ece():
    scored = _v1_rows()
    sections = {"Chat": ["s1", "s2"], "Safety": ["s3"]}
    result = rb.score(scored, sections, {"s2": 12}, None, BOOT, 10)
    # Chat: s1 4/6 weighted 6, s2 3/4 weighted 12 (fixed) -> (4 + 9) / 18; Safety 3/5
    assert result["sections"] == {"Chat": pytest.approx(13 / 18), "Safety": pytest.approx(0.6)}
    assert result["overall"] == pytest.approx((13 / 18 + 0.6) / 2)
    for name, value in (("Chat", 13 / 18), ("Safety", 0.6), ("overall", (13 / 18 + 0.6) / 2)):
        estimate = result["intervals"][name]
        assert estimate["value"] == pytest.approx(value) and estimate["low"] < value < estimate["high"]
        assert estimate["level"] == 0.95
    x = scored["logit"].to_numpy()
    assert result["calibration"]["ece"]["value"] == pytest.approx(st.calibration_report(x, np.ones(15))["ece"])
    assert result["calibration"]["nll"]["value"] == pytest.approx(np.mean(np.logaddexp(0, -x)))
    # the rows of one prompt move together: the same prompt text in two subsets is one cluster
    rows = rb.score_rows(scored)
    assert rows.columns == ["row", "subset", "prompt", "logit", "correct"] and rows["correct"].sum() == 10


def test_rewardbench_v2_interval_values_are_the_published_scores():
    rows = pl.DataFrame({
        "id": ["1", "2", "3", "ref:0", "tied:0"], "subset": ["Math", "Math", "Math", "Ties", "Ties"],
        "num_correct": [1, 1, 1, 1, 2], "prompt": ["a", "b", "c", "d", "e"],
        "scores": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [2.0, 1.0], [3.0, 2.5, 1.0]]})
    published = m.rewardbench2_scores(rows)
    statistics = m.rewardbench2_statistics(rows)
    ones = np.ones((1, 5))
    assert published["sections"]["Math"] == pytest.approx((1 + 0 + 0.5) / 3)
    for name, value in published["sections"].items():
        assert statistics[name](ones)[0] == pytest.approx(value)
    assert statistics["overall"](ones)[0] == pytest.approx(published["overall"])


def test_the_rewardbench_scores_are_a_versioned_catalog_dataset():
    import yaml
    from pathlib import Path

    from prefalign.pipelines.evaluation.pipeline import create_pipeline

    catalog = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf/base/catalog_evaluation.yml").read_text())
    entry = catalog["evaluation_rewardbench_scores"]
    assert entry["versioned"] is True and entry["filepath"].startswith("data/08_reporting/")
    assert "evaluation_rewardbench_scores" in create_pipeline().all_outputs()


# ---------------------------------------------------------------------------------------------
# Item 7: one calibration in the metrics; intervals labelled with the coverage they have; seeded
# ---------------------------------------------------------------------------------------------
def test_calibration_lands_in_the_metrics_once():
    table = _pairs(P_CHOSEN, SOURCES)
    result = evaluate.evaluate_pair_scores(table.with_columns(pl.Series("logit", np.ones(12))), 10, BOOT)
    assert not [k for k in result if k.startswith("calibration")]  # no second copy beside `intervals`
    assert {"ece_p_chosen", "brier_p_chosen", "nll_p_chosen"} <= set(result["intervals"])


def test_a_95_percent_interval_is_the_2_5_and_97_5_percentiles():
    values = np.arange(1001, dtype=np.float64)  # quantile q of 0..1000 is 1000 q
    assert st.percentile_interval(values, 0.95) == pytest.approx((25.0, 975.0))
    assert st.percentile_interval(values, 0.90) == pytest.approx((50.0, 950.0))


def test_the_report_labels_intervals_with_the_level_they_were_computed_at():
    table = _pairs(P_CHOSEN, SOURCES)
    boot = st.BootstrapConfig(resamples=200, seed=0, level=0.9)
    scored = table.with_columns(pl.Series("logit", np.linspace(-2, 2, 12)))
    evaluated = evaluate.evaluate_pair_scores(scored, 10, boot)
    assert evaluated["intervals"]["accuracy"]["level"] == 0.9
    metrics = {"models": {"m": {"kind": "reward model", "description": "", "pairs": evaluated}},
               "interval_level": boot.level}
    text = report.render_markdown(pl.DataFrame({"pairs": [12]}), metrics, [])
    assert "accuracy ↑ [90% CI]" in text and "a 90% bootstrap interval" in text and "95% CI" not in text

