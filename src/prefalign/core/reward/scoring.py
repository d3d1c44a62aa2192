"""Public scoring API for trained reward models (used by evaluation and GPO).

All functions take a ``RewardModel`` and its tokenizer, tokenise with the truncation the model was
trained with (``model.head_config``), batch by length, and return numpy arrays in input order.

- ``response_rewards``: scalar r(x, y) per response (scalar heads).
- ``response_embeddings``: GPM (v [N, 2k], gate [N, k]), one forward per response.
- ``preference_matrix``: K responses to one prompt -> K x K logits of P(i > j) (K forwards).
- ``pair_logits``: logit of P(chosen > rejected) for ANY reward model (scalar r_w - r_l; GPM s / tau).
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
from prefalign.core.reward.heads import RewardOutput, gpm_score
from prefalign.core.reward.model import RewardModel
from prefalign.core.training.batching import (
    TokenizedSequence,
    collate_sequences,
    length_grouped_batches,
    tokenize_pairs,
    tokenize_sequences,
)


@torch.no_grad()
def _forward_all(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str], batch_size: int,
                 seqs: Sequence[TokenizedSequence] | None = None):
    """One forward per (prompt, response) (or per given tokenised sequence);
    returns (rewards [N] | None, v [N,2k] | None, gate [N,k] | None)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; give one prompt per response")
    cfg = model.head_config
    device = next(model.parameters()).device
    if seqs is None:
        seqs = tokenize_sequences(tokenizer, prompts, responses, cfg.max_length, cfg.max_prompt_length)
    was_training = model.training
    model.eval()
    rewards = v = gate = None
    for index in length_grouped_batches([len(s) for s in seqs], batch_size, seed=None):
        out = model(collate_sequences([seqs[i] for i in index], tokenizer.pad_token_id).to(device))
        if out.rewards is not None:
            rewards = np.zeros(len(seqs)) if rewards is None else rewards
            rewards[index] = out.rewards.float().cpu().numpy()
        else:
            if v is None:
                v = np.zeros((len(seqs), out.embeddings.shape[1]))
                gate = np.zeros((len(seqs), out.gate.shape[1]))
            v[index] = out.embeddings.float().cpu().numpy()
            gate[index] = out.gate.float().cpu().numpy()
    model.train(was_training)
    return rewards, v, gate


def response_rewards(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Scalar rewards [N]. GPM models have no scalar reward: use ``pair_logits`` / ``preference_matrix``."""
    if model.is_gpm:
        raise ValueError("response_rewards needs a scalar reward model; this is a GPM: use response_embeddings or preference_matrix")
    return _forward_all(model, tokenizer, prompts, responses, batch_size)[0]


def response_embeddings(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """GPM (v [N, 2k], gate [N, k]); gates of responses to the same prompt are equal."""
    if not model.is_gpm:
        raise ValueError("response_embeddings needs a GPM model; this is a scalar reward model: use response_rewards")
    _, v, gate = _forward_all(model, tokenizer, prompts, responses, batch_size)
    return v, gate


def _score_table(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompt: str, responses: Sequence[str], batch_size: int) -> torch.Tensor:
    """[K, K] float64: r_i - r_j (scalar) or s(y_i > y_j | x) (GPM, before dividing by tau)."""
    rewards, v, gate = _forward_all(model, tokenizer, [prompt] * len(responses), responses, batch_size)
    if rewards is not None:
        r = torch.from_numpy(rewards)
        return r[:, None] - r[None, :]
    k = len(responses)
    vt, gt = torch.from_numpy(v), torch.from_numpy(gate[:1]).expand(k * k, -1)
    return gpm_score(vt.repeat_interleave(k, 0), vt.repeat(k, 1), gt).view(k, k)


def preference_matrix(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompt: str, responses: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """[K, K] logits: entry (i, j) is the logit of P(y_i > y_j | x); antisymmetric, zero diagonal.

    K forward passes, then vector arithmetic (scalar: r_i - r_j; GPM: s(i > j) / tau).
    """
    table = _score_table(model, tokenizer, prompt, responses, batch_size)
    return (table if not model.is_gpm else table / model.head_config.tau).numpy()


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
        return self.model.head_config.tau

    def score(self, prompt: str, responses: Sequence[str]) -> torch.Tensor:
        """s(y_i > y_j | x) for K responses to one prompt (methods.md s3), K forward passes.

        Args:
            prompt: the prompt x (flattened text, as in the pairs table).
            responses: K >= 1 candidate responses y_1..y_K.
        Returns:
            [K, K] float64 tensor S with S[i, j] = s(y_i > y_j | x) = <R v_i, v_j>;
            antisymmetric (S = -S^T, zero diagonal). For a scalar reward model S[i, j] = r_i - r_j.
            P(y_i > y_j | x) = sigmoid(S[i, j] / tau) for GPM (``probabilities``).
        Raises:
            ValueError: no responses.
        """
        if len(responses) == 0:
            raise ValueError("score needs at least one response to the prompt; got an empty list")
        return _score_table(self.model, self.tokenizer, prompt, list(responses), self.batch_size)

    def probabilities(self, prompt: str, responses: Sequence[str]) -> torch.Tensor:
        """[K, K] P(y_i > y_j | x): sigmoid(S / tau) for GPM, sigmoid(r_i - r_j) for scalar models."""
        s = self.score(prompt, responses)
        return torch.sigmoid(s / self.tau if self.model.is_gpm else s)


def load_preference_model(path: str | Path, device: str | torch.device = "cpu", batch_size: int = 32) -> PreferenceModel:
    """Load a saved reward/preference model directory (any layout of docs/reward.md) for scoring.

    Args:
        path: a checkpoint directory written by the reward pipeline (``save_bundle``), e.g. a version
            folder of ``data/06_models/reward_gpm/model``.
        device: where to run the forward passes.
    Returns:
        ``PreferenceModel`` with ``score(prompt, responses) -> [K, K]``.
    Raises:
        FileNotFoundError: the directory is not a prefalign checkpoint; ValueError: it holds a policy.
    """
    bundle = load_bundle(path, device=device)
    if not isinstance(bundle.model, RewardModel):
        raise ValueError(
            f"'{path}' holds a {type(bundle.model).__name__}, not a reward/preference model; "
            "give a directory written by the reward pipeline (e.g. data/06_models/reward_gpm/model/<version>/model)"
        )
    return PreferenceModel(bundle.model, bundle.tokenizer, batch_size)


def pair_logits(model: RewardModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Logit of P(chosen > rejected) per pair [B], for scalar and GPM models alike.

    Pairs are truncated as in training (both sides see the same prompt tokens, methods.md s6); a pair
    whose sides are token-identical after truncation gets logit exactly 0 (no preference; strict
    accuracy counts it wrong, so callers that exclude such pairs find them at 0). No pairs give an
    empty array (the forward pass, and a GPM's gate, are never computed).
    """
    if len(prompts) == len(chosen) == len(rejected) == 0:
        return np.zeros(0, dtype=np.float32)
    n = len(prompts)
    if not (len(chosen) == len(rejected) == n):
        raise ValueError(f"prompts/chosen/rejected lengths differ: {n}, {len(chosen)}, {len(rejected)}")
    cfg = model.head_config
    tokenized = tokenize_pairs(tokenizer, prompts, chosen, rejected, max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length)
    rewards, v, gate = _forward_all(model, tokenizer, list(prompts) * 2, list(chosen) + list(rejected), batch_size,
                                    seqs=tokenized.chosen + tokenized.rejected)
    # the same pair logit as training: RewardOutput.pair_logits (reward gap, or GPM score with the shared gate / tau)
    out = RewardOutput(rewards=None if rewards is None else torch.from_numpy(rewards),
                       embeddings=None if v is None else torch.from_numpy(v),
                       gate=None if gate is None else torch.from_numpy(gate), tau=model.head_config.tau)
    return np.where(tokenized.identical, 0.0, out.pair_logits(n).numpy())
