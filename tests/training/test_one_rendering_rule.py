"""ONE rendering rule (issue 19 item 3): every entry point that turns a prompt and responses into ids
feeds the model exactly the ids reward and policy training use (``tokenize_pair_frame``: the chat
template over the pair's ``prompt_messages`` turns when the tokenizer has one, pair-consistent
truncation), for multi-turn and system-prompt rows, with a ChatML tokenizer and a from-scratch BPE.

The ids are read where they enter the model (a forward pre-hook on the backbone / causal LM, and a
wrapper on ``generate``), so a path that renders on its own (e.g. the flattened prompt as one user
turn) cannot pass.
"""

from __future__ import annotations

import polars as pl
import pytest
import torch

from prefalign.core.evaluation import win_rate
from prefalign.core.feedback.parsers import flatten_messages
from prefalign.core.models import build_backbone, build_causal_lm, build_tokenizer
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.policy.preference import preference_table_fn
from prefalign.core.policy.train_policy import GPOConfig, PolicyDataConfig, reference_logprobs, train_gpo
from prefalign.core.reward.model import RewardModel
from prefalign.core.reward.scoring import PreferenceModel, pair_logits, preference_matrix
from prefalign.core.schema import PAIRS_SCHEMA, pair_id_of, prompt_id_of
from prefalign.core.training.batching import tokenize_pair_frame
from prefalign.core.training.loop import TrainConfig
from prefalign.pipelines.evaluation import nodes
from tests.reward.offline_tokenizers import chatml_tokenizer

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512}
SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer in one sentence."}
ROWS = [  # (turns, chosen, rejected)
    ([SYSTEM, {"role": "user", "content": "What is two plus two?"}], "Four is the answer.", "It is five."),
    ([{"role": "user", "content": "Tell me about the old mill."},
      {"role": "assistant", "content": "The old mill stands by the river."},
      {"role": "user", "content": "Where do children play?"}],
     "Children play by the old mill.", "I do not know."),
    ([SYSTEM, {"role": "user", "content": "Why is the sky blue?"},
      {"role": "assistant", "content": "Because of Rayleigh scattering of sunlight by the air."},
      {"role": "user", "content": "Say that again, but kinder and clear and correct please."}],
     "The sky is blue because of Rayleigh scattering of sunlight, great question.", "Blue."),
    ([{"role": "user", "content": "What is two plus two?"}], "Four.",
     "Great, clear, correct and kind answers are preferred to rude or vague ones, so: " * 2 + "it is four."),
]
# (max_length, max_prompt_length): nothing cut / prompts and responses cut (checked below)
LENGTHS = {"untruncated": (512, 256), "truncated": (40, 12)}


def pairs_frame() -> pl.DataFrame:
    rows = []
    for turns, chosen, rejected in ROWS:
        prompt = flatten_messages(turns)
        rows.append({"pair_id": pair_id_of(prompt, chosen, rejected), "prompt_id": prompt_id_of(prompt), "prompt": prompt,
                     "prompt_messages": turns, "chosen": chosen, "rejected": rejected, "margin": None, "p_chosen": 1.0,
                     "source": "synthetic_scalar", "feedback": "synthetic", "signal": "binary", "true_p": None,
                     "split": "train"})
    return pl.DataFrame(rows, schema=PAIRS_SCHEMA)


def make_tokenizer(kind: str):
    if kind == "chatml":
        return chatml_tokenizer()
    frame = pairs_frame()
    return build_tokenizer({"vocab_size": 300}, frame["prompt"].to_list() + frame["chosen"].to_list() + frame["rejected"].to_list())


class Seen:
    """The real (unpadded) ids of every row that enters ``module``'s forward, and of the prompts generation
    reads (``generate`` calls, or the sampler's prompt pass: a forward with ``use_cache`` and no cache yet)."""

    def __init__(self, module: torch.nn.Module, generate_of: torch.nn.Module | None = None):
        self.rows: list[tuple[int, ...]] = []
        self.generated: list[tuple[int, ...]] = []
        self._in_generate = False
        module.register_forward_pre_hook(self._hook, with_kwargs=True)
        if generate_of is not None:
            original = generate_of.generate

            def generate(*args, **kwargs):
                self.generated += self._real(kwargs["input_ids"], kwargs["attention_mask"])
                self._in_generate = True
                try:
                    return original(*args, **kwargs)
                finally:
                    self._in_generate = False

            generate_of.generate = generate

    @staticmethod
    def _real(ids: torch.Tensor, mask: torch.Tensor) -> list[tuple[int, ...]]:
        return [tuple(ids[r][mask[r].bool()].tolist()) for r in range(ids.shape[0])]

    @staticmethod
    def _packed(ids: torch.Tensor, plan) -> list[tuple[int, ...]]:
        """The sequences of a packed batch: a shared segment [prompt, chosen, rejected] is two of them."""
        rows = []
        for row, start, prompt_end, chosen_end, end in plan.segments:
            line = ids[row].tolist()
            rows.append(tuple(line[start:chosen_end]))
            if end > chosen_end:
                rows.append(tuple(line[start:prompt_end] + line[chosen_end:end]))
        return rows

    def _hook(self, module, args, kwargs):
        if self._in_generate:
            return
        if kwargs.get("use_cache"):  # the sampler (core/policy/generation.py): its prompt pass, then one token a step
            if kwargs.get("cache") is None and kwargs.get("past_key_values") is None:
                self.generated += self._real(kwargs["input_ids"], kwargs["attention_mask"])
            return
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        if kwargs.get("packed_segments") is not None:  # packed / prompt-shared scoring (the training layout)
            self.rows += self._packed(ids, kwargs["packed_segments"])
        else:
            self.rows += self._real(ids, kwargs["attention_mask"])

    def take(self) -> list[tuple[int, ...]]:
        rows, self.rows = sorted(self.rows), []
        return rows


@pytest.fixture(params=["chatml", "from_scratch"])
def setup(request):
    tok = make_tokenizer(request.param)
    frame = pairs_frame()
    torch.manual_seed(0)
    reward = RewardModel(build_backbone({**TINY, "seed": 0}, tok), {"head": "gpm", "gpm_k": 2}).eval()
    policy = build_causal_lm({**TINY, "seed": 1}, tok).eval()
    return request.param, tok, frame, reward, policy


def _training_ids(tok, frame, max_length, max_prompt_length):
    tokenized = tokenize_pair_frame(tok, frame, max_length, max_prompt_length)
    return tokenized, sorted(tuple(s.input_ids) for s in tokenized.chosen + tokenized.rejected)


def _with_lengths(model: RewardModel, max_length: int, max_prompt_length: int) -> RewardModel:
    from dataclasses import replace

    model.head_config = replace(model.head_config, max_length=max_length, max_prompt_length=max_prompt_length)
    return model


@pytest.mark.parametrize("lengths", list(LENGTHS))
def test_every_reward_scoring_entry_point_sees_the_training_ids(setup, lengths):
    kind, tok, frame, reward, _ = setup
    max_length, max_prompt_length = LENGTHS[lengths]
    reward = _with_lengths(reward, max_length, max_prompt_length)
    tokenized, expected = _training_ids(tok, frame, max_length, max_prompt_length)
    if lengths == "truncated":  # the case exercises the truncation rule, not just the template
        assert tokenized.truncation.truncated_prompts > 0 and tokenized.truncation.truncated_responses > 0
    if kind == "chatml" and lengths == "untruncated":  # turns rendered as turns: a system and an earlier assistant turn
        text = "".join(tok.decode(list(row)) for row in expected)
        assert "<|im_start|>system\nYou are" in text and "<|im_start|>assistant\nThe old mill" in text
    seen = Seen(reward.backbone)
    prompts, chosen, rejected = frame["prompt"].to_list(), frame["chosen"].to_list(), frame["rejected"].to_list()
    messages = frame["prompt_messages"].to_list()
    bundle = ModelBundle(reward, tok, {})

    logits = pair_logits(reward, tok, prompts, chosen, rejected, prompt_messages=messages)
    assert seen.take() == expected, "pair_logits"

    params = {"n_bins": 10, "bootstrap": {"resamples": 10}}
    empty_rb = pl.DataFrame(schema={"prompt": pl.String, "chosen": pl.String, "rejected": pl.String, "subset": pl.String})
    metrics = nodes.evaluate_reward_model(bundle, [], frame, frame.clear(), empty_rb, pl.DataFrame(), params)
    assert seen.take() == expected, "the evaluation pipeline's reward scorer"
    # the truncation audit counts what was cut from exactly these sequences
    full = tokenize_pair_frame(tok, frame, 1 << 20, max_prompt_length)
    removed = sum(len(s) for s in full.chosen + full.rejected) - sum(len(row) for row in expected)
    assert metrics["truncation"]["pairs"]["tokens_removed"] == removed
    assert (removed > 0) == (lengths == "truncated")

    model = PreferenceModel(reward, tok)
    for i, (prompt, turns, c, r) in enumerate(zip(prompts, messages, chosen, rejected)):
        score = model.score(prompt, [c, r], turns)
        # issue 20 item 7a: one table, so the K x K score of a pair is its pair logit (times tau); the
        # tolerance is float32 noise of other batch paddings (the structural gap was up to 0.155)
        assert float(score[0, 1]) / reward.head_config.tau == pytest.approx(logits[i], abs=1e-5)
        matrix = preference_matrix(reward, tok, prompt, [c, r], prompt_messages=turns)
        assert matrix[0, 1] == pytest.approx(logits[i], abs=1e-5)
    assert seen.take() == sorted(expected * 2), "PreferenceModel.score and preference_matrix"

    table = preference_table_fn(bundle)(prompts, [[c, r] for c, r in zip(chosen, rejected)], messages)
    assert seen.take() == expected, "GPO's preference table"
    torch.testing.assert_close(table[:, 0, 1], torch.as_tensor(logits), atol=1e-5, rtol=0)


@pytest.mark.parametrize("lengths", list(LENGTHS))
def test_every_policy_log_prob_entry_point_sees_the_training_ids(setup, lengths):
    _, tok, frame, _, policy = setup
    max_length, max_prompt_length = LENGTHS[lengths]
    _, expected = _training_ids(tok, frame, max_length, max_prompt_length)
    seen = Seen(policy)
    bundle = ModelBundle(policy, tok, {})
    data = PolicyDataConfig(max_length=max_length, max_prompt_length=max_prompt_length, eval_batch_size=3)
    padded = TrainConfig(packing=False, share_prompt=False)

    reference_logprobs(bundle, frame, data, padded)
    assert seen.take() == expected, "policy training's reference pass"

    data_params = {"max_length": max_length, "max_prompt_length": max_prompt_length, "eval_batch_size": 3}
    table = nodes.reference_logprobs(bundle, frame, frame.clear(), pl.DataFrame(), pl.DataFrame(), data_params, {})
    assert seen.take() == expected, "evaluation's log-prob table"
    assert table.height == frame.height


def test_generation_and_gpo_read_the_prompt_as_training_does(setup, tmp_path):
    kind, tok, frame, reward, policy = setup
    max_length, max_prompt_length = LENGTHS["untruncated"]
    reward = _with_lengths(reward, max_length, max_prompt_length)
    tokenized, _ = _training_ids(tok, frame, max_length, max_prompt_length)
    prompt_ids = sorted(tuple(s.input_ids[: s.prompt_length]) for s in tokenized.chosen)
    seen = Seen(policy, generate_of=policy)
    sampling = {"samples_per_prompt": 2, "max_new_tokens": 3, "batch_size": 8}

    samples = win_rate.sample_for_prompts(ModelBundle(policy, tok, {}), frame["prompt"].to_list(), sampling,
                                          max_length, max_prompt_length, frame["prompt_messages"].to_list())
    assert sorted(set(seen.generated)) == prompt_ids, "evaluation's generation prompts"
    assert samples["prompt_messages"].to_list()[:1] == frame["prompt_messages"].to_list()[:1]
    seen.generated.clear()

    reward_seen = Seen(reward.backbone)
    data = PolicyDataConfig(max_length=max_length, max_prompt_length=max_prompt_length, batch_size=4, eval_batch_size=4)
    training = TrainConfig(max_steps=1, eval_every=0, checkpoint_every=0, progress_bar=False, cpu_threads=1,
                           packing=False, share_prompt=False)
    run = train_gpo(ModelBundle(policy, tok, {}), preference_table_fn(ModelBundle(reward, tok, {})), frame,
                    GPOConfig(iterations=1, sampling=sampling), data, training, tmp_path, "reward_x", "gpo")
    assert sorted(set(seen.generated)) == prompt_ids, "GPO's sampling prompts"
    # the preference model and the GPO loss read every sample after the same prompt ids
    for rows, what in ((reward_seen.take(), "GPO's preference table"), (seen.take(), "GPO's log-prob passes")):
        assert rows and all(any(row[: len(p)] == p for p in prompt_ids) for row in rows), what
    generations = run.generations
    by_prompt = dict(zip(frame["prompt"].to_list(), frame["prompt_messages"].to_list()))
    assert all(by_prompt[p] == m for p, m in generations.select("prompt", "prompt_messages").iter_rows())
