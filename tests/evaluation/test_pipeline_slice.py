"""The evaluation pipeline's wiring in a real Kedro session (ci sizes): synthetic sources through
feedback and validation, then the evaluation inputs, the ground-truth row and a RewardBench file by path."""

import json

import pytest


@pytest.mark.slow
def test_synthetic_sources_reach_evaluation_and_rewardbench_file_by_path(run_kedro, kedro_project):
    run_kedro("feedback")
    run_kedro("validation")
    custom = kedro_project / "my_bench.jsonl"
    custom.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "subset": "math-prm"},
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away.", "subset": "brand-new"},
    ]) + "\n")
    outputs = run_kedro("evaluation", params={"rewardbench_path": str(custom)},
                        to_nodes=["ground_truth_metrics", "prepare_rewardbench"])
    # kedro 1.x returns the free outputs as datasets
    rows = outputs["evaluation_rewardbench_rows"].load()
    assert sorted(rows["subset"].to_list()) == ["brand-new", "math-prm"]
    truth = outputs["evaluation_ground_truth_metrics"].load()
    by_source = {r["source"] for r in truth["pairs"]["accuracy_by_source_split"]}
    assert by_source == {"synthetic_scalar", "synthetic_cyclic"}
    assert truth["pairs"]["accuracy"] == 1.0 and truth["cyclic"]["consistency"] == 1.0
