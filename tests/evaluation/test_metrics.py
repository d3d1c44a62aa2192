"""Every metric of docs/methods.md s5 against a case computed by hand."""

import math

import numpy as np
import polars as pl
import pytest

from prefalign.core.evaluation import metrics as m, statistics as st


def test_pair_accuracy_counts_a_predicted_tie_as_wrong():
    assert m.pair_accuracy([1.0, 0.0, -1.0, 2.0]) == 0.5


def test_accuracy_by_source_and_split():
    scored = pl.DataFrame({"source": ["a", "a", "b", "b"], "split": ["test"] * 4, "logit": [1.0, -1.0, 0.0, 3.0]})
    table = m.accuracy_by(scored)
    assert table.filter(pl.col("source") == "a")["accuracy"].item() == 0.5
    assert table.filter(pl.col("source") == "b")["accuracy"].item() == 0.5
    assert table["pairs"].to_list() == [2, 2]


def _logit(p):
    p = np.asarray(p, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


def test_ece_brier_nll_by_hand():
    predicted, target = np.array([0.05, 0.15, 0.95, 0.95]), np.array([0.0, 1.0, 1.0, 0.0])
    # symmetric ECE: the 8 oriented predictions (p, t) and (1 - p, 1 - t) in 10 bins:
    # bin 0: (0.05, 0), (0.05, 0), (0.05, 1) -> |0.15 - 1| = 0.85;  bin 1: (0.15, 1) -> 0.85;
    # bin 8: (0.85, 0) -> 0.85;  bin 9: (0.95, 0), (0.95, 1), (0.95, 1) -> |2.85 - 2| = 0.85
    # ECE = 4 x 0.85 / 8 (the one-orientation ECE was 0.45)
    report = st.calibration_report(_logit(predicted), target, 10)
    assert report["ece"] == pytest.approx(3.4 / 8)
    assert report["brier"] == pytest.approx((0.0025 + 0.7225 + 0.0025 + 0.9025) / 4)
    # soft target: -ln 0.8 and -(0.7 ln 0.5 + 0.3 ln 0.5) = ln 2
    assert st.calibration_report(_logit([0.8, 0.5]), [1.0, 0.7])["nll"] == pytest.approx(
        (-math.log(0.8) + math.log(2)) / 2)


def test_reliability_bins_keep_empty_bins_count_both_orientations_and_put_one_in_the_last_bin():
    # p = 1 (logit 40 rounds to 1.0 in float64) and p = 0.55; mirrored: 0 and 0.45
    bins = m.reliability_bins([40.0, float(_logit(0.55))], [1.0, 0.5], n_bins=10)
    assert bins.height == 10 and bins["count"].to_list() == [1, 0, 0, 0, 1, 1, 0, 0, 0, 1]
    assert bins["mean_target"].to_list()[0] == 0.0 and bins["mean_target"].to_list()[9] == 1.0


def test_reliability_bins_reject_bad_inputs_clearly():
    with pytest.raises(ValueError, match="10-15"):
        m.reliability_bins([0.5], [0.5], n_bins=5)
    with pytest.raises(ValueError, match="align"):
        m.reliability_bins([0.5, 0.6], [0.5], n_bins=10)
    with pytest.raises(ValueError, match="NaN"):
        st.calibration_report([float("nan")], [0.5])


def test_a_perfectly_calibrated_model_has_zero_ece():
    logits = np.array([0.0, 1.0, 2.0])
    report = st.calibration_report(logits, m.sigmoid(logits))
    assert report["ece"] == pytest.approx(0.0) and report["brier"] == pytest.approx(0.0)


def test_rewardbench_sections_are_prompt_weighted_and_overall_is_mean_of_sections():
    scored = pl.DataFrame({
        "subset": ["s1", "s1", "s1", "s2", "s3", "s3", "x"],
        "logit": [1.0, 1.0, -1.0, 1.0, 1.0, 0.0, 1.0],
    })
    result = m.rewardbench_scores(scored, {"Chat": ["s1", "s2"], "Safety": ["s3"], "Reasoning": ["absent"]})
    # Chat: (2 right of 3 + 1 of 1) / 4 prompts = 0.75, not the subset mean 0.833
    assert result["sections"] == {"Chat": pytest.approx(0.75), "Safety": pytest.approx(0.5)}
    assert result["overall"] == pytest.approx(0.625)
    assert result["unmapped_subsets"] == ["x"]
    assert result["subsets"]["s1"] == {"accuracy": pytest.approx(2 / 3), "prompts": 3, "weight": 3.0}


def test_rewardbench_names_the_mapping_when_nothing_matches():
    with pytest.raises(ValueError, match="evaluation.rewardbench.sections"):
        m.rewardbench_scores(pl.DataFrame({"subset": ["a"], "logit": [1.0]}), {"Chat": ["b"]})


def test_cyclic_consistency_by_hand():
    result = m.cyclic_consistency([1.0, 1.0], [1.0, 1.0], [-1.0, 1.0])
    assert result["consistency"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["all_three_right"] == 0.5


def test_a_scalar_reward_never_beats_two_thirds_on_a_cycle():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(200, 3))  # rewards of A, B, C
    result = m.cyclic_consistency(r[:, 0] - r[:, 1], r[:, 1] - r[:, 2], r[:, 2] - r[:, 0])
    assert result["consistency"] <= 2 / 3 + 1e-12


def test_wilson_interval_by_hand():
    low, high = m.wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.490157, abs=1e-5), pytest.approx(0.943319, abs=1e-5))


def test_length_controlled_win_rate_by_hand():
    # policy longer by 10 on 5 prompts (judge: 4 wins of 5), shorter by 10 on 5 (3 of 5).
    # d = +-1 after normalising by std 10; saturated fit: theta = (logit 0.8 + logit 0.6) / 2.
    judge = [1, 1, 1, 1, 0, 1, 1, 1, 0, 0]
    policy_len = [20] * 5 + [0] * 5
    reference_len = [10] * 10
    result = m.win_rates(judge, policy_len, reference_len)
    theta = (math.log(0.8 / 0.2) + math.log(0.6 / 0.4)) / 2
    assert result["win_rate"] == pytest.approx(0.7)
    assert result["lc_win_rate"] == pytest.approx(1 / (1 + math.exp(-theta)), abs=1e-5)
    assert result["length_coefficient"] == pytest.approx((math.log(4) - math.log(1.5)) / 2, abs=1e-5)


def test_length_control_removes_a_pure_length_preference():
    # the judge only likes length; the policy is longer on 60 prompts, shorter on 40
    rng = np.random.default_rng(1)
    diff = np.concatenate([rng.uniform(5, 50, 60), -rng.uniform(5, 50, 40)])
    judge = m.sigmoid(diff / 10)  # soft verdicts, no policy effect at equal length
    result = m.win_rates(judge, 100 + diff, np.full(100, 100.0))
    assert result["win_rate"] > 0.55
    assert abs(result["lc_win_rate"] - 0.5) < abs(result["win_rate"] - 0.5)


def test_kl_estimate_by_hand():
    result = m.kl_to_reference([-1.0, -2.0, -3.0], [-2.0, -2.0, -5.0])
    assert result["kl"] == pytest.approx(1.0) and result["kl_se"] == pytest.approx(1 / math.sqrt(3))
