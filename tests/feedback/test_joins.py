"""Every join in feedback checks its keys: a repeated key with the same content is kept once, with
different content it is ambiguous and the judgments naming it are rejected with a reason; a
corrupt duplicate never replaces a good row; counts per role (issue 11, class 4)."""

from __future__ import annotations

from prefalign.core.feedback.ingest import ingest_source
from tests.feedback.helpers import records

JUDGE = {"parser": "pandalm_judge", "result_field": "pandalm_result", "signal": "votes", "feedback": "ai", "laplace_alpha": 1.0}
VICUNA = {"parser": "vicuna_reviews", "signal": "score_gap", "feedback": "ai", "gamma": 0.3, "score_range": [1, 10]}
ARENA = {"parser": "arena_judgments", "signal": "score_gap", "feedback": "ai", "gamma": 0.3, "score_range": [1, 10]}


def _pair(idx: int, r2: str = "R2", instruction: str = "Say hi.") -> dict:
    return {"idx": idx, "instruction": instruction, "input": "", "response1": "R1", "response2": r2}


def test_a_corrupt_later_duplicate_does_not_replace_the_good_row():
    # idx 0 twice: the good pair, then a corrupted copy (empty response2: rejected by itself)
    testset = records(_pair(0), _pair(0, r2="  "), _pair(1, instruction="Say bye."))
    predictions = records({"idx": 0, "pandalm_result": 1}, {"idx": 1, "pandalm_result": 2})
    rows, rejected, stats = ingest_source("pandalm_7b", {"testset": testset, "predictions": predictions}, JUDGE)
    assert rows.select("prompt", "chosen").rows() == [("Say hi.", "R1"), ("Say bye.", "R2")]  # the good pair is kept
    assert rejected["role"].to_list() == ["testset"] and rejected["position"].to_list() == [1]
    assert stats["join_duplicates"]["testset"] == {"repeated_same_content": 0, "repeated_conflicting": 0}


def test_a_key_repeated_with_the_same_content_is_kept_once_and_counted():
    testset = records(_pair(0), _pair(0, r2="R2  "))  # the same text to a reader
    rows, rejected, stats = ingest_source("pandalm_7b", {"testset": testset, "predictions": records({"idx": 0, "pandalm_result": 1})}, JUDGE)
    assert rows.height == 1 and rejected.height == 0
    assert stats["join_duplicates"]["testset"] == {"repeated_same_content": 1, "repeated_conflicting": 0}


def test_a_key_repeated_with_different_content_is_ambiguous_never_keep_last():
    testset = records(_pair(0), _pair(0, r2="A different answer."), _pair(1, instruction="Say bye."))
    predictions = records({"idx": 0, "pandalm_result": 1}, {"idx": 1, "pandalm_result": 1})
    rows, rejected, stats = ingest_source("pandalm_7b", {"testset": testset, "predictions": predictions}, JUDGE)
    assert rows["prompt"].to_list() == ["Say bye."]
    [reason] = rejected["reason"].to_list()
    assert reason.startswith("the usable pair with idx 0 in the PandaLM test set appears 2 times with different content (f.jsonl#0, f.jsonl#1)")
    assert stats["join_duplicates"]["testset"] == {"repeated_same_content": 0, "repeated_conflicting": 1}


def test_vicuna_answer_ids_and_question_ids_are_checked():
    inputs = {
        "questions": records({"question_id": 1, "text": "Q one?"}, {"question_id": 1, "text": "Q one?"}, {"question_id": 2, "text": "Q two?"}),
        "answers": records({"answer_id": "a", "question_id": 1, "text": "Alpha."}, {"answer_id": "b", "question_id": 1, "text": "Beta."},
                           {"answer_id": "b", "question_id": 1, "text": "Beta, edited."},
                           {"answer_id": "c", "question_id": 2, "text": "Gamma."}, {"answer_id": "d", "question_id": 2, "text": "Delta."}),
        "reviews": records({"question_id": 1, "answer1_id": "a", "answer2_id": "b", "score": [8, 5]},
                           {"question_id": 2, "answer1_id": "c", "answer2_id": "d", "score": [4, 7]}),
    }
    rows, rejected, stats = ingest_source("vicuna_eval", inputs, VICUNA)
    assert rows.select("chosen", "rejected").rows() == [("Delta.", "Gamma.")]
    assert rejected["reason"][0].startswith("the answer with answer_id 'b' in answer/ appears 2 times with different content")
    assert stats["join_duplicates"] == {"questions": {"repeated_same_content": 1, "repeated_conflicting": 0},
                                        "answers": {"repeated_same_content": 0, "repeated_conflicting": 1}}


def test_arena_answers_keyed_by_question_and_model_are_checked():
    inputs = {
        "questions": records({"question_id": "q1", "turns": ["Name a colour."]}),
        "answers": records({"question_id": "q1", "model_id": "m1", "choices": [{"turns": ["Red."]}]},
                           {"question_id": "q1", "model_id": "m1", "choices": [{"turns": ["Blue."]}]},
                           {"question_id": "q1", "model_id": "m2", "choices": [{"turns": ["Green."]}]},
                           {"question_id": "q1", "model_id": "m3", "choices": [{"turns": ["Teal."]}]}),
        "judgments": records({"question_id": "q1", "model": "m1", "score": 8}, {"question_id": "q1", "model": "m2", "score": 5},
                             {"question_id": "q1", "model": "m3", "score": 3}),
    }
    rows, rejected, stats = ingest_source("arena_bench", inputs, ARENA)
    assert rows.select("chosen", "rejected").rows() == [("Green.", "Teal.")]
    assert rejected["reason"][0].startswith("the answer of model 'm1' to question 'q1' in model_answer/ appears 2 times")
    assert stats["join_duplicates"]["answers"] == {"repeated_same_content": 0, "repeated_conflicting": 1}
