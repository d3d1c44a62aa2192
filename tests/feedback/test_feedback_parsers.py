"""Each parser on a tiny hand-checked fixture: the expected rows, margin and p."""

import math

import pytest

from prefalign.core.feedback.ingest import ingest_source

from .helpers import by_chosen, records

SIG = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
SCORE = {"signal": "score_gap", "feedback": "ai", "gamma": 0.3, "score_range": [1, 10]}


def test_ultrafeedback_orients_by_score_and_keeps_ties():
    raw = records(
        {"prompt": "P1", "chosen": "good", "rejected": "bad", "metadata": {"score_chosen": 8, "score_rejected": 5}},
        {"prompt": "P2", "chosen": "labelled", "rejected": "better", "metadata": {"score_chosen": 6.0, "score_rejected": 7.0}},
        {"prompt": "P3", "chosen": "same1", "rejected": "same2", "metadata": {"score_chosen": 7, "score_rejected": 7}},
    )
    rows, rejected, stats = ingest_source("ultrafeedback", {"records": raw}, dict(SCORE, parser="ultrafeedback_pairs"))
    got = by_chosen(rows)
    assert got["good"]["rejected"] == "bad" and got["good"]["margin"] == 3.0 and got["good"]["p_chosen"] == pytest.approx(0.7109495026)
    assert got["better"]["rejected"] == "labelled" and got["better"]["margin"] == 1.0 and got["better"]["p_chosen"] == pytest.approx(SIG(0.3))
    assert got["same1"]["p_chosen"] == 0.5 and got["same1"]["margin"] == 0.0
    assert set(rows["source"]) == {"ultrafeedback"} and set(rows["signal"]) == {"score_gap"} and rows["true_p"].null_count() == 3
    assert rejected.height == 0 and stats["ties"] == 1
    rows, _, stats = ingest_source("ultrafeedback", {"records": raw}, dict(SCORE, parser="ultrafeedback_pairs", drop_ties=True))
    assert rows.height == 2 and stats["ties_dropped"] == 1


def test_alpaca_eval_pairs_responses_within_an_instruction_by_judge_logits():
    raw = records(*[{"instruction": "I", "output_2": f"r{i}", "generator_2": f"m{i}", "preference": pref}
                    for i, pref in enumerate([1.8, 1.5, 1.2])],
                  {"instruction": "alone", "output_2": "x", "generator_2": "m0", "preference": 1.9})
    params = {"parser": "alpaca_eval_annotations", "signal": "judge_prob", "feedback": "ai", "eps": 1e-6}
    rows, _, stats = ingest_source("alpaca_eval", {"records": raw}, params)
    # q = 0.8, 0.5, 0.2: logit gaps ln4, 2 ln4, ln4; p = 0.8, 16/17, 0.8
    assert rows.select("chosen", "rejected").rows() == [("r0", "r1"), ("r0", "r2"), ("r1", "r2")]
    assert rows["margin"].to_list() == pytest.approx([math.log(4), 2 * math.log(4), math.log(4)])
    assert rows["p_chosen"].to_list() == pytest.approx([0.8, 16 / 17, 0.8])
    assert stats["candidate_pairs"] == 3 and stats["prompts"] == 2  # one response alone makes no pair
    capped, _, stats = ingest_source("alpaca_eval", {"records": raw}, dict(params, max_pairs_per_prompt=2))
    assert capped.height == 2 and stats["capped_dropped"] == 1
    again, _, _ = ingest_source("alpaca_eval", {"records": raw}, dict(params, max_pairs_per_prompt=2))
    assert again.equals(capped)  # the cap's choice is deterministic


def test_arena_joins_judgments_to_questions_and_answers():
    inputs = {
        "questions": records({"question_id": "q1", "turns": ["Q?"]}),
        "answers": records({"question_id": "q1", "model_id": "A", "choices": [{"turns": ["a says"]}]},
                           {"question_id": "q1", "model_id": "B", "choices": [{"turns": ["b says", "more"]}]}),
        "judgments": records({"question_id": "q1", "model": "A", "score": 5}, {"question_id": "q1", "model": "B", "score": 8},
                             {"question_id": "q1", "model": "C", "score": 9}, {"question_id": "q1", "model": "A", "score": None}),
    }
    rows, rejected, stats = ingest_source("arena_bench", inputs, dict(SCORE, parser="arena_judgments"))
    [row] = rows.iter_rows(named=True)
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("Q?", "b says\n\nmore", "a says")
    assert row["margin"] == 3.0 and row["p_chosen"] == pytest.approx(SIG(0.9))
    assert sorted(rejected["reason"]) == ["field 'score' is null (no score was given)", "no answer of model 'C' to question 'q1' in model_answer/"]
    assert stats["records_read"] == 4 and stats["records_used"] == 2 and stats["auxiliary_records_read"] == 3


def test_vicuna_review_scores_both_answers():
    inputs = {
        "questions": records({"question_id": 1, "text": "Q"}),
        "answers": records({"answer_id": "a1", "question_id": 1, "text": "X"}, {"answer_id": "a2", "question_id": 1, "text": "Y"}),
        "reviews": records({"question_id": 1, "answer1_id": "a1", "answer2_id": "a2", "score": [7, 9.0]},
                           {"question_id": 1, "answer1_id": "a1", "answer2_id": "a2", "score": [-1, 9]}),
    }
    rows, rejected, _ = ingest_source("vicuna_eval", inputs, dict(SCORE, parser="vicuna_reviews"))
    assert rows.select("prompt", "chosen", "rejected", "margin").rows() == [("Q", "Y", "X", 2.0)]
    assert rows["p_chosen"][0] == pytest.approx(SIG(0.6))
    assert rejected["reason"].to_list() == ["score of answer1 = -1 is outside the source's range [1, 10]"]


def _rubric(instruction: str, response: str) -> str:
    return (f"###Task Description:\nblah\n\n###The instruction to evaluate:\n{instruction}\n\n###Response to evaluate:\n{response}\n\n"
            "###Reference Answer (Score 5):\nref\n\n###Score Rubrics:\n[Is it good?]\nScore 1: no\n\n###Feedback: ")


def test_prometheus_cuts_instruction_and_response_out_of_the_rubric_prompt():
    raw = records({"instruction": _rubric("Do X.", "I did X well."), "gpt4_score": [4, 4, 5], "response_source": "m1"},
                  {"instruction": _rubric("Do X.", "meh"), "gpt4_score": [2, 3, 2], "response_source": "m2"},
                  {"instruction": "no template here", "gpt4_score": [1, 1, 1]})
    rows, rejected, _ = ingest_source("prometheus", {"records": raw}, {"parser": "prometheus_rubric", "signal": "score_gap",
                                                                       "feedback": "ai", "gamma": 1.1, "score_range": [1, 5]})
    [row] = rows.iter_rows(named=True)
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("Do X.", "I did X well.", "meh")
    assert row["margin"] == pytest.approx(2.0) and row["p_chosen"] == pytest.approx(SIG(2.2))  # means 13/3 and 7/3
    assert rejected["reason"].to_list() == ["rubric prompt has no '###The instruction to evaluate:' section"]


def test_hh_rlhf_prompt_is_the_shared_prefix_up_to_the_last_assistant_turn():
    head = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help?\n\nAssistant:"
    raw = records({"chosen": head + " Sure, here.", "rejected": head + " No."},
                  {"chosen": "\n\nHuman: x", "rejected": "\n\nHuman: y"})
    rows, rejected, _ = ingest_source("hh_rlhf", {"records": raw}, {"parser": "hh_rlhf_dialogues", "signal": "binary",
                                                                    "feedback": "human", "binary_p": 0.9})
    assert rows.select("prompt", "chosen", "rejected", "margin", "p_chosen").rows() == [(head, "Sure, here.", "No.", None, 0.9)]
    assert "share no" in rejected["reason"][0]


def test_pandalm_votes_with_a_tie_and_the_input_appended():
    raw = records({"idx": 0, "instruction": "Fix it.", "input": "txt", "response1": "R1", "response2": "R2",
                   "annotator1": 1, "annotator2": 1, "annotator3": 0},
                  {"idx": 1, "instruction": "Go.", "input": "", "response1": "S1", "response2": "S2",
                   "annotator1": 2, "annotator2": 2, "annotator3": 2})
    rows, _, _ = ingest_source("pandalm_human", {"records": raw}, {"parser": "pandalm_votes", "signal": "votes",
                                                                   "feedback": "human", "laplace_alpha": 1.0})
    # 2-0 with a tie: (2 + 0.5 + 1) / (3 + 2) = 0.7 ; 0-3: (3 + 1) / 5 = 0.8 for response2
    assert rows.select("prompt", "chosen", "rejected").rows() == [("Fix it.\n\ntxt", "R1", "R2"), ("Go.", "S2", "S1")]
    assert rows["p_chosen"].to_list() == pytest.approx([0.7, 0.8])
    assert rows["margin"].to_list() == pytest.approx([math.log(0.7 / 0.3), math.log(4)])


def test_pandalm_ai_judge_is_one_vote_on_the_test_set_pair():
    testset = records({"idx": 0, "instruction": "A", "input": "", "response1": "R1", "response2": "R2"},
                      {"idx": 1, "instruction": "B", "input": "", "response1": "S1", "response2": "S2"})
    predictions = records({"idx": 0, "gpt_result": "2"}, {"idx": 1, "gpt_result": "Tie"}, {"idx": 2, "gpt_result": "1"},
                          {"idx": 0, "gpt_result": "garbage"})
    rows, rejected, stats = ingest_source("pandalm_gpt35", {"testset": testset, "predictions": predictions},
                                          {"parser": "pandalm_judge", "result_field": "gpt_result", "signal": "votes",
                                           "feedback": "ai", "laplace_alpha": 1.0})
    assert rows.select("chosen", "rejected").rows() == [("R2", "R1"), ("S1", "S2")]
    assert rows["p_chosen"].to_list() == pytest.approx([2 / 3, 0.5]) and rows["margin"][0] == pytest.approx(math.log(2))
    assert sorted(rejected["reason"]) == ["field 'gpt_result' is unparseable: 'garbage' is not a number",
                                          "no usable pair with idx 2 in the PandaLM test set"]
    assert stats["records_read"] == 4 and stats["auxiliary_records_read"] == 2


def test_unknown_parser_and_missing_keys_name_the_fix():
    with pytest.raises(ValueError, match="unknown parser 'csv_stars'; registered parsers"):
        ingest_source("x", {"records": []}, {"parser": "csv_stars", "signal": "binary", "feedback": "ai"})
    with pytest.raises(ValueError, match=r"feedback.sources.x.gamma is required"):
        ingest_source("x", {"records": []}, {"parser": "ultrafeedback_pairs", "signal": "score_gap", "feedback": "ai"})


def test_summary_groups_rejections_by_reason_keeping_field_names():
    from prefalign.core.feedback.ingest import _reasons
    import polars as pl

    rejected = pl.DataFrame({"role": ["records"] * 3, "reason": [
        "field 'response2' is empty text", "field 'response1' is empty text", "field 'score' = 11 is outside the source's range [1, 10]"]})
    assert _reasons(rejected) == {"records: field 'response2' is empty text": 1, "records: field 'response1' is empty text": 1,
                                  "records: field 'score' = _ is outside the source's range [_, _]": 1}
