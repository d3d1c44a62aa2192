"""Ties and the objectives that may train on them (docs/methods.md sections 1, 4 and 8).

A tie is a pair with p_chosen == 0.5: its "chosen" side is only the raw order. A soft-target
objective (MMPO: L = -p log sigmoid(z) - (1 - p) log sigmoid(-z)) has zero gradient at z = 0 for
p = 0.5, so it learns "equal" from a tie. A hard-label objective treats chosen as the winner: BT
and DPO have gradient -1/2 (times beta) at z = 0, IPO pulls h to 1/(2 beta), cDPO keeps a constant
p = 1 - eps; trained on a tie they learn a preference nobody expressed. So every objective that is
not listed here as soft leaves ties out. This set is the ONE place that says which objectives use
the per-pair soft target; reward and policy data selection both read it.
"""

from __future__ import annotations

import polars as pl

TIE_P = 0.5
# Objectives (reward or policy loss names) whose loss uses each pair's soft target p_chosen.
SOFT_TARGET_OBJECTIVES: frozenset[str] = frozenset({"mmpo"})


def uses_soft_targets(objective: str) -> bool:
    """True when ``objective``'s loss uses the per-pair soft target (it keeps ties)."""
    return objective in SOFT_TARGET_OBJECTIVES


def is_tie() -> pl.Expr:
    """p_chosen == 0.5 (p below 0.5 never reaches here: the pairs contract keeps p in [0.5, 1])."""
    return pl.col("p_chosen") <= TIE_P


def pairs_for_objective(pairs: pl.DataFrame, objective: str) -> tuple[pl.DataFrame, int]:
    """The pairs an objective trains on: all of them for a soft-target objective, the non-ties
    otherwise.

    Args:
        pairs: a pairs table (needs ``p_chosen``).
        objective: the reward objective or policy loss name (bt, margin, mmpo, dpo, ipo, cdpo, ...).

    Returns:
        (pairs kept, number of ties left out).
    """
    if uses_soft_targets(objective):
        return pairs, 0
    ties = pairs.filter(is_tie()).height
    return pairs.filter(~is_tie()), ties
