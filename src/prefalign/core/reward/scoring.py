"""Public scoring API for trained reward models (used by evaluation and GPO).

All functions take a ``RewardModel`` and its tokenizer, render and truncate prompts and responses
with the rule the model was trained with (``core.training.batching.tokenize_groups`` at
``model.head_config``'s lengths, the chat template with each row's ``prompt_messages`` turns when the
tokenizer has one), batch by length, and return arrays in input order.

- ``response_rewards``: scalar r(x, y) per response (scalar heads).
- ``response_embeddings``: GPM (v [N, 2k], gate [N, k]), one forward per response.
- ``preference_logits``: P prompts with K responses each -> [P, K, K] logits of P(y_i > y_j | x),
  every group truncated once (as a pair in training) and assembled by ``RewardOutput.preference_scores``.
- ``preference_matrix``: one prompt's [K, K] of the same.
- ``pair_logits``: logit of P(chosen > rejected) for ANY reward model (scalar r_w - r_l; GPM s / tau):
  ``preference_logits`` of groups of two, entry [0, 1].
- ``load_preference_model(path).score(prompt, responses)``: the K x K table s(y_i > y_j | x) from a
  saved checkpoint directory, for users outside the pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from prefalign.core.models.checkpoint import load_bundle
from prefalign.core.reward.heads import RewardOutput
from prefalign.core.reward.model import RewardModel
from prefalign.core.training.packing import pack_pairs, packable
from prefalign.core.training.batching import (
    Messages,
    TokenizedSequence,
    collate_sequences,
    length_grouped_batches,
    tokenize_groups,
)


@torch.no_grad()
def _forward_sequences(model: RewardModel, tokenizer: PreTrainedTokenizerBase, seqs: Sequence[TokenizedSequence],
                       batch_size: int) -> RewardOutput:
    """One no-grad forward per tokenised sequence, in length-grouped batches; the outputs in input
    order as float64 (rewards [N], or GPM embeddings [N, 2k] and gate [N, k])."""
    if not seqs:
        return model.head.empty_output(model.head_config.tau)
    batches = ((index, collate_sequences([seqs[i] for i in index], tokenizer.pad_token_id))
               for index in length_grouped_batches([len(s) for s in seqs], batch_size, seed=None))
    return _gather_outputs(model, len(seqs), batches)


@torch.no_grad()
def _gather_outputs(model: RewardModel, n: int, batches) -> RewardOutput:
    """Run ``model`` (eval mode) on each ``(rows, model input)`` of ``batches`` and put the outputs
    at those rows: each per-sequence field the head sets (rewards [n], or GPM embeddings [n, 2k] and
    gate [n, k]), float64 on CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gathered: dict[str, torch.Tensor] = {}
    for rows, inputs in batches:
        for name, value in model(inputs.to(device)).per_row().items():
            if name not in gathered:
                gathered[name] = torch.zeros((n, *value.shape[1:]), dtype=torch.float64)
            gathered[name][rows] = value.double().cpu()
    model.train(was_training)
    return RewardOutput(**gathered, tau=model.head_config.tau)


def _tokenize(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
              groups: Sequence[Sequence[str]], prompt_messages: Sequence[Messages | None] | None):
    cfg = model.head_config
    return tokenize_groups(tokenizer, prompts, groups, cfg.max_length, cfg.max_prompt_length, prompt_messages)


def _per_response(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str],
                  batch_size: int, prompt_messages: Sequence[Messages | None] | None) -> RewardOutput:
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; give one prompt per response")
    seqs = [g[0] for g in _tokenize(model, tokenizer, prompts, [[r] for r in responses], prompt_messages)]
    return _forward_sequences(model, tokenizer, seqs, batch_size)


def response_rewards(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str],
                     batch_size: int = 32, prompt_messages: Sequence[Messages | None] | None = None) -> np.ndarray:
    """Scalar rewards [N], each (prompt, response) truncated on its own. GPM models have no scalar
    reward: use ``pair_logits`` / ``preference_logits``.

    Args:
        model, tokenizer: a trained reward model with a scalar head, and its tokenizer.
        prompts, responses: [N] texts.
        batch_size: sequences per forward.
        prompt_messages: [N] chat turns per row, or None (one user turn holding each prompt).

    Returns:
        [N] float64 rewards (logit units: r_w - r_l is the logit of P(w > l)).

    Raises:
        ValueError: the model's head has no scalar reward (GPM), or prompts and responses differ in length.

    Source: docs/methods.md s2.
    """
    if not model.has_scalar_reward:
        raise ValueError(f"response_rewards needs a scalar reward model; this one has a {model.head_config.head!r} head "
                         "(a GPM): use response_embeddings or preference_matrix")
    return _per_response(model, tokenizer, prompts, responses, batch_size, prompt_messages).rewards.numpy()


def response_embeddings(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str],
                        batch_size: int = 32, prompt_messages: Sequence[Messages | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """GPM embeddings and gates, each (prompt, response) truncated on its own.

    Args:
        model, tokenizer: a trained GPM-style reward model and its tokenizer.
        prompts, responses: [N] texts.
        batch_size: sequences per forward.
        prompt_messages: [N] chat turns per row, or None (one user turn holding each prompt).

    Returns:
        (v [N, 2k], gate [N, k]) float64 arrays.

    Raises:
        ValueError: a scalar reward model, or prompts and responses differ in length.

    Source: docs/methods.md s3.
    """
    if model.has_scalar_reward:
        raise ValueError("response_embeddings needs a GPM model; this is a scalar reward model: use response_rewards")
    out = _per_response(model, tokenizer, prompts, responses, batch_size, prompt_messages)
    return out.embeddings.numpy(), out.gate.numpy()


def _group_scores(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                  groups: Sequence[Sequence[str]], prompt_messages: Sequence[Messages | None] | None,
                  batch_size: int) -> tuple[RewardOutput, list[list[TokenizedSequence]]]:
    """Forward every group's responses (each group truncated once) with rows ordered member-major
    (row m * P + p), the layout ``RewardOutput.preference_scores`` reads."""
    if len(groups) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(groups)} response groups")
    k = len(groups[0]) if len(groups) else 0
    if k == 0 or any(len(g) != k for g in groups):
        raise ValueError(f"every prompt needs the same number of responses (>= 1); got {sorted({len(g) for g in groups})}")
    tokenized = _tokenize(model, tokenizer, prompts, groups, prompt_messages)
    if k == 2 and packable(model)[1]:  # pairs on a causal decoder: the training layout, one pass over each prompt
        return _forward_packed_pairs(model, tokenizer, tokenized, batch_size), tokenized
    seqs = [tokenized[p][m] for m in range(k) for p in range(len(prompts))]
    return _forward_sequences(model, tokenizer, seqs, batch_size), tokenized


@torch.no_grad()
def _forward_packed_pairs(model: RewardModel, tokenizer: PreTrainedTokenizerBase,
                          pairs: Sequence[Sequence[TokenizedSequence]], batch_size: int) -> RewardOutput:
    """The outputs of P pairs (rows m * P + p, as ``_forward_sequences``) from packed, prompt-shared
    batches: the layout the model trained in (core/training/packing.py), equal to the padded forward
    within float error (tests/training/test_packed_real_weights.py), with the prompt computed once
    per pair, and read through the model's frozen-layer cache when it has one (frozen_cache.py)."""
    n = len(pairs)

    def packed(index):  # chosen side first, as pack_pairs orders the sequences
        rows = torch.as_tensor(list(index) + [n + i for i in index])
        return rows, pack_pairs([pairs[i][0] for i in index], [pairs[i][1] for i in index], share_prompt=True,
                                pad_token_id=tokenizer.pad_token_id)

    return _gather_outputs(model, 2 * n, (packed(index) for index in
                                          length_grouped_batches([len(a) + len(b) for a, b in pairs], batch_size, seed=None)))


def preference_logits(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                      groups: Sequence[Sequence[str]], prompt_messages: Sequence[Messages | None] | None = None,
                      batch_size: int = 32) -> torch.Tensor:
    """[P, K, K] float64 logits of P(y_i > y_j | x_p) for K responses to each of P prompts.

    Each group is rendered and truncated ONCE (``tokenize_groups``: the prompt cut to fit beside the
    longest of its responses, as a pair in training), one forward per response, then
    ``RewardOutput.preference_logits`` (scalar: r_i - r_j; GPM: s(y_i > y_j) / tau with the group's
    mean gate). Antisymmetric with a zero diagonal.

    Args:
        model, tokenizer: a trained reward model (any head) and its tokenizer.
        prompts: [P] flattened prompts.
        groups: [P][K] responses (the same K >= 1 for every prompt).
        prompt_messages: [P] chat turns, or None (one user turn holding each prompt).
        batch_size: sequences per forward.

    Returns:
        [P, K, K] float64 logits.

    Raises:
        ValueError: groups of different sizes, or lengths that do not match.

    Source: docs/methods.md s3, s6.
    """
    out, _ = _group_scores(model, tokenizer, prompts, groups, prompt_messages, batch_size)
    return out.preference_logits(len(prompts))


def preference_matrix(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompt: str, responses: Sequence[str],
                      batch_size: int = 32, prompt_messages: Messages | None = None) -> np.ndarray:
    """One prompt's table of preference logits (``preference_logits`` of one prompt).

    Args:
        model, tokenizer: a trained reward model and its tokenizer.
        prompt: the prompt text.
        responses: K >= 1 response texts.
        batch_size: sequences per forward.
        prompt_messages: the prompt's chat turns, or None (one user turn holding ``prompt``).

    Returns:
        [K, K] float64: entry (i, j) is the logit of P(y_i > y_j | x); antisymmetric, zero diagonal.

    Raises:
        ValueError: no responses.

    Source: docs/methods.md s3.
    """
    messages = None if prompt_messages is None else [prompt_messages]
    return preference_logits(model, tokenizer, [prompt], [list(responses)], messages, batch_size)[0].numpy()


@dataclass
class PreferenceModel:
    """A trained GPM (or scalar reward model) with its tokenizer, ready to score responses.

    Get one with ``load_preference_model(path)``. Tensor layout of the saved checkpoint: docs/reward.md.
    """

    model: RewardModel
    tokenizer: PreTrainedTokenizerBase
    batch_size: int = 32

    @property
    def tau(self) -> float:
        """The head's temperature tau (GPM: P(y_i > y_j) = sigmoid(s / tau); docs/methods.md s3)."""
        return self.model.head_config.tau

    def score(self, prompt: str, responses: Sequence[str], prompt_messages: Messages | None = None) -> torch.Tensor:
        """s(y_i > y_j | x) for K responses to one prompt (methods.md s3), K forward passes.

        Args:
            prompt: the prompt x (flattened text, as in the pairs table).
            responses: K >= 1 candidate responses y_1..y_K.
            prompt_messages: the prompt as chat turns [{role, content}] (the pairs table's
                ``prompt_messages``); with a chat-template tokenizer the model reads these turns, as
                in training. None: one user turn holding ``prompt``.
        Returns:
            [K, K] float64 tensor S with S[i, j] = s(y_i > y_j | x) = <R v_i, v_j>;
            antisymmetric (S = -S^T, zero diagonal). For a scalar reward model S[i, j] = r_i - r_j.
            P(y_i > y_j | x) = sigmoid(S[i, j] / tau) for GPM (``probabilities``). The K responses are
            truncated together (the prompt cut once), so for K = 2, S[0, 1] * (1 / tau for GPM)
            equals ``pair_logits`` of the pair.
        Raises:
            ValueError: no responses.
        """
        if len(responses) == 0:
            raise ValueError("score needs at least one response to the prompt; got an empty list")
        messages = None if prompt_messages is None else [prompt_messages]
        out, _ = _group_scores(self.model, self.tokenizer, [prompt], [list(responses)], messages, self.batch_size)
        return out.preference_scores(1)[0]

    def probabilities(self, prompt: str, responses: Sequence[str], prompt_messages: Messages | None = None) -> torch.Tensor:
        """P(y_i > y_j | x) for K responses to one prompt.

        Args:
            prompt, responses, prompt_messages: as :meth:`score`.

        Returns:
            [K, K] float64: sigmoid(S / tau) for GPM, sigmoid(r_i - r_j) for scalar models.

        Raises:
            ValueError: no responses.
        """
        if len(responses) == 0:
            raise ValueError("probabilities needs at least one response to the prompt; got an empty list")
        messages = None if prompt_messages is None else [prompt_messages]
        out, _ = _group_scores(self.model, self.tokenizer, [prompt], [list(responses)], messages, self.batch_size)
        return torch.sigmoid(out.preference_logits(1)[0])  # the head's logits: S / tau (GPM), S (scalar)


def load_preference_model(path: str | Path, device: str | torch.device = "cpu", batch_size: int = 32) -> PreferenceModel:
    """Load a saved reward/preference model directory (any layout of docs/reward.md) for scoring.

    Args:
        path: a checkpoint directory written by the reward pipeline (``save_bundle``), e.g. a version
            folder of ``data/06_models/reward_gpm/model``.
        device: where to run the forward passes.
        batch_size: sequences per forward when scoring.

    Returns:
        ``PreferenceModel`` with ``score(prompt, responses) -> [K, K]``.

    Raises:
        FileNotFoundError: the directory is not a prefalign checkpoint (``load_bundle``).
        ValueError: it holds a policy, not a reward model.
    """
    bundle = load_bundle(path, device=device)
    if not isinstance(bundle.model, RewardModel):
        raise ValueError(
            f"'{path}' holds a {type(bundle.model).__name__}, not a reward/preference model; "
            "give a directory written by the reward pipeline (e.g. data/06_models/reward_gpm/model/<version>/model)"
        )
    return PreferenceModel(bundle.model, bundle.tokenizer, batch_size)


def pair_logits(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], chosen: Sequence[str],
                rejected: Sequence[str], batch_size: int = 32,
                prompt_messages: Sequence[Messages | None] | None = None) -> np.ndarray:
    """Logit of P(chosen > rejected) per pair [B], for scalar and GPM models alike.

    Pairs are rendered and truncated as in training (``tokenize_groups``: the ``prompt_messages`` turns
    with a chat template; both sides see the same prompt tokens, methods.md s6); the logit is
    ``preference_logits``' entry [0, 1]. A pair whose sides are token-identical after truncation gets
    logit exactly 0 (no preference; strict accuracy counts it wrong, so callers that exclude such
    pairs find them at 0).

    Args:
        model, tokenizer: a trained reward model (any head) and its tokenizer.
        prompts, chosen, rejected: [B] texts.
        batch_size: sequences per forward.
        prompt_messages: [B] chat turns per pair, or None (one user turn holding each prompt).

    Returns:
        [B] logits (float64; float32 zeros when B = 0).

    Raises:
        ValueError: the three lists differ in length.

    Source: docs/methods.md s2, s3, s6.
    """
    if len(prompts) == len(chosen) == len(rejected) == 0:
        return np.zeros(0, dtype=np.float32)
    n = len(prompts)
    if not (len(chosen) == len(rejected) == n):
        raise ValueError(f"prompts/chosen/rejected lengths differ: {n}, {len(chosen)}, {len(rejected)}")
    if n == 0:
        return np.zeros(0)
    out, tokenized = _group_scores(model, tokenizer, prompts, list(zip(chosen, rejected)), prompt_messages, batch_size)
    identical = np.array([c.input_ids == r.input_ids for c, r in tokenized], dtype=bool)
    return np.where(identical, 0.0, out.pair_logits(n).numpy())
