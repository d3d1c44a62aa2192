"""The objective registry: every trained objective, declared once.

The reward, policy and evaluation pipelines are generated from this list, so a registered
objective is always trained and evaluated, and an objective's name appears here and in its
parameters block (``reward.<name>`` / ``policy.<name>``), nowhere else in the code. Adding an
objective = a loss (core/policy/objectives.py or core/reward/losses.py), an entry below, and a
parameters block. Each entry carries its loss factory and its trainer's run function, and
core/objectives/train.train_objective calls ``spec.train(spec, ...)``: the registry dispatches
every objective, in one process or under `accelerate launch` (core/training/launch.py).

Framework-free: no Kedro import.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

from prefalign.core.models.params import ParameterError, dataclass_from_params
from prefalign.core.policy import objectives as policy
from prefalign.core.policy.gpo import make_gpo_loss_fn
from prefalign.core.policy.train_policy import (GPOConfig, run_on_policy_objective, run_pairwise_objective,
                                            run_sft_objective)
from prefalign.core.reward.heads import HEADS
from prefalign.core.reward.objectives import make_reward_loss_fn
from prefalign.core.config_utils import deep_merge
from prefalign.core.reward.train_reward import RewardParams, run_reward_objective, with_head_type

FAMILIES = ("reward", "policy")
# reward models: ``<head>_head`` for every head registered in core/reward/heads.py; policies: causal_lm
MODEL_KINDS = (*(f"{head}_head" for head in HEADS), "causal_lm")
# trainer -> its run function, ``run(spec, args, frames, bundles, tokenizers) -> TrainingRun``: the
# pipeline template (pipelines/*/pipeline.py) and the core entry point of every entry with that trainer
TRAINERS: dict[str, Callable[..., Any]] = {
    "reward": run_reward_objective,
    "supervised": run_sft_objective,
    "pairwise": run_pairwise_objective,
    "on_policy": run_on_policy_objective,
}
DATA = ("pairs", "chosen_responses", "on_policy_samples")
EVALUATION = ("reward_model", "implicit_reward", "reference")


@dataclass(frozen=True)
class ObjectiveSpec:
    """One registered objective.

    Attributes:
        name: the parameters key (``reward.<name>`` / ``policy.<name>``); the Kedro namespace and
            dataset prefix is ``<family>_<name>``.
        family: ``reward`` or ``policy``.
        model_kind: ``<head>_head`` (a reward model with the head registered as ``<head>`` in
            core/reward/heads.py: ``scalar_head``, ``gpm_head``, ...) | ``causal_lm`` (policy).
        trainer: the pipeline template and core entry point: ``reward`` (reward model on pairs),
            ``supervised`` (SFT), ``pairwise`` (a policy on pairs), ``on_policy`` (iterative sampling, GPO).
        config: the dataclass the objective's parameters parse into.
        loss: the loss factory the trainer calls: reward ``make_reward_loss_fn(config)``; pairwise
            ``objective(PairLogprobs, config)``; supervised a ready ``loss_fn``; on_policy ``factory(beta)``.
        train: the run function, ``train(spec, args, frames, bundles, tokenizers) -> TrainingRun``;
            None (the default) = the trainer's (``TRAINERS[trainer]``).
        needs_reference: a reference log-prob table (the SFT policy's) is computed once and used by the loss.
        data: ``pairs`` (soft targets used when the config's ``soft_targets`` is true),
            ``chosen_responses`` (SFT) or ``on_policy_samples`` (GPO).
        evaluation: ``reward_model`` (its pair logits), ``implicit_reward`` (beta (log pi - log
            pi_ref) against the reference policy) or ``reference`` (the reference policy itself).
        defining: the settings that DEFINE this objective (MMPO = the BT / DPO loss with
            ``soft_targets: true``). They take precedence over the family's ``defaults`` block (a
            ``reward.defaults.objective.soft_targets: false`` does not turn MMPO into BT), and the objective's
            own block may not contradict them (``parse`` raises, naming the key and the fix).
        preference_model: on_policy only: the reward namespace whose model scores the samples.
        config_key: policy only: the sub-block of ``policy.<name>`` that parses into ``config``
            (None: the whole block is ``defaults`` deep-merged with ``reward.<name>``).

    Raises:
        ValueError: at import, when a kind (family, model_kind, trainer, data, evaluation) is not an allowed one.

    Source: docs/methods.md s2-s5.
    """

    name: str
    family: str
    model_kind: str
    trainer: str
    config: type | None
    loss: Callable[..., Any]
    needs_reference: bool
    data: str
    evaluation: str
    defining: dict[str, Any] = field(default_factory=dict)
    preference_model: str | None = None
    config_key: str | None = None
    train: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        for attr, allowed in (("family", FAMILIES), ("model_kind", MODEL_KINDS), ("trainer", tuple(TRAINERS)),
                              ("data", DATA), ("evaluation", EVALUATION)):
            if getattr(self, attr) not in allowed:
                raise ValueError(f"objective {self.name!r}: {attr}={getattr(self, attr)!r} is not one of {allowed}")
        if self.train is None:
            object.__setattr__(self, "train", TRAINERS[self.trainer])

    @property
    def namespace(self) -> str:
        """The Kedro namespace and dataset prefix, e.g. ``policy_<name>``."""
        return f"{self.family}_{self.name}"

    @property
    def params_key(self) -> str:
        """Where its parameters live, e.g. ``policy.dpo``."""
        return f"{self.family}.{self.name}"

    @property
    def head_type(self) -> str | None:
        """The reward head's registered name (``scalar``, ``gpm``, ...), None for policies."""
        return self.model_kind.removesuffix("_head") if self.model_kind.endswith("_head") else None

    @property
    def block_key(self) -> str:
        """The block that parses into ``config``, e.g. ``reward.mmpo`` or ``policy.mmpo.objective``."""
        return f"{self.params_key}.{self.config_key}" if self.config_key else self.params_key

    def _contradiction(self, key: str, value: Any) -> ParameterError:
        """The error for an explicit ``key: value`` in this objective's own block that its definition forbids."""
        others = [s.params_key for s in REGISTRY if s is not self and s.family == self.family
                  and s.config is self.config and s.model_kind == self.model_kind
                  and s.defining.get(key, value) == value]
        # a flat config (RewardParams) reads keys its block writes under a sub-block: name the key as written
        path = getattr(self.config, "key_path", lambda k: k)(key)
        fix = f"remove {self.block_key}.{path} (the objective sets it)"
        if others:
            fix += f", or use {' / '.join(others)} for {key}: {value!r}"
        return ParameterError(f"{self.block_key}.{path}={value!r} contradicts the objective: {self.namespace} is "
                              f"defined by {key}: {self.defining[key]!r} (core/objectives/registry.py); {fix}")

    def parse(self, params: dict[str, Any] | None, defaults: dict[str, Any] | None = None) -> Any:
        """The objective's config: ``defaults`` deep-merged with its own block, then its defining settings.

        Precedence, lowest first: the config class's defaults, the family's ``defaults`` block, the
        objective's own block (``params``), the entry's ``defining`` settings. A defining setting
        in ``defaults`` is overridden silently (defaults are for every objective); in the
        objective's own block, a different value is a contradiction and fails.

        Args:
            params: the objective's own block (``reward.<name>`` / ``policy.<name>.<config_key>``).
            defaults: the family's shared block (``reward.defaults``), or None.

        Returns:
            The entry's config (an instance of ``config``; None for SFT, which has none).

        Raises:
            ParameterError: the own block contradicts a defining setting (naming the key and the fix).
            ValueError: an unknown key (named, with the allowed ones) or a bad value, before training.
        """
        own = dict(params or {})
        for key, value in self.defining.items():
            if key in own and own[key] != value:
                raise self._contradiction(key, own[key])
        merged = {**deep_merge(dict(defaults or {}), own), **copy.deepcopy(self.defining)}
        if self.config is None:
            return None
        if self.head_type is not None:
            merged = with_head_type(merged, self.head_type)
        if hasattr(self.config, "from_dict"):
            return self.config.from_dict(merged)
        config = dataclass_from_params(self.config, merged, f"{self.params_key}.{self.config_key or 'objective'}")
        if hasattr(config, "validate"):
            config.validate()
        return config

    def drops_ties(self, config: Any) -> bool:
        """THE tie flag: a hard-label pairwise objective drops p = 0.5 pairs; soft targets keep them.

        Args:
            config: the entry's parsed config (``parse``), or None.

        Returns:
            True when this objective on this config leaves ties out.

        Source: docs/methods.md s1 ("Ties").
        """
        return self.data == "pairs" and not bool(getattr(config, "soft_targets", False))


REGISTRY: tuple[ObjectiveSpec, ...] = (
    # reward models (docs/methods.md s2, s3)
    # BT and DPO are the hard-label objectives: a soft_targets: true in the family's defaults (meant
    # for GPM, say) must not turn them into MMPO under their own names
    ObjectiveSpec("bt", "reward", "scalar_head", "reward", RewardParams, make_reward_loss_fn,
                  needs_reference=False, data="pairs", evaluation="reward_model",
                  defining={"soft_targets": False}),
    ObjectiveSpec("mmpo", "reward", "scalar_head", "reward", RewardParams, make_reward_loss_fn,
                  needs_reference=False, data="pairs", evaluation="reward_model",
                  defining={"soft_targets": True}),
    ObjectiveSpec("gpm", "reward", "gpm_head", "reward", RewardParams, make_reward_loss_fn,
                  needs_reference=False, data="pairs", evaluation="reward_model"),
    # GPM on the cyclic source alone (its parameters pick it): the mixed-data GPM does not learn the
    # cycles at the embedded size (docs/reward.md, "GPM and the cycles"); this entry shows GPM's claim
    # on the product's own path, beside BT.
    ObjectiveSpec("gpm_synthetic", "reward", "gpm_head", "reward", RewardParams, make_reward_loss_fn,
                  needs_reference=False, data="pairs", evaluation="reward_model"),
    # GPM with a prompt-independent gate (docs/methods.md s3.1): does the prompt gate earn its keep?
    ObjectiveSpec("gpm_fixed_gate", "reward", "gpm_fixed_gate_head", "reward", RewardParams, make_reward_loss_fn,
                  needs_reference=False, data="pairs", evaluation="reward_model"),
    # policies (docs/methods.md s4)
    ObjectiveSpec("sft", "policy", "causal_lm", "supervised", None, policy.sft_loss_fn,
                  needs_reference=False, data="chosen_responses", evaluation="reference"),
    ObjectiveSpec("dpo", "policy", "causal_lm", "pairwise", policy.DPOConfig, policy.dpo_objective,
                  needs_reference=True, data="pairs", evaluation="implicit_reward", config_key="objective",
                  defining={"soft_targets": False}),
    ObjectiveSpec("mmpo", "policy", "causal_lm", "pairwise", policy.DPOConfig, policy.dpo_objective,
                  needs_reference=True, data="pairs", evaluation="implicit_reward", config_key="objective",
                  defining={"soft_targets": True}),
    ObjectiveSpec("ipo", "policy", "causal_lm", "pairwise", policy.IPOConfig, policy.ipo_objective,
                  needs_reference=True, data="pairs", evaluation="implicit_reward", config_key="objective"),
    ObjectiveSpec("simpo", "policy", "causal_lm", "pairwise", policy.SimPOConfig, policy.simpo_objective,
                  needs_reference=False, data="pairs", evaluation="implicit_reward", config_key="objective"),
    ObjectiveSpec("orpo", "policy", "causal_lm", "pairwise", policy.ORPOConfig, policy.orpo_objective,
                  needs_reference=False, data="pairs", evaluation="implicit_reward", config_key="objective"),
    ObjectiveSpec("hinge", "policy", "causal_lm", "pairwise", policy.HingeConfig, policy.hinge_objective,
                  needs_reference=True, data="pairs", evaluation="implicit_reward", config_key="objective"),
    ObjectiveSpec("robust_dpo", "policy", "causal_lm", "pairwise", policy.RobustDPOConfig, policy.robust_dpo_objective,
                  needs_reference=True, data="pairs", evaluation="implicit_reward", config_key="objective"),
    ObjectiveSpec("gpo", "policy", "causal_lm", "on_policy", GPOConfig, make_gpo_loss_fn,
                  needs_reference=False, data="on_policy_samples", evaluation="implicit_reward",
                  config_key="objective", preference_model="reward_gpm"),
    ObjectiveSpec("gpo_bt", "policy", "causal_lm", "on_policy", GPOConfig, make_gpo_loss_fn,
                  needs_reference=False, data="on_policy_samples", evaluation="implicit_reward",
                  config_key="objective", preference_model="reward_bt"),
)


def objectives(family: str | None = None, trainer: str | None = None, evaluation: str | None = None) -> list[ObjectiveSpec]:
    """Registered objectives, filtered.

    Args:
        family, trainer, evaluation: keep entries with these values (None: any).

    Returns:
        The matching entries, in registration order (the order of the pipelines and the report).
    """
    return [
        spec for spec in REGISTRY
        if (family is None or spec.family == family)
        and (trainer is None or spec.trainer == trainer)
        and (evaluation is None or spec.evaluation == evaluation)
    ]


def get(namespace: str) -> ObjectiveSpec:
    """The entry of a namespace.

    Args:
        namespace: ``<family>_<name>``.

    Returns:
        Its ObjectiveSpec.

    Raises:
        KeyError: naming the registered namespaces.
    """
    for spec in REGISTRY:
        if spec.namespace == namespace:
            return spec
    raise KeyError(f"no registered objective {namespace!r}; registered: {[s.namespace for s in REGISTRY]}")


def reference_policy() -> ObjectiveSpec:
    """The policy every other policy starts from and is scored against.

    Returns:
        The one entry with ``evaluation == "reference"`` (SFT, docs/methods.md s4.1).

    Raises:
        ValueError: when not exactly one entry is the reference.
    """
    (spec,) = objectives(evaluation="reference")
    return spec
