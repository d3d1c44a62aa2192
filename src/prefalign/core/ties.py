"""Ties and the objectives that may train on them (docs/methods.md sections 1, 4 and 8).

A tie is a pair with p_chosen == 0.5: its "chosen" side is only the raw order. A soft-target
objective (MMPO: L = -p log sigmoid(z) - (1 - p) log sigmoid(-z)) has zero gradient at z = 0 for
p = 0.5, so it learns "equal" from a tie. A hard-label objective treats chosen as the winner: BT
and DPO have gradient -1/2 (times beta) at z = 0, IPO pulls h to 1/(2 beta), cDPO keeps a constant
p = 1 - eps; trained on a tie they learn a preference nobody expressed. So every objective that is
not trained with soft targets leaves ties out. Which objectives those are is the registry's
``ObjectiveSpec.drops_ties`` (one switch per objective, ``soft_targets``); reward and policy data
selection both call ``leave_out_ties`` with its answer.
"""

from __future__ import annotations

import polars as pl

TIE_P = 0.5


def is_tie() -> pl.Expr:
    """p_chosen == 0.5 (p below 0.5 never reaches here: the pairs contract keeps p in [0.5, 1]).

    Returns:
        A boolean polars expression over the ``p_chosen`` column, true for ties (docs/methods.md s8.3).
    """
    return pl.col("p_chosen") <= TIE_P


def leave_out_ties(pairs: pl.DataFrame, drop: bool) -> tuple[pl.DataFrame, int]:
    """The pairs an objective trains on: the non-ties when ``drop``, all of them otherwise.

    Args:
        pairs: a pairs table (needs ``p_chosen``).
        drop: the objective's registry answer ``spec.drops_ties(config)`` (hard labels drop ties,
            soft targets keep them: core/objectives/registry.py).

    Returns:
        (pairs kept, number of ties left out).
    """
    if not drop:
        return pairs, 0
    ties = pairs.filter(is_tie()).height
    return pairs.filter(~is_tie()), ties
