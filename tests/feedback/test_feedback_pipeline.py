"""The feedback pipeline end to end on the shipped samples (ci env), its failure modes, the
count reconciliation per source, and the extension point for generated (synthetic) sources."""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from prefalign.core.schema import PAIRS_SCHEMA
from prefalign.pipelines.feedback.pipeline import RAW_SOURCES, create_pipeline

MULTI_RESPONSE = ("tulu2_bon", "alpaca_eval", "arena_bench", "prometheus")


def _latest(project: Path, relative: str) -> Path:
    return max((project / relative).glob(f"*/{Path(relative).name}"))


def test_feedback_slice_on_ci_reconciles_every_source(run_kedro, kedro_project):
    run_kedro("feedback", env="ci")
    pairs = pl.read_parquet(_latest(kedro_project, "data/03_primary/pairs.parquet"))
    rejected = pl.read_parquet(_latest(kedro_project, "data/02_intermediate/rejected_feedback_records.parquet"))
    summary = json.loads(_latest(kedro_project, "data/08_reporting/feedback_summary.json").read_text())

    assert pairs.schema == pl.Schema(PAIRS_SCHEMA)
    assert pairs["pair_id"].is_unique().all()
    assert pairs.group_by("prompt_id").agg(pl.col("split").n_unique())["split"].max() == 1  # no prompt in two splits
    assert pairs["p_chosen"].is_between(0.5, 1.0).all() and (pairs["margin"].drop_nulls() >= 0).all()
    assert set(RAW_SOURCES) <= set(summary["sources"])  # plus any generated (synthetic) source
    for name, s in summary["sources"].items():
        assert s["pairs"] > 0, name
        assert s["records_read"] == s["records_used"] + s["records_rejected"], name
        assert s["pair_rows"] == s["candidate_pairs"] - s["capped_dropped"] - s["identical_dropped"] - s["ties_dropped"], name
        assert s["pairs"] == s["pair_rows"] - s["conflict_rows_removed"] - s["duplicates_dropped"] == pairs.filter(pl.col("source") == name).height, name
        assert rejected.filter(pl.col("source") == name).height == s["records_rejected"] + s["auxiliary_records_rejected"], name
        if name not in MULTI_RESPONSE:
            assert s["candidate_pairs"] == s["records_used"], name  # one pair per record
    for name in MULTI_RESPONSE:  # conf/ci caps within-prompt pairs at 3
        per_prompt = pairs.filter(pl.col("source") == name).group_by("prompt_id").len()["len"]
        assert per_prompt.max() <= 3 and summary["sources"][name]["capped_dropped"] > 0, name
    assert summary["total"]["pairs"] == pairs.height
    # hh-rlhf is binary: null margin and the configured constant p
    hh = pairs.filter(pl.col("source") == "hh_rlhf")
    assert hh["margin"].null_count() == hh.height and set(hh["p_chosen"]) == {1.0}


def _raw_copy(project: Path) -> Path:
    raw = project / "other_raw"
    shutil.copytree(project / "data" / "01_raw", raw)
    return raw


def test_disabled_source_never_reads_its_files(run_kedro, kedro_project):
    raw = _raw_copy(kedro_project)
    shutil.rmtree(raw / "hh_rlhf")
    run_kedro("feedback", env="ci", params={"raw_data_dir": str(raw), "feedback": {"sources": {"hh_rlhf": {"enabled": False}}}})
    summary = json.loads(_latest(kedro_project, "data/08_reporting/feedback_summary.json").read_text())
    assert "hh_rlhf" not in summary["sources"] and summary["sources"]["pandalm_human"]["pairs"] > 0


def test_unreadable_raw_file_fails_the_run_naming_the_file(run_kedro, kedro_project):
    raw = _raw_copy(kedro_project)
    (raw / "pandalm" / "testset-v1.json").write_text('{"this": "is not an array"}')
    with pytest.raises(Exception) as failure:
        run_kedro("feedback", env="ci", params={"raw_data_dir": str(raw)})
    assert "testset-v1.json does not hold a JSON array" in str(failure.value)


def test_generated_source_joins_the_pairs_table_with_minimal_wiring(tmp_path):
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner import SequentialRunner
    from kedro_datasets.json import JSONDataset
    from kedro_datasets.polars import EagerPolarsDataset

    def generate(params: dict) -> pl.DataFrame:  # stands in for core/synthetic's generator
        n = params["n"]
        return pl.DataFrame({"prompt": [f"s{i}" for i in range(n)], "chosen": ["w"] * n, "rejected": ["l"] * n,
                             "margin": [1.0] * n, "p_chosen": [0.7310585786] * n, "source": ["synthetic_scalar"] * n,
                             "feedback": ["synthetic"] * n, "signal": ["ground_truth"] * n, "true_p": [0.7310585786] * n})

    pipeline = create_pipeline(generated_sources={"synthetic_scalar": generate})

    def must_not_be_read():
        raise AssertionError("a disabled source read its raw files")

    datasets = {f"params:feedback.sources.{s}": MemoryDataset({"enabled": False}) for s in RAW_SOURCES}
    datasets["params:feedback.sources.synthetic_scalar"] = MemoryDataset({"n": 50, "feedback": "synthetic", "signal": "ground_truth"})
    datasets["params:feedback"] = MemoryDataset({"split": {"ratios": {"train": 0.8, "val": 0.1, "test": 0.1}, "salt": "x"}})
    datasets["params:feedback.sources"] = MemoryDataset({})  # no user table configured: raw_tables is never read
    datasets["params:feedback.max_rejected_fraction_per_file"] = MemoryDataset(0.5)
    datasets["raw_tables"] = MemoryDataset(must_not_be_read, copy_mode="assign")
    for roles in RAW_SOURCES.values():
        for name in roles.values():
            datasets[name] = MemoryDataset(must_not_be_read, copy_mode="assign")
    for name in ("pairs", "rejected_feedback_records"):
        datasets[name] = EagerPolarsDataset(filepath=str(tmp_path / f"{name}.parquet"), file_format="parquet")
    datasets["feedback_summary"] = JSONDataset(filepath=str(tmp_path / "summary.json"))
    SequentialRunner().run(pipeline, DataCatalog(datasets=datasets))
    pairs, summary = datasets["pairs"].load(), datasets["feedback_summary"].load()
    assert pairs.height == 50 and set(pairs["source"]) == {"synthetic_scalar"} and pairs["true_p"].null_count() == 0
    assert summary["sources"]["synthetic_scalar"]["pairs"] == 50 and datasets["rejected_feedback_records"].load().height == 0


def test_source_order_in_parameters_decides_which_duplicate_is_kept():
    from prefalign.pipelines.feedback.nodes import build_pairs

    def rows(source: str, p: float) -> pl.DataFrame:
        return pl.DataFrame({"prompt": ["x"], "chosen": ["a"], "rejected": ["b"], "margin": [None], "p_chosen": [p],
                             "source": [source], "feedback": ["ai"], "signal": ["votes"], "true_p": [None]},
                            schema={k: PAIRS_SCHEMA[k] for k in ("prompt", "chosen", "rejected", "margin", "p_chosen", "source", "feedback", "signal", "true_p")})

    split = {"ratios": {"train": 1.0, "val": 0.0, "test": 0.0}}
    human, judge = rows("pandalm_human", 0.8), rows("pandalm_gpt35", 2 / 3)
    pairs, resolution = build_pairs({"split": split, "sources": {"pandalm_human": {}, "pandalm_gpt35": {}}}, judge, human)
    assert pairs["source"].to_list() == ["pandalm_human"] and resolution["duplicates"] == {"pandalm_gpt35": 1}
    pairs, _ = build_pairs({"split": split, "sources": {"pandalm_gpt35": {}, "pandalm_human": {}}}, human, judge)
    assert pairs["source"].to_list() == ["pandalm_gpt35"]
