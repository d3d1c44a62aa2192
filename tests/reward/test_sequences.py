"""Sequence layouts (methods.md s6): chat templates, encoders' own layout, text is text, pair truncation."""

from collections import Counter

import numpy as np
import pytest

from prefalign.core.models.tokenizer import build_tokenizer
from prefalign.core.training.batching import (
    collate_sequences,
    make_pair_batches,
    sequence_layout,
    tokenize_pairs,
    tokenize_sequence,
    tokenize_sequences,
    truncate_group,
)
from tests.reward.offline_tokenizers import bert_tokenizer, chatml_tokenizer, llama3_tokenizer

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "Tell me about the old mill."},
]
CHOSEN, REJECTED = " The mill by the river is where children play.", "No."


def _apply(tok, messages, **kw):
    return tok.apply_chat_template(messages, tokenize=True, return_dict=False, **kw)


@pytest.fixture(scope="module", params=["chatml", "llama3"])
def chat_tok(request):
    return {"chatml": chatml_tokenizer, "llama3": llama3_tokenizer}[request.param]()


def test_chat_template_ids_equal_apply_chat_template_of_the_whole_conversation(chat_tok):
    assert sequence_layout(chat_tok) == "chat_template"
    pairs = tokenize_pairs(chat_tok, ["flattened text, unused"], [CHOSEN], [REJECTED], max_length=512,
                           max_prompt_length=128, prompt_messages=[CONVERSATION])
    prompt = _apply(chat_tok, CONVERSATION, add_generation_prompt=True)
    for seq, response in ((pairs.chosen[0], CHOSEN), (pairs.rejected[0], REJECTED)):
        whole = _apply(chat_tok, CONVERSATION + [{"role": "assistant", "content": response}])
        assert seq.input_ids == whole
        assert seq.input_ids[: seq.prompt_length] == prompt and seq.prompt_length == len(prompt)
        expected_bos = 1 if chat_tok.bos_token_id is not None else 0  # Llama-3 writes one BOS, ChatML none
        assert seq.input_ids.count(chat_tok.bos_token_id) == expected_bos
        assert seq.input_ids[-3:].count(chat_tok.eos_token_id) == 1  # the end-of-turn closes the assistant turn


def test_rows_without_messages_are_one_user_turn(chat_tok):
    seqs = tokenize_sequences(chat_tok, ["What is two plus two?", "Why?"], [" Four.", " Because."], 256, 64,
                              prompt_messages=[None, [{"role": "user", "content": "Why?"}]])
    for seq, (p, r) in zip(seqs, [("What is two plus two?", " Four."), ("Why?", " Because.")]):
        assert seq.input_ids == _apply(chat_tok, [{"role": "user", "content": p}, {"role": "assistant", "content": r}])


def test_template_whose_generation_prompt_is_not_a_prefix_splits_at_the_common_prefix():
    tok = chatml_tokenizer()
    # The generation prompt opens "<|im_start|>assistant\n" but a finished turn renders as "<|im_start|>bot\n".
    tok.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + ('bot' if m['role'] == 'assistant' else m['role']) + '\n' + m['content'] + '<|im_end|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    pairs = tokenize_pairs(tok, ["Why?"], [" Because."], [" No."], max_length=256, max_prompt_length=32)
    whole = _apply(tok, [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": " Because."}])
    assert pairs.chosen[0].input_ids == whole  # the whole sequence is still the full render
    assert pairs.chosen[0].input_ids[: pairs.chosen[0].prompt_length] == pairs.rejected[0].input_ids[: pairs.rejected[0].prompt_length]
    assert pairs.chosen[0].prompt_length < len(_apply(tok, [{"role": "user", "content": "Why?"}], add_generation_prompt=True))


def test_encoder_uses_its_own_pair_layout_and_collates_without_bos_or_eos():
    tok = bert_tokenizer()
    assert tok.bos_token_id is None and tok.eos_token_id is None and sequence_layout(tok) == "pair"
    seq = tokenize_sequence(tok, "What is two plus two?", "Four is the answer.", 64, 16)
    assert seq.input_ids == tok("What is two plus two?", "Four is the answer.")["input_ids"]  # [CLS] p [SEP] r [SEP]
    assert seq.input_ids[0] == tok.cls_token_id and seq.input_ids[seq.prompt_length - 1] == tok.sep_token_id
    batch = collate_sequences([seq, tokenize_sequence(tok, "Why?", "Blue.", 64, 16)], tok.pad_token_id)  # issue 10: was a NoneType crash
    assert batch.input_ids.shape[0] == 2 and int(batch.last_index[1]) == len(tok("Why?", "Blue.")["input_ids"]) - 1


def test_flatten_layout_is_unchanged_for_the_trained_bpe():
    tok = build_tokenizer({"vocab_size": 300}, ["why is the sky blue great kind answer"] * 20)
    assert sequence_layout(tok) == "flatten"
    seq = tokenize_sequence(tok, "why sky", "great kind", 64, 32)
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert seq.input_ids == [tok.bos_token_id, *ids("why sky"), *ids("great kind"), tok.eos_token_id]


def test_flatten_layout_without_bos_puts_eos_in_front():
    tok = build_tokenizer({"vocab_size": 300}, ["why is the sky blue"] * 20)
    tok.bos_token = None
    seq = tokenize_sequence(tok, "why", "blue", 64, 32)
    assert seq.input_ids[0] == tok.eos_token_id and seq.input_ids[-1] == tok.eos_token_id


# --- Text is text: the whole kind (case 06) -------------------------------------------------------


def _control_counts(tok, ids):
    control = set(tok.all_special_ids) - {tok.unk_token_id}
    return Counter(i for i in ids if i in control)


@pytest.mark.parametrize("make", [chatml_tokenizer, llama3_tokenizer, bert_tokenizer,
                                  lambda: build_tokenizer({"vocab_size": 300}, ["Use the marker to end."] * 30)])
def test_special_token_strings_in_prompts_and_responses_are_text(make):
    tok = make()
    strings = " ".join(
        tok.all_special_tokens + ["<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|begin_of_text|>", "[SEP]", "[CLS]", "<|bos|>", "<|eos|>", "<|pad|>"]
    )
    clean = tokenize_pairs(tok, ["What is it?"], [" Four."], [" Five."], max_length=512, max_prompt_length=256)
    dirty = tokenize_pairs(tok, [strings + " What is it? " + strings], [strings + " Four. " + strings], [" Five." + strings],
                           max_length=4096, max_prompt_length=2048,
                           prompt_messages=[[{"role": "system", "content": strings}, {"role": "user", "content": strings + " What is it?"}]])
    assert dirty.truncation.truncated_prompts == dirty.truncation.truncated_responses == 0
    for c, d in ((clean.chosen[0], dirty.chosen[0]), (clean.rejected[0], dirty.rejected[0])):
        # exactly the control ids the layout writes itself, whatever strings the data carries
        user = [{"role": "user", "content": "x"}]
        template_system = Counter() if sequence_layout(tok) != "chat_template" else (
            _control_counts(tok, _apply(tok, [{"role": "system", "content": "x"}] + user)) - _control_counts(tok, _apply(tok, user))
        )
        assert _control_counts(tok, d.input_ids) == _control_counts(tok, c.input_ids) + template_system


def test_case_06_pretemplated_and_mid_answer_eos_strings_give_one_bos_and_one_eos():
    corpus = ["Question: what is two plus two? Answer: four.", "Use the marker to end."] * 30
    tok = build_tokenizer({"name_or_path": None, "vocab_size": 300}, corpus)
    cases = [
        ("Question: what is two plus two?", " Answer: four."),
        (tok.bos_token + "Question: what is two plus two?", " Answer: four." + tok.eos_token),
        ("Question: what is two plus two?", " Use the " + tok.eos_token + " marker to end."),
    ]
    for prompt, response in cases:
        ids = tokenize_sequences(tok, [prompt], [response], 256, 128)[0].input_ids
        assert ids.count(tok.bos_token_id) == 1 and ids.count(tok.eos_token_id) == 1
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id


# --- Pair-consistent truncation (case 07) -------------------------------------------------------------


def test_truncate_group_hand_computed():
    prompt = list(range(100, 110))  # 10 tokens, the first is the BOS (kept)
    short, long = [1, 2, 3], list(range(20, 28))  # 3 and 8 tokens
    # keep = max(min(10, 4), 12 - 8) = 4 prompt tokens: BOS + the prompt's last 3
    c, r = truncate_group(prompt, [short, long], max_length=12, max_prompt_length=4, keep_first=1)
    assert c.input_ids == [100, 107, 108, 109, 1, 2, 3] and r.input_ids == [100, 107, 108, 109, *long]
    assert c.prompt_length == r.prompt_length == 4
    # a 20-token response: the prompt stays at max_prompt_length (4), the response is cut to 12 - 4 = 8
    c, r = truncate_group(prompt, [short, list(range(20, 40))], max_length=12, max_prompt_length=4, keep_first=1)
    assert r.input_ids == [100, 107, 108, 109, *range(20, 28)] and c.input_ids[:4] == r.input_ids[:4]
    # short responses leave room: the whole prompt is kept
    c, r = truncate_group(prompt, [short, [5]], max_length=13, max_prompt_length=4, keep_first=1)
    assert c.input_ids == prompt + short


def _case07_tokenizer():
    words = "the river runs past an old mill where children play every summer evening".split()
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20
    return build_tokenizer({"name_or_path": None, "vocab_size": 300}, corpus), words


def test_case_07_both_sides_see_the_same_prompt_and_identical_pairs_are_flagged():
    tok, words = _case07_tokenizer()
    long_prompt, shared = " ".join(words * 6), " ".join(words * 5)
    t = tokenize_pairs(tok, [long_prompt, "Describe the mill."], ["Yes.", shared + " It is lovely."],
                       [" ".join(words * 4), shared + " It is ugly."], max_length=64, max_prompt_length=16)
    a_c, a_r = t.chosen[0], t.rejected[0]
    assert a_c.prompt_length == a_r.prompt_length == 16  # was 59 vs 16
    assert a_c.input_ids[:16] == a_r.input_ids[:16]
    assert t.identical.tolist() == [False, True] and t.truncation.identical_after_truncation == 1
    kept = t.without_identical()
    assert len(kept) == 1 and kept.chosen[0].input_ids == a_c.input_ids
    assert [int(i) for b in make_pair_batches(kept, 4, tok.pad_token_id, seed=None) for i in b.pair_index] == [0]


def test_identical_pairs_are_left_out_of_reward_training_and_accuracy(tmp_path):
    import polars as pl

    from prefalign.core.objectives import registry
    from prefalign.core.reward.train_reward import fit_tokenizer, train_reward_model
    from tests.reward.helpers import toy_pairs_frame

    frame = toy_pairs_frame(32, 16)
    tail = " ".join(["great"] * 80)
    # four train pairs and two val pairs that differ only after 80 identical tokens
    same = (pl.col("pair_id").rank("ordinal").over("split") <= pl.when(pl.col("split") == "train").then(4).otherwise(2))
    frame = frame.with_columns(
        pl.when(same).then(pl.lit(tail) + pl.lit(" end a")).otherwise(pl.col("chosen")).alias("chosen"),
        pl.when(same).then(pl.lit(tail) + pl.lit(" end b")).otherwise(pl.col("rejected")).alias("rejected"),
        pl.when(same).then(pl.lit(0.9)).otherwise(pl.col("p_chosen")).alias("p_chosen"),
    )
    params = registry.get("reward_bt").parse({
        "max_length": 48, "max_prompt_length": 16, "batch_size": 8, "eval_batch_size": 16,
        "tokenizer": {"vocab_size": 300},
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128},
        "training": {"max_steps": 2, "checkpoint_every": 0, "eval_every": 0, "progress_bar": False},
    })
    train, val = frame.filter(pl.col("split") == "train"), frame.filter(pl.col("split") == "val")
    out = train_reward_model(train, val, fit_tokenizer(train, params), params, tmp_path, "bt")
    assert out.metrics["excluded_pairs"]["train"] == 4 and out.metrics["excluded_pairs"]["val"] == 2
    assert "identical" in out.metrics["excluded_pairs"]["reason"]
    assert out.metrics["train_pairs"] == train.height - 4 and out.metrics["val_pairs"] == val.height - 2


def test_tokenize_pairs_rejects_mismatched_messages():
    tok = chatml_tokenizer()
    with pytest.raises(ValueError, match="message lists"):
        tokenize_pairs(tok, ["a", "b"], ["c", "d"], ["e", "f"], prompt_messages=[None])
    assert np.array_equal(tokenize_pairs(tok, ["a"], ["c"], ["c"]).identical, [True])
