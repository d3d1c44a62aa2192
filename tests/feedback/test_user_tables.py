"""The user-tables folder checked before a run (issue 23 items 6 and 8): a file no source reads is
named (a block in conf/local is not loaded under --env ci), a `table:` that names nothing and an
incomplete score_gap block are one-line parameter errors, not tracebacks from inside a node."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefalign.core.feedback.ingest import check_source_params
from prefalign.core.feedback.tables import check_user_tables
from prefalign.core.models.params import ParameterError
from prefalign.pipelines.parameter_checks import check_feedback

BINARY = {"parser": "preference_table", "feedback": "human", "signal": "binary"}


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    folder = tmp_path / "tables"
    (folder / "saved" / "train").mkdir(parents=True)
    for name in ("mine.csv", "forgotten.jsonl", "off.parquet", "saved/train/data-00000.arrow", ".gitkeep", "README.md"):
        (folder / name).write_text("x")
    return folder


def test_files_no_source_reads_are_named(tables: Path):
    sources = {
        "ultrafeedback": {"parser": "ultrafeedback_pairs"},  # not a table source: ignored
        "mine": {**BINARY, "table": "mine.csv"},
        "off": {**BINARY, "table": "off.parquet", "enabled": False},  # switched off on purpose: not "forgotten"
        "saved": {**BINARY, "table": "saved", "file_format": "hf_dataset"},  # a folder: every file in it is read
    }
    assert check_user_tables(sources, tables) == ["forgotten.jsonl"]
    assert check_user_tables({}, tables) == ["forgotten.jsonl", "mine.csv", "off.parquet", "saved/train/data-00000.arrow"]
    assert check_user_tables({}, tables / "absent") == []  # no folder, no table: nothing to say


def test_a_wrong_table_name_names_the_key_and_the_closest_file(tables: Path):
    with pytest.raises(ValueError) as raised:
        check_user_tables({"mine": {**BINARY, "table": "mine.cvs"}}, tables)
    assert str(raised.value) == (f"feedback.sources.mine.table='mine.cvs': no such file or folder under {tables} "
                                 "(did you mean 'mine.csv'?)")
    with pytest.raises(ValueError, match=r"feedback.sources.mine.table=None: a preference_table source needs `table:`"):
        check_user_tables({"mine": BINARY}, tables)
    with pytest.raises(ValueError, match=r"table='saved' is a folder: set feedback.sources.mine.glob"):
        check_user_tables({"mine": {**BINARY, "table": "saved"}}, tables)
    check_user_tables({"mine": {**BINARY, "table": "typo.csv", "enabled": False}}, tables)  # a disabled block is not checked


def test_a_score_gap_table_without_its_score_columns_fails_the_parameter_check():
    block = {"parser": "preference_table", "feedback": "ai", "signal": "score_gap", "gamma": 0.5, "table": "t.csv"}
    with pytest.raises(ValueError, match=r"^feedback.sources.mine: a score_gap preference_table needs columns.score_chosen "
                                         r"and columns.score_rejected, or columns.margin$"):
        check_source_params("mine", block)
    check_source_params("mine", {**block, "columns": {"margin": "gap"}})  # a margin column is enough
    params = {"feedback": {"split": {"ratios": {"train": 0.8, "val": 0.1, "test": 0.1}}, "sources": {"mine": block}}}
    with pytest.raises(ParameterError, match=r"feedback.sources.mine: .*needs columns.score_chosen"):
        check_feedback(params)  # the pre-run check of the feedback pipeline (hooks.py), not the node
