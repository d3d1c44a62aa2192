"""One check per pipeline of all its parameters, run before the first node (see hooks.py).

Each check builds the same config dataclasses the nodes build (``from_dict``: unknown keys, types,
allowed values), so a mistake fails in seconds instead of after a model was trained and saved.
Each check imports what it needs when it runs: a `--pipelines policy` run does not pay for
importing Great Expectations. The checks read the whole parameter tree, not one node's slice, so a pipeline run with
``--namespaces`` still has every block of its pipeline checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import polars as pl

from prefalign.core.models.params import ParameterError


@contextmanager
def _under(where: str) -> Iterator[None]:
    """Re-raise a config error of one block as a ParameterError that says which block it was."""
    try:
        yield
    except (ValueError, TypeError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        if message.startswith(where.split(" ")[0]):  # the message names its key already
            raise ParameterError(message) from error
        raise ParameterError(f"{where}: {message}") from error


def _block(params: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = params.get(key)
    if not isinstance(value, Mapping):
        raise ParameterError(f"parameters `{key}` must be a mapping (conf/base/parameters_{key}.yml), got {value!r}")
    return value


def check_feedback(params: Mapping[str, Any]) -> None:
    """Every enabled source's block (signal, feedback kind, gamma, eps, caps), the split, the
    held-out sources, the conflict rules, the per-file rejected-records limit and the engine
    (``feedback.engine``, ``feedback.streaming``)."""
    from prefalign.core.feedback.conflicts import ConflictRule
    from prefalign.core.feedback.ingest import check_rejected_fraction, check_source_params
    from prefalign.core.feedback.pairs import assign_split, check_heldout_sources
    from prefalign.core.feedback.streaming import check_engine, streaming_settings
    from prefalign.core.synthetic import SyntheticConfig

    feedback = _block(params, "feedback")
    with _under("feedback"):  # the engine, and the streaming engine's chunk size and parts folder
        if check_engine(feedback.get("engine")) == "streaming" or feedback.get("streaming") is not None:
            streaming_settings(feedback.get("streaming"))
    split = feedback.get("split") or {}
    sources = feedback.get("sources") or {}
    with _under("feedback.split"):  # the node's own rule on an empty column: ratios >= 0 summing to 1
        assign_split(pl.Series("prompt_id", [], dtype=pl.String), dict(split.get("ratios") or {}), str(split.get("salt", "")))
        check_heldout_sources(split.get("heldout_sources"), list(sources))
    with _under("feedback.conflicts"):
        ConflictRule.from_params(feedback.get("conflicts"), sources)
    limit = feedback.get("max_rejected_fraction_per_file")
    if limit is not None:
        with _under("feedback.max_rejected_fraction_per_file"):  # the node's own rule, on no records
            check_rejected_fraction("", {}, [], limit)
    for source, body in sources.items():
        if body is None or not body.get("enabled", True):
            continue
        with _under(f"feedback.sources.{source}"):
            if "parser" in body:
                check_source_params(source, dict(body))
            else:  # a generated source (core/synthetic): its keys are SyntheticConfig's
                SyntheticConfig.from_params(dict(body))


def check_user_tables(params: Mapping[str, Any], folder: str) -> list[str]:
    """The ``preference_table`` sources against the user-tables folder (core/feedback/tables.py).

    Returns:
        The files under ``folder`` that no source reads (for a warning).

    Raises:
        ParameterError: an enabled table block whose ``table`` names nothing there, naming the key.
    """
    from prefalign.core.feedback.tables import check_user_tables as check

    try:
        return check((params.get("feedback") or {}).get("sources"), folder)
    except ValueError as error:
        raise ParameterError(str(error)) from None


def check_validation(params: Mapping[str, Any]) -> None:
    """The Great Expectations suite, the quarantine thresholds, the row bounds and the batch size of
    a lazy table's validation."""
    from prefalign.core.validation.config import parse_validation_config

    with _under("validation"):  # the allowed sources come from feedback.sources (never a hand-kept copy)
        sources = (params.get("feedback") or {}).get("sources") or {}
        validation = _block(params, "validation")
        parse_validation_config(validation, dict(sources))
        batch_rows = validation.get("batch_rows", 100_000)  # rows per GX run of a lazy (streaming) table
        if not isinstance(batch_rows, int) or isinstance(batch_rows, bool) or batch_rows < 1:
            raise ValueError(f"validation.batch_rows={batch_rows!r} must be an integer >= 1")


def _registered_blocks(family: str, block: Mapping[str, Any]) -> list:
    """The registry's entries of ``family``; a parameters block no entry owns is an error (a typo)."""
    from prefalign.core.objectives.registry import objectives

    specs = objectives(family)
    known = {spec.name for spec in specs} | {"defaults"}
    for name in block:
        if name not in known:
            raise ParameterError(f"{family}.{name} is not a registered objective; registered: "
                                 f"{', '.join(sorted(known - {'defaults'}))} (core/objectives/registry.py)")
    return specs


def check_reward(params: Mapping[str, Any]) -> None:
    """Every registered reward objective's block merged over ``reward.defaults``, as the nodes merge them."""
    from prefalign.core.config_utils import lift_sub_blocks
    from prefalign.core.training.launch import check_accelerate_config, check_num_processes

    reward = _block(params, "reward")
    for spec in _registered_blocks("reward", reward):
        with _under(f"{spec.params_key} (merged over reward.defaults)"):
            parsed = spec.parse(lift_sub_blocks(reward.get(spec.name), where=spec.params_key),
                                defaults=lift_sub_blocks(reward.get("defaults"), where="reward.defaults"))
            check_num_processes(parsed.num_processes, parsed.batch_size, "reward.defaults.num_processes")
            check_accelerate_config(parsed.accelerate_config, "reward.defaults.accelerate_config")


def check_policy(params: Mapping[str, Any]) -> None:
    """Every registered policy objective's block merged over ``policy.defaults``, as the nodes merge them:
    tokenizer, model, data, training, processes, checkpoint_dir and the objective's own settings."""
    from prefalign.core.config_utils import PolicyBlock, objective_parameters
    from prefalign.core.models.backbone import ModelConfig
    from prefalign.core.models.params import dataclass_from_params
    from prefalign.core.models.tokenizer import TokenizerConfig
    from prefalign.core.policy.train_policy import PolicyDataConfig, checkpoint_dir_of, scoring_batch_size_of
    from prefalign.core.training.launch import check_accelerate_config, check_num_processes
    from prefalign.core.training.loop import TrainConfig

    policy = _block(params, "policy")
    for spec in _registered_blocks("policy", policy):
        merged = objective_parameters(policy, spec.name)
        with _under(f"{spec.params_key} (merged over policy.defaults)"):
            dataclass_from_params(PolicyBlock, merged, spec.params_key)
            if spec.trainer != "on_policy" and "scoring_batch_size" in merged:
                raise ParameterError(f"{spec.params_key}.scoring_batch_size: only on-policy objectives score samples; remove it")
            TokenizerConfig.from_dict(merged.get("tokenizer"))
            ModelConfig.from_dict(merged.get("model"))
            data = PolicyDataConfig.from_dict(merged.get("data"))
            check_num_processes(merged.get("num_processes", 1), data.batch_size, "policy.defaults.num_processes")
            check_accelerate_config(merged.get("accelerate_config"), "policy.defaults.accelerate_config")
            checkpoint_dir_of(merged, spec.params_key)
            if spec.trainer == "on_policy":
                scoring_batch_size_of(merged, spec.params_key)
            TrainConfig.from_dict(merged.get("training"))
            if spec.config_key:
                spec.parse(merged.get(spec.config_key))


def check_evaluation(params: Mapping[str, Any]) -> None:
    """The whole ``evaluation`` block, by the parser every evaluation node uses (core/evaluation/config.py):
    splits, caps, seeds, calibration bins, bootstrap, RewardBench mapping, generation sampling, report paths."""
    from prefalign.core.evaluation.config import EvaluationConfig

    with _under("evaluation"):
        EvaluationConfig.from_params(_block(params, "evaluation"))


PIPELINE_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "feedback": check_feedback,
    "validation": check_validation,
    "reward": check_reward,
    "policy": check_policy,
    "evaluation": check_evaluation,
}


# registered pipelines that read another pipeline's parameters (pipeline_registry.py)
SAME_PARAMETERS = {"evaluation_reward": "evaluation"}


def check_pipeline_parameters(params: Mapping[str, Any], pipeline_names: list[str] | None) -> list[str]:
    """Run the check of every selected pipeline (all of them for ``__default__`` or None).

    Args:
        params: the whole parameter tree, runtime ``--params`` already applied.
        pipeline_names: the pipelines of this run, as ``kedro run --pipelines`` gives them.

    Returns:
        The names of the pipelines whose parameters were checked.

    Raises:
        ParameterError: the first bad key, naming its full path, the value and what is allowed.
    """
    names = list(pipeline_names or ["__default__"])
    if "__default__" in names:
        names = list(PIPELINE_CHECKS)
    names = [SAME_PARAMETERS.get(name, name) for name in names]
    checked = [name for i, name in enumerate(names) if name in PIPELINE_CHECKS and name not in names[:i]]
    for name in checked:
        PIPELINE_CHECKS[name](params)
    return checked
