"""Bring your own preference table (issue 11, class 6): JSONL, JSON, Parquet, CSV and a saved
`datasets` folder, strings or {role, content} turns, scores / margin / label, configured by a
column mapping; the same rejection rules as every source; one parameters block per table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest

from prefalign.core.feedback.ingest import ingest_source
from prefalign.core.feedback.parsers import flatten_messages
from prefalign.datasets.raw_records import RawRecordsDataset, RawTablesDataset
from prefalign.pipelines.feedback.nodes import ingest_tables

BINARY = {"parser": "preference_table", "feedback": "human", "signal": "binary", "binary_p": 1.0}
SCORES = {"parser": "preference_table", "feedback": "ai", "signal": "score_gap", "gamma": 0.5,
          "columns": {"score_chosen": "score_chosen", "score_rejected": "score_rejected"}}


def _ingest(path: Path, params: dict, **dataset):
    records = RawRecordsDataset(filepath=str(path), **dataset).load()()
    return ingest_source("my_table", {"records": records}, params)


def _u(text: str) -> dict:
    return {"role": "user", "content": text}


def _a(text: str) -> dict:
    return {"role": "assistant", "content": text}


def test_jsonl_strings_with_scores(tmp_path):
    rows = [{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon.", "score_chosen": 9, "score_rejected": 3},
            {"prompt": "2+2?", "chosen": "5.", "rejected": "4.", "score_chosen": 2, "score_rejected": 8},  # the "rejected" column won
            {"prompt": "Empty?", "chosen": "\u200b", "rejected": "No.", "score_chosen": 5, "score_rejected": 1}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, rejected, stats = _ingest(tmp_path / "t.jsonl", SCORES)
    assert pairs.select("prompt", "chosen", "rejected", "margin").rows() == [("Capital of France?", "Paris.", "Lyon.", 6.0), ("2+2?", "4.", "5.", 6.0)]
    assert pairs["p_chosen"].to_list() == pytest.approx([1 / (1 + math.exp(-3.0))] * 2)
    assert pairs["prompt_messages"].to_list() == [[_u("Capital of France?")], [_u("2+2?")]]
    assert rejected["reason"].to_list() == ["field 'chosen' is empty text (no visible character)"]
    assert stats["records_read"] == 3


def test_json_conversational_with_the_prompt_inside_chosen_and_rejected(tmp_path):
    history = [{"role": "system", "content": "Be brief."}, _u("Hi."), _a("Hello!"), _u("A fruit?")]
    rows = [{"chosen": history + [_a("Apple.")], "rejected": history + [_a("Car.")]},
            {"chosen": [_u("X?"), _a("Yes.")], "rejected": [_u("Y?"), _a("No.")]}]  # different prompts: rejected
    (tmp_path / "t.json").write_text(json.dumps(rows))
    pairs, rejected, _ = _ingest(tmp_path / "t.json", {**BINARY, "columns": {"prompt": None}})
    [pair] = pairs.iter_rows(named=True)
    assert (pair["chosen"], pair["rejected"], pair["prompt_messages"]) == ("Apple.", "Car.", history)
    assert pair["prompt"] == "Be brief.\n\nHuman: Hi.\n\nAssistant: Hello!\n\nHuman: A fruit?\n\nAssistant:"
    assert rejected["reason"].to_list() == ["the chosen and rejected conversations do not share their prompt turns"]


def test_parquet_explicit_conversational_prompt_and_a_margin(tmp_path):
    frame = pl.DataFrame({"question": [[_u("Pick a number.")]], "good": [[_a("Seven.")]], "bad": [[_a("Banana.")]],
                          "gap": [2.0]})
    frame.write_parquet(tmp_path / "t.parquet")
    params = {"parser": "preference_table", "feedback": "ai", "signal": "score_gap", "gamma": 1.0,
              "columns": {"prompt": "question", "chosen": "good", "rejected": "bad", "margin": "gap"}}
    pairs, rejected, _ = _ingest(tmp_path / "t.parquet", params)
    assert pairs.select("prompt", "chosen", "rejected", "margin").rows() == [("Pick a number.", "Seven.", "Banana.", 2.0)]
    assert pairs["p_chosen"][0] == pytest.approx(1 / (1 + math.exp(-2.0))) and rejected.height == 0


def test_csv_with_a_winner_label_and_a_system_column(tmp_path):
    (tmp_path / "t.csv").write_text("sys,prompt,response_a,response_b,winner\n"
                                    "You are kind.,Greet me.,Hello there!,Go away.,a\n"
                                    ",Name a tree.,Granite.,Oak.,b\n"
                                    ",Odd?,x,y,maybe\n")
    params = {**BINARY, "columns": {"system": "sys", "chosen": "response_a", "rejected": "response_b", "label": "winner"}}
    pairs, rejected, _ = _ingest(tmp_path / "t.csv", params)
    assert pairs.select("prompt", "chosen", "rejected").rows() == [("You are kind.\n\nGreet me.", "Hello there!", "Go away."),
                                                                   ("Name a tree.", "Oak.", "Granite.")]
    assert pairs["prompt_messages"][0].to_list() == [{"role": "system", "content": "You are kind."}, _u("Greet me.")]
    assert rejected["reason"][0].startswith("field 'winner' = 'maybe' is not a winner label")


def _save_dataset_folder(folder: Path, rows: dict) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict(rows).save_to_disk(str(folder))


def test_saved_datasets_folder_trl_format(tmp_path):
    _save_dataset_folder(tmp_path / "saved", {"prompt": ["Sky colour?", "Grass colour?"], "chosen": ["Blue.", "Green."],
                                              "rejected": ["Green.", "Green."]})
    pairs, rejected, _ = _ingest(tmp_path / "saved", BINARY, file_format="hf_dataset")
    assert pairs.select("prompt", "chosen", "rejected").rows() == [("Sky colour?", "Blue.", "Green.")]
    assert rejected["reason"][0].startswith("the two responses are the same text to a reader")


def test_saved_datasets_dict_is_read_without_the_datasets_package(tmp_path):
    import pyarrow as pa

    root = tmp_path / "dd"
    for split, prompt in (("train", "One?"), ("test", "Two?")):
        (root / split).mkdir(parents=True)
        table = pa.Table.from_pylist([{"prompt": prompt, "chosen": "Yes.", "rejected": "No."}])
        with pa.ipc.new_stream(str(root / split / "data-00000-of-00001.arrow"), table.schema) as writer:
            writer.write_table(table)
        (root / split / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    pairs, _, _ = _ingest(root, BINARY, file_format="hf_dataset")
    assert pairs["prompt"].to_list() == ["One?", "Two?"]


def test_bad_column_mapping_fails_before_reading(tmp_path):
    with pytest.raises(ValueError, match="unknown fields \\['answer'\\]"):
        ingest_source("t", {"records": []}, {**BINARY, "columns": {"answer": "x"}})
    with pytest.raises(ValueError, match="needs columns.score_chosen and columns.score_rejected, or columns.margin"):
        ingest_source("t", {"records": []}, {**BINARY, "signal": "score_gap", "gamma": 1.0})


def test_flattening_rule():
    assert flatten_messages([_u("Hi")]) == "Hi"
    assert flatten_messages([_u("Hi"), _a("Yo"), _u("Bye")]) == "\n\nHuman: Hi\n\nAssistant: Yo\n\nHuman: Bye\n\nAssistant:"


def test_one_parameters_block_per_table_is_all_the_wiring(tmp_path):
    (tmp_path / "mine.jsonl").write_text(json.dumps({"prompt": "P?", "chosen": "Good.", "rejected": "Bad."}) + "\n")
    sources = {"ultrafeedback": {"parser": "ultrafeedback_pairs"},  # a shipped source: not a table, skipped
               "my_table": {**BINARY, "table": "mine.jsonl"}, "off": {**BINARY, "table": "missing.jsonl", "enabled": False}}
    rows, rejected, stats = ingest_tables(sources, 0.5, RawTablesDataset(filepath=str(tmp_path)).load())
    assert rows["source"].to_list() == ["my_table"] and rejected.height == 0
    assert [s["source"] for s in stats] == ["my_table"]


def test_a_user_table_runs_through_feedback_and_validation(run_kedro, kedro_project):
    tables = kedro_project / "data" / "01_raw" / "tables"
    tables.mkdir()
    rows = [{"prompt": f"Question {i}?", "chosen": f"A careful answer {i}.", "rejected": f"Whatever {i}."} for i in range(40)]
    (tables / "my_prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = {"feedback": {"sources": {"my_prefs": {**BINARY, "table": "my_prefs.jsonl"}}}}
    run_kedro("feedback", env="ci", params=params)
    run_kedro("validation", env="ci", params=params)
    validated = pl.read_parquet(max((kedro_project / "data" / "05_model_input" / "validated_pairs.parquet").glob("*/validated_pairs.parquet")))
    assert validated.filter(pl.col("source") == "my_prefs").height == 40  # source_allowed comes from feedback.sources
