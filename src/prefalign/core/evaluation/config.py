"""The evaluation parameters (``evaluation:`` in conf/*/parameters_evaluation.yml), parsed and checked once.

The check that runs before a pipeline (pipelines/parameter_checks.py) and every evaluation node
parse the block with ``EvaluationConfig.from_params``, and the value rules are the ones the
metrics themselves apply (``metrics.check_n_bins``, ``BootstrapConfig.from_params``,
``SamplingConfig.from_dict``): a value the nodes would reject after training is rejected before
the first node runs, by the same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prefalign.core.evaluation.metrics import check_n_bins
from prefalign.core.evaluation.statistics import BootstrapConfig
from prefalign.core.models.params import ParameterError, dataclass_from_params
from prefalign.core.schema import ALL_SPLITS, with_source_names



def _count_or_null(value: Any, key: str) -> None:
    if value is not None and value < 1:
        raise ParameterError(f"{key}={value!r} must be an integer >= 1, or null for no cap")


def _seed(value: int, key: str) -> None:
    if value < 0:
        raise ParameterError(f"{key}={value!r} must be an integer >= 0 (a random seed)")


@dataclass(frozen=True)
class RewardBenchConfig:
    """``evaluation.rewardbench``: the cap per subset (null = every row, as published), its seed,
    fixed subset weights (published: math-prm 984) and the subset -> section mapping (docs/methods.md s9.6)."""

    max_rows_per_subset: int | None = None
    seed: int = 0
    subset_weights: dict = field(default_factory=dict)
    sections: dict = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, where: str = "evaluation.rewardbench") -> "RewardBenchConfig":
        """Parse and check the block.

        Raises:
            ParameterError: an unknown key, a wrong type, a cap < 1, a negative seed, a weight that is
                not a number > 0, or a section that is not a list of subset names.

        Args:
            params: the block; None = defaults.
            where: the block's name in error messages.

        Returns:
            The checked configuration.
        """
        config = dataclass_from_params(cls, dict(params or {}), where)
        _count_or_null(config.max_rows_per_subset, f"{where}.max_rows_per_subset")
        _seed(config.seed, f"{where}.seed")
        for subset, weight in config.subset_weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                raise ParameterError(f"{where}.subset_weights.{subset}={weight!r} must be a number > 0 (the "
                                     "subset's weight in its section, e.g. math-prm: 984)")
        for section, subsets in config.sections.items():
            if not isinstance(subsets, list) or not all(isinstance(s, str) for s in subsets):
                raise ParameterError(f"{where}.sections.{section}={subsets!r} must be a list of subset names")
        return config


@dataclass(frozen=True)
class GenerationConfig:
    """``evaluation.generation``: how many held-out prompts the policies answer, and how they sample."""

    max_prompts: int = 24
    sampling: dict = field(default_factory=dict)  # core/policy/generation.py SamplingConfig keys
    # who judges policy vs SFT samples: null = the synthetic lab's hidden reward r* (prompts of
    # synthetic_scalar); or a reward model's namespace (e.g. reward_bt) that none of the policies
    # trained against, on prompts of `prompt_sources` that neither the policies nor the judge trained on
    judge: str | None = None
    prompt_sources: list | None = None  # null: synthetic_scalar

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, where: str = "evaluation.generation") -> "GenerationConfig":
        """Parse and check the block (sampling by SamplingConfig's own rules).

        Raises:
            ParameterError / ValueError: an unknown key, a wrong type, max_prompts < 1, a bad sampling value.

        Args:
            params: the block; None = defaults.
            where: the block's name in error messages.

        Returns:
            The checked configuration.
        """
        from prefalign.core.policy.generation import SamplingConfig

        try:
            params = with_source_names(params, "prompt_sources")  # "a b": one --params value (Kedro passes no lists)
        except ValueError as error:
            raise ParameterError(f"{where}.prompt_sources: {error}") from None
        config = dataclass_from_params(cls, dict(params or {}), where)
        if config.max_prompts < 1:
            raise ParameterError(f"{where}.max_prompts={config.max_prompts!r} must be an integer >= 1")
        # which names are reward models is the registry's business (pipelines.declare_judge checks it)
        if config.judge is not None and (not isinstance(config.judge, str) or not config.judge):
            raise ParameterError(f"{where}.judge={config.judge!r} must be null (the synthetic r*) or a reward model's "
                                 "namespace such as reward_bt")
        if config.prompt_sources is not None and (isinstance(config.prompt_sources, str) or not config.prompt_sources):
            raise ParameterError(f"{where}.prompt_sources={config.prompt_sources!r} must be a non-empty list of sources, or null")
        SamplingConfig.from_dict(config.sampling)
        return config


@dataclass(frozen=True)
class EvaluationConfig:
    """The ``evaluation`` block. Sub-blocks parse into their own configs (``bootstrap``,
    ``rewardbench``, ``generation``); see conf/base/parameters_evaluation.yml for each key's meaning.

    Source: docs/evaluation.md, docs/methods.md s5 and s9.
    """

    splits: list[str] = field(default_factory=lambda: ["test"])
    heldout_splits: list[str] = field(default_factory=lambda: ["heldout"])
    max_pairs_per_source: int | None = None
    sources: list[str] | None = None  # the sources of the in-distribution test pairs (null = every source)
    # policies' implicit rewards cost a vocabulary projection per response token: a smaller seeded cap
    # per source (and per RewardBench subset) for them; null = the same pairs as the reward models
    policy_max_pairs_per_source: int | None = None
    seed: int = 0
    n_bins: int = 10
    bootstrap: Any = field(default_factory=dict)  # -> BootstrapConfig
    model_order: list[str] | None = None
    rewardbench: Any = field(default_factory=dict)  # -> RewardBenchConfig
    generation: Any = field(default_factory=dict)  # -> GenerationConfig
    implicit_reward_beta: float = 0.1

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> "EvaluationConfig":
        """The block parsed and checked; the one rule for every value, before the run and in the nodes.

        Args:
            params: the ``evaluation`` parameters (missing keys take the defaults above).

        Returns:
            The config, with ``bootstrap``, ``rewardbench``, ``generation`` as their config objects.

        Raises:
            ParameterError: naming the key, the value and what is allowed.
        """
        if params is not None and not isinstance(params, Mapping):
            raise ParameterError(f"parameters `evaluation` must be a mapping, got {params!r}")
        raw = dict(params or {})
        for key in ("bootstrap", "rewardbench", "generation"):  # parsed below into their own configs
            if key in raw and raw[key] is not None and not isinstance(raw[key], Mapping):
                raise ParameterError(f"evaluation.{key}={raw[key]!r} must be a mapping of keys to values")
        config = dataclass_from_params(cls, raw, "evaluation")
        for key in ("splits", "heldout_splits"):
            splits = getattr(config, key)
            if any(s not in ALL_SPLITS for s in splits) or (key == "splits" and not splits):
                raise ParameterError(f"evaluation.{key}={splits!r} must be a list of {', '.join(ALL_SPLITS)}"
                                     + (" (non-empty)" if key == "splits" else ""))
        _count_or_null(config.max_pairs_per_source, "evaluation.max_pairs_per_source")
        _count_or_null(config.policy_max_pairs_per_source, "evaluation.policy_max_pairs_per_source")
        if config.sources is not None and (isinstance(config.sources, str) or not config.sources):
            raise ParameterError(f"evaluation.sources={config.sources!r} must be a non-empty list of sources, or null for all")
        _seed(config.seed, "evaluation.seed")
        try:
            check_n_bins(config.n_bins)
        except ValueError as error:
            raise ParameterError(f"evaluation.{error}") from None
        if config.implicit_reward_beta <= 0:
            raise ParameterError(f"evaluation.implicit_reward_beta={config.implicit_reward_beta!r} must be > 0 "
                                 "(the beta of beta * log-ratio, docs/methods.md s5)")
        return replace(config, bootstrap=BootstrapConfig.from_params(config.bootstrap or {}),
                       rewardbench=RewardBenchConfig.from_params(config.rewardbench),
                       generation=GenerationConfig.from_params(config.generation))
