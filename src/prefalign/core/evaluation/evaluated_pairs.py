"""The tables every model is evaluated on: test pairs, held-out pairs, cyclic triples, the policies'
smaller subset, and the prompts policies answer for the win rate (docs/evaluation.md).

Every cap goes through core/pair_selection.py (seeded by ``evaluation.seed``), so every model of a run
is scored on the same rows.
"""

from __future__ import annotations

import logging

import polars as pl

from prefalign.core.evaluation.config import EvaluationConfig
from prefalign.core.pair_selection import cap_rows, rows_of
from prefalign.core.schema import MESSAGES_DTYPE, with_prompt_messages
from prefalign.core.synthetic import SCALAR_SOURCE

log = logging.getLogger(__name__)


def select_test_pairs(validated_pairs: pl.DataFrame, config: EvaluationConfig) -> pl.DataFrame:
    """The evaluated pairs: rows of ``config.splits`` (and ``config.sources``), at most
    ``config.max_pairs_per_source`` per source (seeded), in pair_id order.

    Args:
        validated_pairs: the validated pairs table (``split``, ``source``, ``pair_id`` columns).
        config: the ``evaluation`` block (splits, sources, max_pairs_per_source, seed).

    Returns:
        The chosen rows, columns unchanged, sorted by ``pair_id``.

    Raises:
        ValueError: no row is left, naming the splits (and sources) asked for and the splits present.
    """
    chosen = rows_of(validated_pairs, config.splits, config.sources)
    if chosen.is_empty():
        raise ValueError(
            f"validated_pairs has no rows in splits {config.splits}"
            f"{'' if config.sources is None else f' of sources {config.sources}'} "
            f"(it has splits {validated_pairs['split'].unique().to_list()}); set evaluation.splits / evaluation.sources"
        )
    return cap_rows(chosen, config.max_pairs_per_source, per="source", seed=config.seed).sort("pair_id")


def select_heldout_pairs(validated_pairs: pl.DataFrame, config: EvaluationConfig) -> pl.DataFrame:
    """The held-out sources' pairs (``config.heldout_splits``, every source), capped per source like
    the test pairs; empty (with a warning) when no source is held out.

    Args:
        validated_pairs: the validated pairs table (``split``, ``source``, ``pair_id`` columns).
        config: the ``evaluation`` block (heldout_splits, max_pairs_per_source, seed).

    Returns:
        The held-out rows, columns unchanged, sorted by ``pair_id`` (no rows when none is held out).
    """
    chosen = rows_of(validated_pairs, config.heldout_splits)
    if chosen.is_empty():
        log.warning("no held-out pairs (splits %s): set feedback.split.heldout_sources to evaluate on sources "
                    "no model was trained on", config.heldout_splits)
        return chosen
    return cap_rows(chosen, config.max_pairs_per_source, per="source", seed=config.seed).sort("pair_id")


def select_test_triples(triples: pl.DataFrame, config: EvaluationConfig) -> pl.DataFrame:
    """The cyclic triples of the evaluated splits, held-out ones included (never trained on either).

    Args:
        triples: the cyclic triples table (a ``split`` column when non-empty).
        config: the ``evaluation`` block (splits, heldout_splits).

    Returns:
        The triples of ``config.splits`` and ``config.heldout_splits``, in table order; ``triples``
        itself when it is empty.
    """
    return rows_of(triples, [*config.splits, *config.heldout_splits]) if triples.height else triples


def policy_subsets(config: EvaluationConfig, *tables: pl.DataFrame) -> list[pl.DataFrame]:
    """The evaluated tables (test, held-out, RewardBench rows, triples) cut to
    ``config.policy_max_pairs_per_source`` rows per source (per subset for RewardBench rows, in all
    for triples), seeded: the pairs every policy and the reference are scored on. RewardBench v2
    rows (a ``response_index`` column) score whole prompts and are kept whole.

    Args:
        config: the ``evaluation`` block (policy_max_pairs_per_source; None keeps every row; seed).
        *tables: the tables to cut, in any number; empty ones pass through.

    Returns:
        One table per input, in the same order, columns unchanged.
    """
    cap = config.policy_max_pairs_per_source
    if cap is None:
        return list(tables)
    out = []
    for table in tables:
        if not table.height or "response_index" in table.columns:
            out.append(table)
            continue
        group = next((c for c in ("source", "subset") if c in table.columns), None)
        out.append(cap_rows(table, cap, per=group, seed=config.seed))
    return out


def generation_prompts(test_pairs: pl.DataFrame, config: EvaluationConfig,
                       heldout_pairs: pl.DataFrame | None = None) -> pl.DataFrame:
    """Prompts no policy trained on that the judge can read, with their turns (``prompt_messages``:
    what the policy reads): the test (or held-out) prompts of ``evaluation.generation.prompt_sources``
    (null: the synthetic lab's scalar source, whose r* is the default judge), sorted, at most
    ``max_prompts``. Empty, with a warning, when none of those sources is evaluated.

    Args:
        test_pairs: the evaluated test pairs (``select_test_pairs``).
        config: the ``evaluation`` block (``generation.prompt_sources``, ``generation.max_prompts``).
        heldout_pairs: the held-out pairs, added to the test pairs when non-empty; None: test pairs only.

    Returns:
        Distinct rows of ``prompt`` (String) and ``prompt_messages`` (``MESSAGES_DTYPE``), sorted by prompt.
    """
    sources = list(config.generation.prompt_sources or [SCALAR_SOURCE])
    pairs = test_pairs if heldout_pairs is None or heldout_pairs.is_empty() else pl.concat(
        [test_pairs, heldout_pairs.select(test_pairs.columns)])
    prompts = (with_prompt_messages(pairs).filter(pl.col("source").is_in(sources))
               .select("prompt", pl.col("prompt_messages").cast(MESSAGES_DTYPE)).unique()
               .sort("prompt").head(config.generation.max_prompts))
    if prompts.is_empty():
        log.warning("no %s prompts among the evaluated pairs: win rates are not measured "
                    "(enable those sources, or set evaluation.generation.prompt_sources)", sources)
    return prompts
