"""RewardBench v1 and v2 scored by their published rules, on small files computed by hand."""

import json
import math

import numpy as np
import polars as pl
import pytest
import yaml

from prefalign.core.evaluation import metrics as m
from prefalign.core.evaluation import rewardbench as rb
from prefalign.core.evaluation.pair_scorers import score_pairs
from prefalign.pipelines.evaluation.nodes import prepare_rewardbench

# RewardBench v1 subset sizes as published (allenai/reward-bench EXAMPLE_COUNTS), Chat and Reasoning
V1_SIZES = {"alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28,
            "mt-bench-med": 40, "math-prm": 447, "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164,
            "hep-python": 164, "hep-rust": 164}
RIGHT_ON = {"alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "math-prm"}


def _base_rewardbench_params():
    with open("conf/base/parameters_evaluation.yml") as handle:
        return yaml.safe_load(handle)["evaluation"]["rewardbench"]


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return pl.read_ndjson(path)


def test_rewardbench_v1_scores_as_published_with_the_default_parameters(tmp_path):
    rows = [{"prompt": f"{s} question {i}", "chosen": "good", "rejected": "bad", "subset": s}
            for s, n in V1_SIZES.items() for i in range(n)]
    table = _write_jsonl(tmp_path / "v1.jsonl", rows)
    params = _base_rewardbench_params()
    prepared = prepare_rewardbench(table, params)
    assert prepared.height == len(rows)  # no cap by default
    scored = prepared.with_columns(logit=pl.when(pl.col("subset").is_in(list(RIGHT_ON))).then(1.0).otherwise(-1.0))
    result = rb.score(scored, params["sections"], params["subset_weights"], params.get("max_rows_per_subset"))
    # Chat: 290 right of 358 prompts; Reasoning: math-prm counts 984 = 6 x 164, so exactly 1/2
    assert result["sections"]["Chat"] == pytest.approx(290 / 358)
    assert round(result["sections"]["Chat"], 4) == 0.8101
    assert result["sections"]["Reasoning"] == pytest.approx(0.5)
    assert round(result["overall"], 4) == 0.6550
    assert result["capped_rows_per_subset"] is None


def test_rewardbench_v1_cap_is_an_explicit_recorded_option(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad", "subset": "alpacaeval-easy"} for i in range(20)]
    prepared = prepare_rewardbench(_write_jsonl(tmp_path / "v1.jsonl", rows), {"max_rows_per_subset": 5, "seed": 0})
    assert prepared.height == 5
    result = rb.score(prepared.with_columns(logit=pl.lit(1.0)), {"Chat": ["alpacaeval-easy"]}, {}, 5)
    assert result["capped_rows_per_subset"] == 5


V2_REWARDS = {"A1": 3, "B1": 1, "C1": 2, "D1": 0,   # chosen strictly best: credit 1
              "A2": 2, "B2": 2, "C2": 1, "D2": 0,   # 2-way tie at the top: 1/2
              "A3": 1, "B3": 2, "C3": 0, "D3": 0,   # a rejected answer wins: 0
              "A4": 5, "B4": 5, "C4": 5, "D4": 1,   # 3-way tie: 1/3
              "R0": 2.5, "x1": 1, "x2": 2, "T1": 5, "T2": 4,
              "R1": 1, "y1": 2, "T3": 3, "T4": 1}


def _v2_rows():
    def row(i, subset, chosen, rejected):
        return {"id": i, "prompt": f"p{i}", "chosen": chosen, "rejected": rejected, "subset": subset,
                "num_correct": len(chosen)}
    return [
        row("1", "Factuality", ["A1"], ["B1", "C1", "D1"]),
        row("2", "Factuality", ["A2"], ["B2", "C2", "D2"]),
        row("3", "Factuality", ["A3"], ["B3", "C3", "D3"]),
        row("4", "Math", ["A4"], ["B4", "C4", "D4"]),
        row("ref:0", "Ties", ["R0"], ["x1", "x2"]),
        row("tied:0", "Ties", ["T1", "T2"], ["x1", "x2"]),
        row("ref:1", "Ties", ["R1"], ["y1"]),
        row("tied:1", "Ties", ["T3", "T4"], ["y1"]),
    ]


def _reward_scorer(prompts, first, second, prompt_messages=None):
    return np.array([V2_REWARDS[a] - V2_REWARDS[b] for a, b in zip(first, second)], dtype=np.float64)


def test_rewardbench_v2_by_hand(tmp_path):
    table = _write_jsonl(tmp_path / "v2.jsonl", _v2_rows())
    prepared = prepare_rewardbench(table, {"max_rows_per_subset": None})
    assert prepared.height == 3 * 4 + 2 + 3 + 1 + 2  # n - 1 scored pairs per prompt
    result = rb.score(score_pairs(prepared, _reward_scorer), {}, {})
    assert result["format"] == "v2"
    assert result["sections"]["Factuality"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert result["sections"]["Math"] == pytest.approx(1 / 3)
    # Ties: ref acc 1/2 (2.5 > 2; 1 < 2), tied acc 1/2; spread (5-4, 3-1) = (1, 2); tied margin (4-2, 1-2) = (2, -1);
    # ref margin (2.5-2, 1-2) = (0.5, -1); hard margin = min -> (0.5, -1)
    # preferred = mean(2 > 1, -1 > 2) = 1/2; preferred_hard = mean(0.5 > 1, -1 > 2) = 0;
    # margin term = mean(tanh(0.5/1 - 1), tanh(-1/2 - 1))
    margin = (math.tanh(-0.5) + math.tanh(-1.5)) / 2
    ties = 0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.0 + 0.01 * margin
    assert result["sections"]["Ties"] == pytest.approx(ties)
    assert result["subsets"]["Ties"]["ties"]["correctness_preferred"] == 0.5
    assert result["subsets"]["Ties"]["ties"]["correctness_preferred_hard"] == 0.0
    assert result["overall"] == pytest.approx((0.5 + 1 / 3 + ties) / 3)


def test_best_of_n_credit_by_hand():
    assert m.best_of_n_credit([2.0, 1.0, 0.0, -1.0]) == 1.0
    assert m.best_of_n_credit([2.0, 2.0, 2.0, 2.0]) == 0.25
    assert m.best_of_n_credit([2.0, 3.0, 0.0, 0.0]) == 0.0


def test_rewardbench_v2_bad_rows_are_named(tmp_path):
    rows = _v2_rows()
    rows[0]["chosen"] = ["A1", "B1"]
    rows[0]["rejected"] = ["C1", "D1"]
    rows[0]["num_correct"] = 2
    prepared = prepare_rewardbench(_write_jsonl(tmp_path / "v2.jsonl", rows), {})
    with pytest.raises(ValueError, match="num_correct=2"):
        rb.score(score_pairs(prepared, _reward_scorer), {}, {})
    with pytest.raises(ValueError, match="ref:<n>"):
        m.ties_score([("7", [1.0, 0.0], 1)])


def test_ties_accuracy_needs_every_correct_answer_strictly_above_every_incorrect_one():
    # margin 0 (worst correct = best incorrect) is NOT accurate; margin_tied = spread is NOT preferred
    rows = [("ref:0", [2.0, 2.0, 1.0], 1),        # ref margin 2 - 2 = 0: not accurate
            ("tied:0", [3.0, 2.0, 2.0], 2),       # correct 3, 2; incorrect 2: margin 0, spread 1: not accurate
            ("ref:1", [2.0, 1.0], 1),             # margin 1: accurate
            ("tied:1", [4.0, 3.0, 2.0], 2)]       # margin 3 - 2 = 1 = spread 4 - 3: accurate, not "preferred"
    result = m.ties_score(rows)
    assert result["ref_accuracy"] == 0.5 and result["tied_accuracy"] == 0.5
    assert result["correctness_preferred"] == 0.0  # margin_tied (0, 1) > spread (1, 1): neither
    assert result["correctness_preferred_hard"] == 0.0
    # margin term: tanh(min(0, 0) / 1 - 1) and tanh(min(1, 1) / 1 - 1) = tanh(-1), tanh(0)
    assert result["margin_score"] == pytest.approx(math.tanh(-1.0) / 2)
    assert result["score"] == pytest.approx(0.3 * 0.5 + 0.3 * 0.5 + 0.01 * math.tanh(-1.0) / 2)
