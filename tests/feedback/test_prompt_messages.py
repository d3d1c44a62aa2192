"""prompt_messages (issue 10's contract column): the prompt as chat turns beside the flattened text,
filled by every source; validated as non-empty, known roles, a user turn last."""

from __future__ import annotations

import polars as pl
import pytest

from prefalign.core.feedback.ingest import ingest_source
from prefalign.core.feedback.parsers import RecordError, hh_prompt_messages
from prefalign.core.schema import MESSAGES_DTYPE, PAIRS_SCHEMA, conform_to_pairs_schema, prompt_messages_problem
from prefalign.pipelines.feedback.synthetic import synthetic_scalar_rows
from tests.feedback.helpers import records


def test_contract_column_type():
    assert PAIRS_SCHEMA["prompt_messages"] == MESSAGES_DTYPE == pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


def test_hh_dialogue_turns_without_the_compared_assistant_turn():
    chosen = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: Why did the chicken..."
    rejected = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: No."
    rows, rejected_rows, _ = ingest_source("hh_rlhf", {"records": records({"chosen": chosen, "rejected": rejected})},
                                           {"parser": "hh_rlhf_dialogues", "signal": "binary", "feedback": "human"})
    [row] = rows.iter_rows(named=True)
    assert row["prompt"] == "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant:"  # flattening kept
    assert row["prompt_messages"] == [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                                      {"role": "user", "content": "Tell me a joke."}]
    assert row["chosen"] == "Why did the chicken..." and rejected_rows.height == 0


def test_hh_prompt_that_does_not_end_with_a_human_turn_is_a_record_error():
    with pytest.raises(RecordError, match="does not end with a Human turn"):
        hh_prompt_messages("\n\nHuman: a\n\nAssistant: b\n\nAssistant:")
    # consecutive turns of one speaker are merged, so chat templates that need alternation work
    assert hh_prompt_messages("\n\nHuman: a\n\nHuman: b\n\nAssistant:") == [{"role": "user", "content": "a\n\nb"}]


def test_single_turn_sources_get_one_user_turn():
    raw = records({"prompt": "Q?", "chosen": "Yes.", "rejected": "No.", "metadata": {"score_chosen": 8, "score_rejected": 2}})
    rows, _, _ = ingest_source("ultrafeedback", {"records": raw}, {"parser": "ultrafeedback_pairs", "signal": "score_gap",
                                                                   "feedback": "ai", "gamma": 0.3, "score_range": [1, 10]})
    assert rows["prompt_messages"].to_list() == [[{"role": "user", "content": "Q?"}]]


def test_synthetic_sources_get_one_user_turn():
    rows = synthetic_scalar_rows({"n_prompts": 3, "responses_per_prompt": 2, "seed": 0})
    assert all(m == [{"role": "user", "content": p}] for m, p in zip(rows["prompt_messages"].to_list(), rows["prompt"].to_list()))


def test_conform_fills_a_missing_column_with_one_user_turn():
    frame = pl.DataFrame({c: ["x"] for c in PAIRS_SCHEMA if c not in ("prompt_messages", "margin", "p_chosen", "true_p")})
    frame = frame.with_columns(margin=pl.lit(1.0), p_chosen=pl.lit(0.7), true_p=pl.lit(None, dtype=pl.Float64))
    assert conform_to_pairs_schema(frame)["prompt_messages"].to_list() == [[{"role": "user", "content": "x"}]]


@pytest.mark.parametrize("messages, problem", [
    ([], "is empty"), (None, "is empty"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "ends with a 'assistant' turn"),
    ([{"role": "bot", "content": "a"}], "has role 'bot'"),
    ([{"role": "user", "content": None}], "has no text content"),
])
def test_messages_problem_names_what_is_wrong(messages, problem):
    def messages_problem(value):  # the schema's one rule, on one row
        frame = pl.DataFrame({"prompt_messages": [value]}, schema={"prompt_messages": MESSAGES_DTYPE})
        return frame.select(prompt_messages_problem()).item()

    assert problem in messages_problem(messages)
    assert messages_problem([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) is None


def test_pairs_dataset_preview_is_json_with_nested_columns(tmp_path):
    import json

    from prefalign.datasets.polars_table import PolarsTableDataset as PairsTableDataset

    frame = pl.DataFrame({"prompt": ["Q?"], "prompt_messages": [[{"role": "user", "content": "Q?"}]]},
                         schema={"prompt": pl.String, "prompt_messages": MESSAGES_DTYPE})
    dataset = PairsTableDataset(filepath=str(tmp_path / "p.parquet"), file_format="parquet")
    dataset.save(frame)
    preview = json.loads(json.dumps(dataset.preview(5)))  # the kedro-viz export must serialise it
    assert preview["data"] == [["Q?", '[{"role": "user", "content": "Q?"}]']]
    assert dataset.load()["prompt_messages"].dtype == MESSAGES_DTYPE  # loading is unchanged
