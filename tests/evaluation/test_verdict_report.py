"""Issue 23, "the report": Holm correction, every best against its baseline, no interval from a
handful of prompts, GPO curves one line per iteration, the verdict table and the forest plot.

Expected values are computed by hand in the comments, not by the code tested.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import polars as pl
import pytest

from prefalign.core.evaluation import comparison, evaluate, plots, report, statistics as st

BOOT = st.BootstrapConfig(resamples=400, seed=0)


def test_holm_adjustment_by_hand():
    # p = [0.01, 0.04, 0.03, 0.005], m = 4; sorted: 0.005, 0.01, 0.03, 0.04
    #   0.005 * 4 = 0.02; 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> max with 0.06 = 0.06
    adjusted = st.holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1, and the running maximum keeps the order: [0.5, 0.3] -> 0.3 * 2 = 0.6, max(0.6, 0.5) = 0.6
    assert st.holm_adjust([0.5, 0.3]) == pytest.approx([0.6, 0.6])
    assert st.holm_adjust([0.9, 0.8, 0.7]) == pytest.approx([1.0, 1.0, 1.0])
    assert st.holm_adjust([]).size == 0
    with pytest.raises(ValueError, match="1.5"):
        st.holm_adjust([0.1, 1.5])


def test_holm_family_adjusts_the_tests_of_one_family_together():
    rows = [{"p_value": p, "resamples": 1000, "mcnemar_p": q} for p, q in ((0.01, 0.02), (0.0, 0.5), (0.02, 0.01))]
    comparison.holm_family(rows, 0.95)
    # bootstrap p of 0 counts as 1/B = 0.001: sorted 0.001, 0.01, 0.02 -> 0.003, 0.02, 0.02
    assert [r["p_holm"] for r in rows] == pytest.approx([0.02, 0.003, 0.02])
    assert all(r["significant_holm"] for r in rows) and {r["family_size"] for r in rows} == {3}
    # McNemar: sorted 0.01, 0.02, 0.5 -> 0.03, 0.04, 0.5
    assert [r["mcnemar_p_holm"] for r in rows] == pytest.approx([0.04, 0.5, 0.03])


def test_p_values_below_one_in_a_thousand_never_print_as_zero():
    assert comparison.format_p(0.0004) == "p<0.001" and comparison.format_p(0.0123) == "p=0.012"
    row = {"difference": 0.2, "low": 0.1, "high": 0.3, "significant": True, "p_value": 0.0, "resamples": 200,
           "mcnemar_p": 1e-9}
    assert "McNemar p<0.001" in comparison._difference_words(row, 1, True)


def _table(p_chosen: list[float], prompts: int) -> pl.DataFrame:
    n = len(p_chosen)
    return pl.DataFrame({
        "pair_id": [f"p{i:03d}" for i in range(n)], "prompt_id": [f"q{i % prompts}" for i in range(n)],
        "prompt": [f"q{i % prompts}" for i in range(n)],
        "chosen": ["a longer answer" if i % 2 else "short" for i in range(n)],
        "rejected": ["tiny" if i % 2 else "a much longer answer" for i in range(n)],
        "p_chosen": p_chosen, "true_p": [None] * n, "source": ["s"] * n, "split": ["test"] * n,
    }, schema_overrides={"true_p": pl.Float64})


def _model(table: pl.DataFrame, logits: np.ndarray, set_name: str = "pairs") -> dict:
    scored = table.with_columns(pl.Series("logit", logits))
    return {"kind": "reward model", "description": "", set_name: evaluate.evaluate_pair_scores(scored, 10, BOOT),
            "_scores": {set_name: evaluate.pair_score_record(scored)}}


def _collect(table: pl.DataFrame, models: dict) -> dict:
    tables = {"pairs": table}
    models = {**models, **comparison.baseline_metrics(tables, BOOT)}
    kinds = {"reward models": [n for n, m in models.items() if m["kind"] == "reward model"]}
    tests = comparison.paired_tests(models, tables, [kinds["reward models"] + list(comparison.BASELINES)], BOOT, 10)
    uninformative = comparison.uninformative_rows(tables, BOOT, 10)
    for m in models.values():
        m.pop("_scores", None)
    return {"models": models, "paired_tests": tests, "uninformative": uninformative, "interval_level": 0.95,
            "verdict": comparison.verdict(models, tests, kinds, uninformative)}


def test_a_best_brier_and_ece_worse_than_p_half_is_not_called_better():
    # targets p_chosen = 0.6 everywhere: p = 0.5 has Brier (0.5 - 0.6)^2 = 0.01 and symmetric ECE 0.
    # Both models are right on every pair but overconfident: logit 3 -> p = 0.953, Brier (0.953 - 0.6)^2 = 0.124;
    # logit 2 -> p = 0.881, Brier 0.079: the "best" Brier (0.079) is far worse than p = 0.5 (0.010).
    table = _table([0.6] * 80, 40)
    metrics = _collect(table, {"sharp": _model(table, np.full(80, 3.0)), "mild": _model(table, np.full(80, 2.0))})
    rows = {v["metric"]: v for v in metrics["verdict"]}
    brier, ece = rows["brier_p_chosen"], rows["ece_p_chosen"]
    assert brier["best"] == "mild" and brier["estimate"]["value"] == pytest.approx((1 / (1 + np.exp(-2)) - 0.6) ** 2)
    assert brier["baseline_value"] == pytest.approx(0.01)
    for row in (brier, ece):
        assert row["outcome"] == "worse"
        assert row["statement"].startswith("no reward model beats p = 0.5") and "best" not in row["statement"]
        assert "WORSE" in row["statement"]
    assert ece["baseline_value"] == pytest.approx(0.0, abs=1e-12)
    # accuracy 1.0 clears pick-the-longer (0.5 here: the chosen side is the longer one on every other pair)
    assert rows["accuracy"]["outcome"] == "better" and rows["accuracy"]["statement"].startswith("best reward model")


def test_the_verdict_table_says_no_model_beats_the_baseline():
    # a model whose logits are noise: accuracy about 0.5 with an interval around it; pick-the-longer 0.5
    table = _table([0.9] * 80, 40)
    rng = np.random.default_rng(0)
    metrics = _collect(table, {"noise": _model(table, rng.normal(0, 0.1, 80)),
                               "noise2": _model(table, rng.normal(0, 0.1, 80))})
    text = report.render_markdown(pl.DataFrame({"pairs": [80]}), metrics, [])
    verdict = text[text.index("## Verdict"):text.index("## Data")]
    assert "### Reward models on the in-distribution test split" in verdict
    header = "| metric | top model [95% CI] | baseline | verdict | runner-up |"
    assert header in verdict
    table_lines = [line for line in verdict.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 1 + 4  # header + accuracy, ECE, Brier, NLL
    assert all("| no model beats the baseline" in line for line in table_lines[1:])
    assert "| p = 0.5 0.693 |" in verdict  # NLL of p = 0.5 is ln 2 on every resample: a value, not [0.693, 0.693]
    assert "No model beats the baseline on any metric (reward models, in-distribution test split)." in verdict
    # the old wall of "significant differences" lines is gone; the tests are one matrix per set, kind and metric
    assert "Significant differences" not in text and "## Paired tests (Holm-corrected)" in text
    assert "| model | noise | noise2 | pick-the-longer |" in text


def test_an_interval_from_fewer_than_ten_prompts_is_not_printed():
    estimate = st.bootstrap_estimate(st.weighted_mean(np.ones(6)), st.prompt_resample_weights(list("aabbcc"), 50, 0),
                                     0.95, prompts=3)
    assert estimate == {"value": 1.0, "low": None, "high": None, "level": 0.95, "prompts": 3}
    assert comparison.format_estimate(estimate) == "1.000 (n<10 prompts: no interval)"
    ten = st.bootstrap_estimate(st.weighted_mean(np.arange(10.0)), st.prompt_resample_weights(range(10), 50, 0),
                                0.95, prompts=10)
    assert ten["low"] is not None and ten["low"] < 4.5 < ten["high"]
    # through evaluate_pair_scores: 9 prompts -> no interval; 10 -> an interval
    for prompts, has_interval in ((9, False), (10, True)):
        table = _table([0.9] * 20, prompts)
        result = evaluate.evaluate_pair_scores(table.with_columns(pl.Series("logit", np.full(20, 1.0))), 10, BOOT)
        assert (result["intervals"]["brier_p_chosen"]["low"] is not None) == has_interval
        assert result["intervals"]["accuracy"]["prompts"] == prompts
    # the verdict does not claim anything from an interval it does not have
    assert comparison.against_baseline(estimate, 0.5, True) == "no interval"


def test_gpo_curves_are_one_line_per_iteration():
    records = [{"iteration": it, "step": s, "loss": 1.0 / s + it} for it in (0, 1, 2) for s in range(1, 21)]
    fig = plots.training_curves({"policy_gpo": records, "policy_dpo": [{"step": s, "loss": 1.0 / s} for s in (1, 2)]})
    gpo, dpo = fig.axes[0], fig.axes[1]
    assert len(gpo.get_lines()) == 3 and len(dpo.get_lines()) == 1
    for line, iteration in zip(gpo.get_lines(), (0, 1, 2)):
        steps = list(line.get_xdata())
        assert steps == list(range(1, 21)) and line.get_label() == f"iteration {iteration}"  # never jumps back


def test_curve_records_keep_the_iteration():
    from prefalign.core.evaluation.model_metrics import curve_records as _curve_records

    curve = pl.DataFrame({"iteration": [0, 0, 1, 1], "step": [1, 2, 1, 2], "train_loss": [0.7, 0.6, 0.5, 0.4]})
    assert _curve_records(curve)[2] == {"iteration": 1, "step": 1, "loss": 0.5}


def test_forest_plot_draws_each_model_interval_against_the_baselines():
    table = _table([0.9] * 80, 40)
    metrics = _collect(table, {"good": _model(table, np.full(80, 2.0)),
                               "half": _model(table, np.where(np.arange(80) % 4 < 2, 2.0, -2.0))})
    fig = plots.accuracy_forest(metrics["models"], comparison.SETS, ["good", "half"])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["good", "half"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["pick-the-longer 0.500", "chance 0.5"]
    points = [line.get_xdata()[0] for line in ax.get_lines() if line.get_marker() == "o"]
    assert points == pytest.approx([1.0, 0.5])


def test_rewardbench_score_at_chance_is_flagged():
    models = {"m": {"rewardbench": {"overall": 0.511, "format": "v1",
                                    "intervals": {"overall": {"value": 0.511, "low": 0.40, "high": 0.62}}}},
              "n": {"rewardbench": {"overall": 0.40, "format": "v1",
                                    "intervals": {"overall": {"value": 0.40, "low": 0.30, "high": 0.49}}}}}
    assert report._rewardbench_line(models, ["m", "n"], "reward models", "95%").endswith(
        ": CHANCE LEVEL (its interval includes 0.5)")
    models["m"]["rewardbench"]["intervals"]["overall"].update(low=0.51, high=0.7)
    assert "CHANCE" not in report._rewardbench_line(models, ["m", "n"], "reward models", "95%")
