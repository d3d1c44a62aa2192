"""Texts that are the same to a reader compare and hash alike (issue 11, class 5; case
01_whitespace_only_difference): whitespace, Unicode normalization forms, invisible characters."""

from __future__ import annotations

import math

import polars as pl
import pytest

from prefalign.core.feedback.ingest import ingest_source
from prefalign.core.feedback.pairs import assign_split, build_pairs_table, within_group_pairs
from prefalign.core.schema import pair_id_of, prompt_id_of
from prefalign.core.text import canonical_expr, canonical_text, has_visible_content
from tests.feedback.helpers import records

UF = {"parser": "ultrafeedback_pairs", "signal": "score_gap", "feedback": "ai", "gamma": 0.3, "score_range": [1, 10]}
BASE = "It boils at 100 degrees Celsius."
# one variant per member of the kind: each is the same text to a reader as BASE
SAME_TO_A_READER = {
    "trailing spaces and newline": BASE + "  \n",
    "leading whitespace": "\n\t " + BASE,
    "internal whitespace run": "It boils  at\n100 degrees\tCelsius.",
    "non-breaking space": "It boils at\u00a0100 degrees Celsius.",
    "zero-width space": "It boils at 100\u200b degrees Celsius.",
    "byte-order mark": "\ufeff" + BASE,
    "soft hyphen": "It boils at 100 de\u00adgrees Celsius.",
    "word joiner": "It boils\u2060 at 100 degrees Celsius.",
}


@pytest.mark.parametrize("name", sorted(SAME_TO_A_READER))
def test_every_variant_has_the_canonical_form_of_the_original(name):
    assert canonical_text(SAME_TO_A_READER[name]) == BASE


def test_nfc_and_nfd_are_one_text():
    composed, decomposed = "Caf\u00e9 cr\u00e8me", "Cafe\u0301 cre\u0300me"
    assert composed != decomposed and canonical_text(composed) == canonical_text(decomposed) == composed
    assert prompt_id_of(composed) == prompt_id_of(decomposed)


def test_visible_content():
    for invisible in ("", "   \n", "\u200b\u200b", "\ufeff \u00ad", "\u2060\t"):
        assert not has_visible_content(invisible), repr(invisible)
    assert has_visible_content(" a ")
    assert canonical_text("a  b") != canonical_text("ab")  # a space between words still counts


def test_ids_use_the_canonical_form_so_prompts_cannot_straddle_splits():
    prompts = ["What is 2 + 2?", "What is 2 + 2?  ", "What is\u200b 2 + 2?", "\ufeffWhat  is 2 + 2?"]
    assert len({prompt_id_of(p) for p in prompts}) == 1
    assert len({pair_id_of(p, "Four.", "Five.") for p in prompts}) == 1
    assert pair_id_of("p", "Four.", "Five.") != pair_id_of("p", "Five.", "Four.")  # orientation matters
    rows = pl.DataFrame({"prompt": prompts, "chosen": ["Four."] * 4, "rejected": [f"Five {i}." for i in range(4)],
                         "margin": [1.0] * 4, "p_chosen": [0.6] * 4, "source": ["s"] * 4, "feedback": ["ai"] * 4,
                         "signal": ["score_gap"] * 4, "true_p": [None] * 4})
    pairs, _ = build_pairs_table([rows], {"ratios": {"train": 0.34, "val": 0.33, "test": 0.33}, "salt": "x"})
    assert pairs["prompt_id"].n_unique() == 1 and pairs["split"].n_unique() == 1 and pairs.height == 4
    assert pairs["prompt"].to_list() == prompts  # stored texts are kept as the source wrote them


def test_case_01_whitespace_only_difference():
    # the two records of shared/cases/01_whitespace_only_difference, copied by hand
    raw = records(
        {"prompt": "What is the boiling point of water at sea level in Celsius?", "chosen": "It boils at 100 degrees Celsius.",
         "rejected": "It boils at 100 degrees Celsius.  \n", "metadata": {"score_chosen": 9.0, "score_rejected": 4.0}},
        {"prompt": "Give one synonym for 'happy'.", "chosen": "Joyful.", "rejected": "Sad.",
         "metadata": {"score_chosen": 9.0, "score_rejected": 2.0}},
    )
    rows, rejected, stats = ingest_source("ultrafeedback", {"records": raw}, UF)
    [reason] = rejected["reason"].to_list()
    assert reason.startswith("the two responses are the same text to a reader") and "It boils at 100 degrees Celsius." in reason
    assert rejected["position"].to_list() == [0]
    [pair] = rows.iter_rows(named=True)
    assert (pair["chosen"], pair["margin"]) == ("Joyful.", 7.0)
    assert pair["p_chosen"] == pytest.approx(1 / (1 + math.exp(-0.3 * 7)), abs=1e-12)
    assert pair["p_chosen"] == pytest.approx(0.891, abs=5e-4)
    assert stats["records_read"] == 2 and stats["records_rejected"] == 1


@pytest.mark.parametrize("name", sorted(SAME_TO_A_READER))
def test_every_variant_is_rejected_as_no_preference(name):
    raw = records({"prompt": "Q", "chosen": BASE, "rejected": SAME_TO_A_READER[name], "metadata": {"score_chosen": 9, "score_rejected": 4}},
                  {"prompt": "Q2", "chosen": "Yes.", "rejected": "No.", "metadata": {"score_chosen": 9, "score_rejected": 4}})
    rows, rejected, _ = ingest_source("ultrafeedback", {"records": raw}, UF)
    assert rows["chosen"].to_list() == ["Yes."]  # the good record is kept
    assert rejected["reason"][0].startswith("the two responses are the same text to a reader")


@pytest.mark.parametrize("invisible", ["\u200b", "\ufeff\u00ad", " \u2060 \n"])
def test_a_response_with_no_visible_content_is_rejected_with_a_reason(invisible):
    raw = records({"prompt": "Q", "chosen": "A real answer.", "rejected": invisible, "metadata": {"score_chosen": 9, "score_rejected": 4}})
    rows, rejected, _ = ingest_source("ultrafeedback", {"records": raw}, {**UF, "max_rejected_fraction": None})
    assert rows.height == 0 and rejected["reason"].to_list() == ["field 'rejected' is empty text (no visible character)"]


def test_multi_response_sources_count_reader_identical_responses_as_identical():
    scored = pl.DataFrame({"group": ["g"] * 3, "prompt": ["P"] * 3, "response": [BASE, BASE + " \u200b", "Other."],
                           "value": [0.9, 0.2, 0.5], "responder": ["m1", "m2", "m3"], "record": ["r0", "r1", "r2"]})
    comparisons, candidates, identical = within_group_pairs(scored, None)
    assert (candidates, identical, comparisons.height) == (3, 1, 2)


def test_split_assignment_keeps_its_signature():
    ids = pl.Series([prompt_id_of("a"), prompt_id_of("a ")])
    assert assign_split(ids, {"train": 0.5, "val": 0.25, "test": 0.25}, "s").n_unique() == 1


def test_the_vectorised_form_matches_the_python_one():
    texts = list(SAME_TO_A_READER.values()) + [BASE, "Caf\u00e9", "Cafe\u0301", "  a\u00a0\u2003b  ", "\u200b", ""]
    assert pl.DataFrame({"t": texts}).select(canonical_expr("t"))["t"].to_list() == [canonical_text(t) for t in texts]


def _count_canonicalisations(monkeypatch) -> "collections.Counter[str]":
    """Counts each text the canonical form is computed for (core/text.py ``_canonical``)."""
    import collections

    from prefalign.core import text

    counts: collections.Counter[str] = collections.Counter()
    real = text._canonical
    monkeypatch.setattr(text, "_canonical", lambda t: counts.update([t]) or real(t))
    return counts


def test_a_memo_block_canonicalises_each_distinct_text_once_with_the_same_result(monkeypatch):
    from prefalign.core.text import canonical_memo

    texts = [*SAME_TO_A_READER.values(), BASE, "Caf\u00e9", "Cafe\u0301", "   "]
    expected = [canonical_text(t) for t in texts]
    counts = _count_canonicalisations(monkeypatch)
    with canonical_memo() as memo:
        assert [canonical_text(t) for t in texts + texts] == expected + expected
        with canonical_memo() as inner:  # a nested block shares the outer memo
            assert inner is memo and [canonical_text(t) for t in texts] == expected
    assert set(counts.values()) == {1} and set(counts) == set(texts)
    canonical_text(BASE)  # outside any block: computed again, nothing kept
    assert counts[BASE] == 2


def test_ingest_and_the_pairs_table_canonicalise_each_text_once_and_give_the_same_pairs(monkeypatch):
    from contextlib import nullcontext

    from prefalign.core.feedback import conflicts, ingest, pairs

    answers = ["Four.", "Four. ", "Five.", "Fi\u200bve!", "Six.", "Caf\u00e9", "Cafe\u0301 au lait"]
    raw = records(*[
        {"prompt": ["What is 2 + 2?", "What is 2 + 2?  ", "Name a drink."][i % 3], "chosen": answers[i % 7],
         "rejected": answers[(i + 2) % 7], "metadata": {"score_chosen": 9.0, "score_rejected": 3.0 + i % 4}}
        for i in range(24)])
    split = {"ratios": {"train": 0.5, "val": 0.25, "test": 0.25}, "salt": "x"}

    def run():
        rows, rejected, stats = ingest_source("ultrafeedback", {"records": raw}, {**UF, "max_rejected_fraction": None})
        ingest_counts = dict(counts)
        counts.clear()
        table, resolution = build_pairs_table([rows], split)
        return (rows, rejected, stats, table, resolution), ingest_counts, dict(counts)

    counts = _count_canonicalisations(monkeypatch)
    once, ingest_counts, table_counts = run()
    assert once[3].height > 3 and set(ingest_counts.values()) == {1} and set(table_counts.values()) == {1}
    for module in (ingest, pairs, conflicts):  # no memo at all: every step canonicalises again
        monkeypatch.setattr(module, "canonical_memo", nullcontext)
    counts.clear()
    again, ingest_again, table_again = run()
    assert max(ingest_again.values()) > 1 and max(table_again.values()) >= 3  # the repeated work that is gone
    assert once[0].equals(again[0]) and once[1].equals(again[1]) and once[2] == again[2]
    assert once[3].equals(again[3]) and once[4] == again[4]  # same pair_id, prompt_id, split, conflicts


def test_orienting_pairs_canonicalises_each_response_once(monkeypatch):
    from prefalign.core.feedback.pairs import to_pair_rows

    responses = [BASE, BASE + " \u200b", "Other.", "Caf\u00e9.", "Yet another."]
    scored = pl.DataFrame({"group": ["g"] * 5, "prompt": ["P"] * 5, "response": responses, "value": [0.9, 0.2, 0.5, 0.4, 0.7],
                           "responder": [f"m{i}" for i in range(5)], "record": [f"r{i}" for i in range(5)]})
    comparisons, _, _ = within_group_pairs(scored, None)
    comparisons = pl.concat([comparisons, comparisons.with_columns(response_b=pl.lit(BASE + "  "))])
    counts = _count_canonicalisations(monkeypatch)
    rows, dropped = to_pair_rows(comparisons, "s", {"signal": "judge_prob", "feedback": "ai", "eps": 1e-4})
    # the copy's pairs whose response a is BASE or BASE + zero-width space: 3 + 3 (BASE vs its variant was dropped before)
    assert comparisons.height == 18 and dropped["identical_dropped"] == 6 and rows.height == 12
    assert set(counts.values()) == {1}  # each response sits in several pairs but is canonicalised once
