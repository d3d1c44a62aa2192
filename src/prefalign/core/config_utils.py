"""Parameter dicts: the deep merge every family uses, and the one shape of an objective's block.

Every trained family (``reward``, ``policy``) has the same shape in conf/: a ``defaults`` block
(``data``, ``tokenizer``, ``model``, ``training``, ``num_processes``, ``accelerate_config``,
``checkpoint_dir``) and one block per registered objective that holds only what differs, with the
objective's own loss settings under ``objective``. An objective's parameters are the ``defaults``
deep-merged with its block (``objective_parameters``).

Framework-free: no Kedro import.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The sub-blocks whose keys the flat reward config (core/reward/train_reward.py RewardParams) reads at
# its top level, and the keys each holds: ``data`` (pair selection, lengths, batch sizes) and
# ``objective`` (the loss settings). A key is written in exactly one place (conf/base/parameters_reward.yml).
REWARD_SUB_BLOCKS: dict[str, tuple[str, ...]] = {
    "data": ("max_length", "max_prompt_length", "batch_size", "eval_batch_size", "max_train_pairs", "max_val_pairs",
             "train_accuracy_pairs", "sources", "source_weights", "token_cache_dir"),
    "objective": ("soft_targets", "margin_offset", "centering"),
}


def sub_block_of(key: str, sub_blocks: Mapping[str, tuple[str, ...]] = REWARD_SUB_BLOCKS) -> str | None:
    """The sub-block a flat config key is written under (``"objective"`` for ``soft_targets``).

    Args:
        key: a top-level key of the flat config.
        sub_blocks: sub-block name -> the keys it holds.

    Returns:
        The sub-block's name, or None for a key written at the block's top level (``model``, ``head``).
    """
    return next((name for name, keys in sub_blocks.items() if key in keys), None)


@dataclass(frozen=True)
class PolicyBlock:
    """The keys of one policy objective's merged parameters (``policy.defaults`` + ``policy.<name>``).

    Each sub-block is parsed by its own config (TokenizerConfig, ModelConfig, PolicyDataConfig,
    TrainConfig, the registry entry's config); this class only says which keys a block may have, so
    a key that nothing reads (a typo, a renamed key such as the former ``work_dir``) fails before the run.
    """

    tokenizer: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    num_processes: int = 1  # > 1: the objective runs under `accelerate launch`
    accelerate_config: str | None = None
    checkpoint_dir: str | None = None  # resumable loop state (required by the policy nodes)
    objective: dict | None = None  # the registry entry's config (core/objectives/registry.py)
    scoring_batch_size: int | None = None  # on-policy objectives only: samples per preference-model call


def deep_merge(base: Mapping[str, Any] | None, override: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``override`` merged in, key by key at every depth.

    A key of ``override`` whose value and ``base``'s value are both mappings is merged the same
    way; any other value of ``override`` (a number, a list, null) replaces ``base``'s.

    Args:
        base: e.g. ``reward.defaults`` (None: empty).
        override: e.g. ``reward.<name>`` (None: empty); wins key by key.

    Returns:
        A new dict; neither argument is changed (values are deep-copied, so changing the result
        never reaches either argument).

    Example:
        ``deep_merge({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}})`` is ``{"a": {"x": 1, "y": 3}}``.
    """
    merged = {key: copy.deepcopy(value) for key, value in (base or {}).items()}
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def to_plain(value: Any) -> Any:
    """``value`` with every mapping turned into a plain dict and every list/tuple into a list, at every depth.

    Args:
        value: a parameter value (a mapping, a sequence, or a scalar).

    Returns:
        A new structure of dicts, lists and the same scalars (e.g. for a library that wants plain types).
    """
    if isinstance(value, Mapping):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    return value


def objective_parameters(family: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One objective's parameters: ``<family>.defaults`` deep-merged with ``<family>.<name>``.

    Args:
        family: the family's parameters block (``reward`` or ``policy``), with ``defaults``.
        name: the objective's key in it (its registry name, e.g. ``dpo``).

    Returns:
        A new dict in the shape of ``defaults`` (``data``, ``model``, ``training``, ...) plus the
        objective's own keys (``objective``, ``head``, ...).
    """
    return deep_merge(family.get("defaults"), family.get(name))


def lift_sub_blocks(block: Mapping[str, Any] | None,
                    sub_blocks: Mapping[str, tuple[str, ...]] = REWARD_SUB_BLOCKS,
                    where: str = "reward") -> dict[str, Any]:
    """``block`` with the keys of its ``sub_blocks`` moved to its top level (for a flat config class).

    The reward config (RewardParams) is one flat dataclass, while the parameters keep the shape every
    family shares (``data:``, ``objective:``); this is the one place that maps one onto the other, and
    it holds the shape: each key is accepted only in the sub-block it belongs to.

    Args:
        block: e.g. ``reward.defaults`` or ``reward.mmpo`` (None: empty).
        sub_blocks: sub-block name -> the keys it holds (each sub-block a mapping or null).
        where: the block's name in error messages.

    Returns:
        A new dict without the sub-block keys, with their contents at the top.

    Raises:
        ValueError: a sub-block that is not a mapping; a sub-block's key written at the top level or
            under another sub-block (naming where it belongs); an unknown key inside a sub-block
            (listing the sub-block's keys).
    """
    flat = {key: value for key, value in (block or {}).items() if key not in sub_blocks}
    for key in flat:
        if (home := sub_block_of(key, sub_blocks)) is not None:
            raise ValueError(f"{where}.{key} belongs under {where}.{home}: write it as {where}.{home}.{key}")
    for name in sub_blocks:
        inner = (block or {}).get(name)
        if inner is None:
            continue
        if not isinstance(inner, Mapping):
            raise ValueError(f"{where}.{name}={inner!r} must be a mapping of keys to values")
        for key, value in inner.items():
            home = sub_block_of(key, sub_blocks)
            if home is None:
                close = difflib.get_close_matches(str(key), sub_blocks[name], n=1)
                hint = f" (did you mean {where}.{name}.{close[0]}?)" if close else ""
                raise ValueError(f"unknown key {where}.{name}.{key}{hint}; the keys of {where}.{name} are "
                                 f"{', '.join(sub_blocks[name])}")
            if home != name:
                raise ValueError(f"{where}.{name}.{key} belongs under {where}.{home}: write it as {where}.{home}.{key}")
            flat[key] = value
    return flat
