"""Exported reward models work as they are (issue 19 item 5): the saved tokenizer carries the chat template
of the training layout, so plain ``tokenizer.apply_chat_template(conversation)`` and
``AutoModelForSequenceClassification`` give prefalign's ids and rewards, for a chat-template model
(its own template) and a from-scratch one (the ``[bos] prompt response [eos]`` template)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from prefalign.core.feedback.parsers import flatten_messages
from prefalign.core.models import build_backbone, build_tokenizer
from prefalign.core.models.checkpoint import ModelBundle, load_bundle, save_bundle
from prefalign.core.reward.model import RewardModel
from prefalign.core.reward.scoring import response_rewards
from prefalign.core.training.batching import FLATTEN_TEMPLATE, sequence_layout, tokenize_sequences
from tests.reward.offline_tokenizers import chatml_tokenizer

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = [  # (prompt turns, response)
    ([SYSTEM, {"role": "user", "content": "What is two plus two?"}], "Four is the answer."),
    ([{"role": "user", "content": "Tell me about the old mill."}, {"role": "assistant", "content": "It is by the river."},
      {"role": "user", "content": "Who plays there?"}], "Children play by the old mill."),
    ([{"role": "user", "content": "Complete the word: sun"}], "shine"),  # the two texts join into one word
    ([{"role": "user", "content": "Why is the sky blue?"}], "Rayleigh scattering of sunlight."),
]


def _tokenizer(kind: str):
    if kind == "chatml":
        return chatml_tokenizer()
    texts = [flatten_messages(t) + " " + r for t, r in CONVERSATIONS] + ["sunshine and sunshine, more sunshine"] * 20
    return build_tokenizer({"vocab_size": 320}, texts)


@pytest.mark.parametrize("kind", ["chatml", "from_scratch"])
@pytest.mark.parametrize("how", ["checkpoint", "export"])
def test_plain_transformers_with_the_saved_chat_template_gives_prefalign_rewards(tmp_path, kind, how):
    tok = _tokenizer(kind)
    torch.manual_seed(0)
    model = RewardModel(build_backbone({**TINY, "seed": 3}, tok), {"head": "scalar", "max_length": 512,
                                                                   "max_prompt_length": 256}).eval()
    if how == "checkpoint":  # what the reward pipeline writes (data/06_models/reward_bt/model/<version>/model)
        directory = save_bundle(ModelBundle(model, tok, {}), tmp_path / "bt")
    else:
        directory = model.export_sequence_classifier(tmp_path / "export", tok)
    prompts = [flatten_messages(turns) for turns, _ in CONVERSATIONS]  # the pairs table's `prompt`
    turns, responses = [t for t, _ in CONVERSATIONS], [r for _, r in CONVERSATIONS]
    ours = response_rewards(model, tok, prompts, responses, prompt_messages=turns)
    our_ids = [s.input_ids for s in tokenize_sequences(tok, prompts, responses, 512, 256, prompt_messages=turns)]
    if kind == "from_scratch":  # the joined row really differs from encoding prompt and response apart
        apart = tok("Complete the word: sun", add_special_tokens=False)["input_ids"] + tok("shine", add_special_tokens=False)["input_ids"]
        assert our_ids[2][1:-1] != apart

    # the five lines a user writes (README "Using a trained reward model")
    hf_tok = AutoTokenizer.from_pretrained(directory)
    hf_model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    for i, (prompt_turns, response) in enumerate(CONVERSATIONS):
        ids = hf_tok.apply_chat_template(prompt_turns + [{"role": "assistant", "content": response}], return_tensors="pt",
                                         return_dict=True)["input_ids"]
        with torch.no_grad():
            reward = hf_model(ids).logits[0, 0].item()
        assert ids[0].tolist() == our_ids[i]
        assert reward == pytest.approx(float(ours[i]), abs=1e-5)
    assert (hf_tok.chat_template == FLATTEN_TEMPLATE) == (kind == "from_scratch")
    # reloaded by prefalign, the tokenizer keeps its layout (the template file is the layout, not a new one)
    if how == "checkpoint":
        again = load_bundle(directory)
        assert sequence_layout(again.tokenizer) == sequence_layout(tok) == ("chat_template" if kind == "chatml" else "flatten")
        assert [s.input_ids for s in tokenize_sequences(again.tokenizer, prompts, responses, 512, 256, prompt_messages=turns)] == our_ids
