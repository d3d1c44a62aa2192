"""Paired tests across models and the verdict's words, on a table built by hand."""

import numpy as np
import pytest
import polars as pl

from prefalign.core.evaluation import comparison, evaluate, statistics

BOOT = statistics.BootstrapConfig(resamples=400, seed=0)


def _table(n: int = 60) -> pl.DataFrame:
    return pl.DataFrame({
        "pair_id": [f"p{i}" for i in range(n)], "prompt_id": [f"q{i // 2}" for i in range(n)],
        "prompt": [f"q{i // 2}" for i in range(n)],
        "chosen": ["long answer" if i % 2 else "short" for i in range(n)],
        "rejected": ["tiny" if i % 2 else "a much longer answer" for i in range(n)],
        "p_chosen": [0.9] * n, "true_p": [None] * n, "source": ["s"] * n, "split": ["test"] * n,
    }, schema_overrides={"true_p": pl.Float64})


def _model(table: pl.DataFrame, logits: np.ndarray) -> dict:
    scored = table.with_columns(pl.Series("logit", logits))
    return {"kind": "reward model", "pairs": evaluate.evaluate_pair_scores(scored, 10, BOOT),
            "_scores": {"pairs": evaluate.pair_score_record(scored)}}


def test_a_clearly_better_model_is_named_with_a_significant_lead():
    table = _table()
    good = _model(table, np.full(table.height, 2.0))             # always right, p = 0.88 close to 0.9
    bad = _model(table, np.where(np.arange(table.height) % 3 == 0, 2.0, -2.0))  # right on a third
    almost = _model(table, np.where(np.arange(table.height) == 0, -2.0, 2.0))  # good but wrong on one pair
    models = {"good": good, "bad": bad, "almost": almost, **comparison.baseline_metrics({"pairs": table}, BOOT)}
    tests = comparison.paired_tests(models, {"pairs": table}, [["good", "bad", "almost", *comparison.BASELINES]],
                                    BOOT, 10)
    close = next(t for t in tests if t["metric"] == "accuracy" and {t["a"], t["b"]} == {"good", "almost"})
    assert abs(close["difference"]) == pytest.approx(1 / 60) and not close["significant"] and close["mcnemar_p"] == 1.0
    accuracy = next(t for t in tests if t["metric"] == "accuracy" and {t["a"], t["b"]} == {"good", "bad"})
    # 40 discordant pairs, all for good: chi-square (|40 - 0| - 1)^2 / 40 = 38.0, p ~ 7e-10
    assert accuracy["significant"] and accuracy["mcnemar_method"] == "chi2" and accuracy["mcnemar_p"] < 1e-8
    verdict = comparison.verdict(models, tests, {"reward models": ["good", "bad"]})
    first = next(v for v in verdict if v["metric"] == "accuracy")
    assert first["best"] == "good" and "vs runner-up bad" in first["statement"] and ": significant" in first["statement"]
    nll = next(v for v in verdict if v["metric"] == "nll_p_chosen" and v["best"] == "good")
    assert "; beats p = 0.5 (0.693) (interval clears it)" in nll["statement"] and nll["outcome"] == "better"
    bad_nll = next(t for t in tests if t["metric"] == "nll_p_chosen")
    assert bad_nll["significant"]
    # half the pairs have the chosen one longer: pick-the-longer is right on exactly those
    assert models["baseline_longer"]["pairs"]["accuracy"] == 0.5
    assert accuracy["significant_holm"] and accuracy["family_size"] == 3 + 3 * 2  # 3 model pairs, 3 models x 2 baselines


def _gen(win: float, lc: float) -> dict:
    return {"generation": {"win_rate": win, "win_rate_low": win - 0.2, "win_rate_high": win + 0.2,
                           "lc_win_rate": lc, "prompts": 10}}


def test_generation_verdict_names_ties_and_length_explained_wins():
    tied = comparison.generation_verdict({"a": _gen(0.5, 0.5), "b": _gen(0.5, 0.5)}, ["a", "b"])
    assert tied[0].endswith("tied with b") and tied[1].endswith("tied with b")
    longer = comparison.generation_verdict({"a": _gen(0.7, 0.5), "b": _gen(0.4, 0.6)}, ["a", "b"])
    assert "a 0.700 [0.500, 0.900]" in longer[0] and "overlaps b" in longer[0]
    assert longer[1] == "best policy by length-controlled win rate ↑: b 0.600 (not a: length explains part of its raw win rate)"


def test_format_estimate_is_the_one_interval_format_of_sentences_and_table_cells():
    from prefalign.core.evaluation import report

    estimate = {"value": 0.12345, "low": 0.1, "high": 0.2}
    assert comparison.format_estimate(estimate) == "0.123 [0.100, 0.200]"
    assert report._ci(estimate) == "0.123 [0.100, 0.200]"
    assert comparison.format_estimate(None) == "n/a" and comparison.format_estimate({"value": None}) == "n/a"
    assert report._ci(None) == "" and report._ci({}) == ""


def test_uninformative_row_is_computed_once_per_set_on_all_its_pairs():
    # p_chosen 0.6 and 0.9 alternating; p = 0.5 everywhere: Brier = (0.1^2 + 0.4^2) / 2 = 0.085, NLL = ln 2;
    # the symmetric ECE puts (0.5, t) and (0.5, 1 - t) in the same bin: |0.5 - 0.5| = 0 (not |0.5 - 0.75|)
    table = _table().with_columns(p_chosen=pl.Series([0.9 if i % 2 else 0.6 for i in range(60)]))
    rows = comparison.uninformative_rows({"pairs": table, "heldout": table.clear()}, BOOT, 10)
    assert set(rows) == {"pairs"}  # an empty set has no row
    row = rows["pairs"]
    assert row["pairs"] == 60
    assert row["brier"]["value"] == pytest.approx(0.085) and row["ece"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert row["nll"]["value"] == pytest.approx(np.log(2))
    assert row["brier"]["low"] <= 0.085 <= row["brier"]["high"]
    # a model that scored only part of the set (e.g. pairs identical after truncation left out)
    # no longer carries its own copy of the row
    part = _model(table.head(10), np.full(10, 2.0))
    assert "uninformative_p_chosen" not in part["pairs"]


def test_report_p05_row_names_the_pairs_it_was_computed_on():
    from prefalign.core.evaluation import report

    table = _table()
    models = {"good": _model(table.head(50), np.full(50, 2.0))}
    uninformative = comparison.uninformative_rows({"pairs": table}, BOOT, 10)["pairs"]
    frame = report._pair_table(models, "pairs", ["good"], uninformative)
    assert frame["pairs"].to_list() == ["50", "60"]
    # every target is 0.9: p = 0.5's Brier is (0.5 - 0.9)^2 = 0.16 on every resample, shown as a value
    assert frame["Brier ↓"][1] == "0.160" and frame["NLL ↓ (nats)"][1] == "0.693"
