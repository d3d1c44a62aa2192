"""Reward heads on top of a backbone's hidden states, behind one interface (``RewardHead``).

Every head reads a POOLED hidden state h (``pool``; docs/methods.md s6): the last real token for
decoders, the first token ([CLS]) or the masked mean for encoders; a head that also reads the
prompt (``reads_prompt``) gets the prompt's pooled state h(x).

Adding a head: a ``RewardHead`` subclass here, registered with ``@register_head`` (its ``name`` is
``head_config.head``), and a registry entry of model kind ``<name>_head``
(core/objectives/registry.py) with its parameters block. The model, scoring, GPO and the registry
ask the head (``reads_prompt``, ``scalar_reward``, ``outputs``), never its name.

- ``ScalarHead``: r(x, y) = w . h(x, y), no bias (as transformers' ``score`` layer of
  ``*ForSequenceClassification``, so the head exports exactly; a bias cancels in r_w - r_l anyway).
- ``GPMHead`` (docs/methods.md s3): v = normalise(W h(x, y)) in R^(2k); a gate
  lambda = softmax(G h(x) + g) in R^k from the prompt's pooled state h(x); score
  s(y_i > y_j | x) = <R v_i, v_j> with R block-diagonal of k blocks [[0, -lambda_l], [lambda_l, 0]].
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F


def gather_rows(hidden_states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The hidden state at position ``index[n]`` of each row n.

    Args:
        hidden_states: [N, T, H].
        index: [N] int positions in [0, T).

    Returns:
        [N, H].

    Source: docs/methods.md s6 (pooling).
    """
    return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), index]


POOLINGS = ("last", "first", "mean")


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor, last_index: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per right-padded row (methods.md s6).

    Args:
        hidden_states: [N, T, H].
        attention_mask: [N, T] (1 = real token); read by ``mean`` only.
        last_index: [N] last real position; read by ``last`` only.
        pooling: ``last`` (decoders: the only position that has seen the whole sequence), ``first``
            (encoders: [CLS]) or ``mean`` (encoders: mean over real tokens, padding excluded).

    Returns:
        [N, H].

    Raises:
        ValueError: ``pooling`` not in POOLINGS, naming it.
    """
    if pooling == "last":
        return gather_rows(hidden_states, last_index)
    if pooling == "first":
        return hidden_states[:, 0]
    if pooling == "mean":
        mask = attention_mask.to(hidden_states.dtype).unsqueeze(-1)
        return (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    raise ValueError(f"pooling={pooling!r} is not one of {POOLINGS}")


class RewardHead(torch.nn.Module):
    """The interface of a reward head: what the model, scoring and GPO ask of it.

    Class attributes:
        name: ``head_config.head`` of the models that use it (the registry's model kind is ``<name>_head``).
        scalar_reward: it gives one reward per response (``RewardOutput.rewards``): ``response_rewards``
            works, and the model can export as ``AutoModelForSequenceClassification``.
        reads_prompt: ``outputs`` needs the prompt's pooled state (the model computes it only then).
    """

    name: ClassVar[str]
    scalar_reward: ClassVar[bool] = False
    reads_prompt: ClassVar[bool] = False

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Reject a head config this head cannot be built from, before any training.

        Args:
            config: a core/reward/model.py HeadConfig.

        Raises:
            ValueError: naming the bad key (none by default).
        """

    @classmethod
    def build(cls, hidden_size: int, config: Any, bias: bool = False) -> "RewardHead":
        """The head on a backbone of ``hidden_size`` (H) with the settings of ``config``.

        Args:
            hidden_size: H, the backbone's hidden size.
            config: a HeadConfig (``gpm_k``, ``tau``, ...).
            bias: scalar heads only, to read checkpoints written before the head became bias-free.

        Returns:
            The head module (untrained).

        Raises:
            ValueError: a setting the head cannot use (e.g. ``gpm_k`` < 1).
            NotImplementedError: on the interface itself (each subclass implements it).
        """
        raise NotImplementedError

    def outputs(self, pooled: torch.Tensor, prompt_pooled: torch.Tensor | None, tau: float) -> "RewardOutput":
        """The per-sequence outputs of N sequences.

        Args:
            pooled: [N, H] pooled (prompt, response) states.
            prompt_pooled: [N, H] the prompt's pooled states when ``reads_prompt``, else None.
            tau: the head config's temperature (GPM's scores are divided by it).

        Returns:
            A RewardOutput with this head's fields set.

        Raises:
            NotImplementedError: on the interface itself (each subclass implements it).
        """
        raise NotImplementedError

    def empty_output(self, tau: float) -> "RewardOutput":
        """The outputs of zero sequences.

        Args:
            tau: the head config's temperature.

        Returns:
            A RewardOutput with this head's fields as float64 tensors with N = 0.

        Raises:
            NotImplementedError: on the interface itself (each subclass implements it).
        """
        raise NotImplementedError


HEADS: dict[str, type[RewardHead]] = {}


def register_head(cls: type[RewardHead]) -> type[RewardHead]:
    """Class decorator: make ``cls`` the head of ``head_config.head == cls.name``.

    Args:
        cls: a RewardHead subclass with a ``name``.

    Returns:
        ``cls`` unchanged (now in ``HEADS``).

    Raises:
        ValueError: another head already has that name.
    """
    if cls.name in HEADS:
        raise ValueError(f"reward head {cls.name!r} is registered twice ({HEADS[cls.name].__name__}, {cls.__name__})")
    HEADS[cls.name] = cls
    return cls


@register_head
class ScalarHead(RewardHead):
    """r(x, y) = w . h(x, y): one reward per response (docs/methods.md s2)."""

    name = "scalar"
    scalar_reward = True

    def __init__(self, hidden_size: int, bias: bool = False):
        super().__init__()
        # bias=True only to read checkpoints written before the head became bias-free
        self.score = torch.nn.Linear(hidden_size, 1, bias=bias)

    @classmethod
    def build(cls, hidden_size: int, config: Any, bias: bool = False) -> "ScalarHead":
        """See :meth:`RewardHead.build`.

        Args:
            hidden_size: H.
            config: not read (the scalar head has no settings).
            bias: True only to read checkpoints written before the head became bias-free.

        Returns:
            A ScalarHead, a Linear(H, 1).
        """
        return cls(hidden_size, bias=bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Rewards r = w . h.

        Args:
            pooled: [N, H] pooled states.

        Returns:
            [N] rewards (logit units: r_w - r_l is the logit of P(w > l)).
        """
        return self.score(pooled.to(self.score.weight.dtype)).squeeze(-1)

    def outputs(self, pooled: torch.Tensor, prompt_pooled: torch.Tensor | None, tau: float) -> "RewardOutput":
        """See :meth:`RewardHead.outputs`.

        Args:
            pooled: [N, H] pooled states.
            prompt_pooled: not read.
            tau: the head config's temperature (carried in the output).

        Returns:
            RewardOutput(rewards [N], in logit units).
        """
        return RewardOutput(rewards=self(pooled), tau=tau)

    def empty_output(self, tau: float) -> "RewardOutput":
        """See :meth:`RewardHead.empty_output`.

        Args:
            tau: the head config's temperature.

        Returns:
            RewardOutput(rewards float64 [0]).
        """
        return RewardOutput(rewards=torch.zeros(0, dtype=torch.float64), tau=tau)


def gpm_score(v_i: torch.Tensor, v_j: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """s(y_i > y_j | x) = <R v_i, v_j> = sum_l lambda_l (v_i[2l] v_j[2l+1] - v_i[2l+1] v_j[2l]).

    Args:
        v_i, v_j: [N, 2k] embeddings (unit vectors).
        gate: [N, k] lambda (>= 0, summing to 1).

    Returns:
        [N] scores (logit units times tau); antisymmetric in (i, j) by construction.

    Raises:
        ValueError: shapes that are not [N, 2k], [N, 2k], [N, k].

    Source: docs/methods.md s3.
    """
    if v_i.shape != v_j.shape or v_i.shape[-1] != 2 * gate.shape[-1] or v_i.shape[0] != gate.shape[0]:
        raise ValueError(f"need v_i, v_j [N, 2k] and gate [N, k]; got {tuple(v_i.shape)}, {tuple(v_j.shape)}, {tuple(gate.shape)}")
    a = v_i.view(*v_i.shape[:-1], -1, 2)
    b = v_j.view(*v_j.shape[:-1], -1, 2)
    return (gate * (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0])).sum(-1)


class GPMEmbeddingHead(RewardHead):
    """What every GPM head shares (docs/methods.md s3): k >= 1 and unit embeddings v = normalize(W h)
    [N, 2k]; a subclass adds its gate lambda [N, k] (``outputs``). Not registered itself."""

    reads_prompt = False

    def __init__(self, hidden_size: int, k: int):
        super().__init__()
        if k < 1:
            raise ValueError(f"gpm_k={k} must be >= 1 (the embedding has 2k dimensions)")
        self.k = k
        self.embed = torch.nn.Linear(hidden_size, 2 * k, bias=False)

    @classmethod
    def check_config(cls, config: Any) -> None:
        """See :meth:`RewardHead.check_config`.

        Args:
            config: a HeadConfig.

        Raises:
            ValueError: ``gpm_k`` < 1 (what ``__init__`` would reject after the tokenizer is trained).
        """
        if config.gpm_k < 1:
            raise ValueError(f"head.gpm_k={config.gpm_k} must be >= 1 (the embedding has 2k dimensions)")

    @classmethod
    def build(cls, hidden_size: int, config: Any, bias: bool = False) -> "GPMEmbeddingHead":
        """See :meth:`RewardHead.build`.

        Args:
            hidden_size: H.
            config: a HeadConfig; reads ``gpm_k`` (k).
            bias: not read.

        Returns:
            The head: embedding Linear(H, 2k) and the subclass's gate.

        Raises:
            ValueError: ``gpm_k`` < 1.
        """
        return cls(hidden_size, config.gpm_k)

    def unit_embeddings(self, pooled: torch.Tensor) -> torch.Tensor:
        """v = normalize(W h).

        Args:
            pooled: [N, H] (prompt, response) states.

        Returns:
            [N, 2k] unit vectors, in the head's dtype.
        """
        return F.normalize(self.embed(pooled.to(self.embed.weight.dtype)), dim=-1)

    def empty_output(self, tau: float) -> "RewardOutput":
        """See :meth:`RewardHead.empty_output`.

        Args:
            tau: the head config's temperature.

        Returns:
            RewardOutput(embeddings float64 [0, 2k], gate float64 [0, k], tau).
        """
        return RewardOutput(embeddings=torch.zeros(0, 2 * self.k, dtype=torch.float64),
                            gate=torch.zeros(0, self.k, dtype=torch.float64), tau=tau)


@register_head
class GPMHead(GPMEmbeddingHead):
    """GPM (docs/methods.md s3): unit embeddings v [N, 2k] and a prompt gate lambda = softmax(G h(x) + g) [N, k]."""

    name = "gpm"
    reads_prompt = True

    def __init__(self, hidden_size: int, k: int):
        super().__init__(hidden_size, k)
        self.gate = torch.nn.Linear(hidden_size, k)

    def forward(self, pooled: torch.Tensor, prompt_pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and gate.

        Args:
            pooled: [N, H] (prompt, response) states.
            prompt_pooled: [N, H] the prompts' states.

        Returns:
            (v [N, 2k] unit vectors, gate [N, k] softmax weights).

        Source: docs/methods.md s3.
        """
        gate = torch.softmax(self.gate(prompt_pooled.to(self.embed.weight.dtype)), dim=-1)
        return self.unit_embeddings(pooled), gate

    def outputs(self, pooled: torch.Tensor, prompt_pooled: torch.Tensor | None, tau: float) -> "RewardOutput":
        """See :meth:`RewardHead.outputs`.

        Args:
            pooled: [N, H] (prompt, response) states.
            prompt_pooled: [N, H] the prompts' states (required: the gate reads them).
            tau: the head config's temperature.

        Returns:
            RewardOutput(embeddings [N, 2k] unit vectors, gate [N, k] softmax weights, tau).
        """
        v, gate = self(pooled, prompt_pooled)
        return RewardOutput(embeddings=v, gate=gate, tau=tau)


@register_head
class FixedGateGPMHead(GPMEmbeddingHead):
    """GPM with a prompt-independent gate: lambda = softmax(g), one learned k-vector, instead of
    s3's softmax(G h(x) + g). The same embeddings and score s = <R v_i, v_j>; it reads no prompt
    state, so it packs like a scalar head. docs/methods.md s3.1 (an ablation of the prompt gate)."""

    name = "gpm_fixed_gate"

    def __init__(self, hidden_size: int, k: int):
        super().__init__(hidden_size, k)
        self.gate_logits = torch.nn.Parameter(torch.zeros(k))  # lambda = 1/k per block at the start

    def outputs(self, pooled: torch.Tensor, prompt_pooled: torch.Tensor | None, tau: float) -> "RewardOutput":
        """See :meth:`RewardHead.outputs`.

        Args:
            pooled: [N, H] (prompt, response) states.
            prompt_pooled: not read (the gate does not depend on the prompt).
            tau: the head config's temperature.

        Returns:
            RewardOutput(embeddings [N, 2k] unit vectors, gate [N, k] = softmax(g) on every row, tau).
        """
        v = self.unit_embeddings(pooled)
        gate = torch.softmax(self.gate_logits, dim=-1).expand(v.shape[0], self.k)
        return RewardOutput(embeddings=v, gate=gate, tau=tau)


@dataclass
class RewardOutput:
    """Per-sequence outputs; ``preference_scores`` / ``pair_logits`` assemble the preference tables.

    This is the ONE place a table of preferences between responses to the same prompt is built
    from a reward model's outputs: training's loss, ``pair_logits``, ``preference_matrix``,
    ``PreferenceModel.score`` and GPO's tables all call it (docs/methods.md s3).
    """

    rewards: torch.Tensor | None = None  # [N] (scalar head)
    embeddings: torch.Tensor | None = None  # [N, 2k] (GPM)
    gate: torch.Tensor | None = None  # [N, k] (GPM)
    tau: float = 1.0

    def per_row(self) -> dict[str, torch.Tensor]:
        """The per-sequence tensors that are set.

        Returns:
            {field name: tensor} of ``rewards`` [N], or ``embeddings`` [N, 2k] and ``gate`` [N, k]: the
            N sequences along dimension 0.
        """
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "tau" and getattr(self, f.name) is not None}

    def preference_scores(self, num_groups: int) -> torch.Tensor:
        """Rows ``m * P + p`` are member m of group p (a ``PairBatch``: chosen rows, then rejected rows,
        is K = 2) -> [P, K, K] scores S[p, i, j] = s(y_i > y_j | x_p), before dividing by tau.

        Scalar heads: r_i - r_j. GPM: <R v_i, v_j> with the group's gate lambda = the MEAN of its K rows'
        gates: every member shares the prompt ids (the group is truncated once) and the gate reads the
        prompt alone, so the rows agree up to float rounding, and the mean is symmetric in the members,
        so S = -S^T holds bit for bit.

        Args:
            num_groups: P, the number of prompts (groups); K = N / P members each.

        Returns:
            [P, K, K] scores (for GPM in units of tau times a logit).

        Raises:
            ValueError: when the rows do not split into ``num_groups`` groups of equal size.

        Source: docs/methods.md s3.
        """
        n = (self.rewards if self.rewards is not None else self.embeddings).shape[0]
        if num_groups < 1 or n % num_groups:
            raise ValueError(f"{n} rows do not split into {num_groups} groups of equal size")
        p, k = num_groups, n // num_groups
        if self.rewards is not None:
            r = self.rewards.view(k, p).T  # [P, K]
            return r[:, :, None] - r[:, None, :]
        v = self.embeddings.view(k, p, -1).transpose(0, 1)  # [P, K, 2k]
        gate = self.gate.view(k, p, -1).mean(0)  # [P, k]
        d = v.shape[-1]
        v_i = v[:, :, None, :].expand(p, k, k, d).reshape(-1, d)
        v_j = v[:, None, :, :].expand(p, k, k, d).reshape(-1, d)
        g = gate[:, None, None, :].expand(p, k, k, gate.shape[-1]).reshape(p * k * k, -1)
        return gpm_score(v_i, v_j, g).view(p, k, k)

    def preference_logits(self, num_groups: int) -> torch.Tensor:
        """Logits of P(y_i > y_j | x).

        Args:
            num_groups: P (as ``preference_scores``).

        Returns:
            [P, K, K]: ``preference_scores`` (scalar), or divided by tau (GPM).

        Raises:
            ValueError: as ``preference_scores``.
        """
        s = self.preference_scores(num_groups)
        return s if self.rewards is not None else s / self.tau

    def pair_logits(self, num_pairs: int) -> torch.Tensor:
        """The logit z of P(chosen > rejected) per pair.

        Args:
            num_pairs: B; rows 0..B-1 are the chosen responses, B..2B-1 the rejected ones.

        Returns:
            z [B]: r_w - r_l, or s(w > l) / tau for GPM (``preference_logits`` of groups of two, entry [0, 1]).

        Raises:
            ValueError: the rows do not split into B pairs.

        Source: docs/methods.md s2, s3.
        """
        return self.preference_logits(num_pairs)[:, 0, 1]
