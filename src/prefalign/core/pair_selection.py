"""Which pairs a step uses: the one rule for splits, sources and caps.

Reward training, policy training and the evaluation all select pairs the same way: the rows of some
splits (and, when named, of some sources), then at most a number of them. Two orders decide which
rows a cap keeps, both the same on every machine and run:

- ``seed=None`` (training sets: ``max_train_pairs``, ``max_val_pairs``): the rows with the smallest
  ``pair_id``. pair_id is a hash of the pair's texts (core/schema.py ``pair_id_of``), so this is a
  pseudo-random subset that does not depend on the table's row order, and a larger cap keeps every
  row a smaller one kept.
- ``seed=<int>`` (evaluation caps, per source or per RewardBench subset): a seeded shuffle of the
  rows in table order (``evaluation.seed``), so another seed draws another subset.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


def rows_of(pairs: pl.DataFrame, splits: str | Sequence[str], sources: Sequence[str] | None = None) -> pl.DataFrame:
    """The rows of ``splits`` (and of ``sources``; None: every source), in table order.

    Args:
        pairs: a pairs table (needs ``split``, and ``source`` when ``sources`` is given).
        splits: one split name or several (core/schema.py ALL_SPLITS).
        sources: source names, or None for all.

    Returns:
        The matching rows; the columns unchanged.
    """
    names = [splits] if isinstance(splits, str) else list(splits)
    frame = pairs.filter(pl.col("split").is_in(names))
    return frame if sources is None else frame.filter(pl.col("source").is_in(list(sources)))


def cap_rows(frame: pl.DataFrame, cap: int | None, *, per: str | None = None, seed: int | None = None) -> pl.DataFrame:
    """At most ``cap`` rows (per value of the column ``per`` when given), chosen by the module's rule.

    Args:
        frame: a table; with ``seed=None`` it needs ``pair_id``.
        cap: rows kept (per group); None keeps every row.
        per: the column whose groups are capped separately (``source``, ``subset``), or None for one cap.
        seed: None keeps the smallest pair_ids; an integer keeps the first ``cap`` rows of a seeded
            shuffle of the rows (of each group) in table order.

    Returns:
        ``frame`` itself when nothing is cut, or when ``seed`` is given the kept rows in table order;
        with ``seed=None`` and rows cut, the kept rows in pair_id order.
    """
    if cap is None:
        return frame
    if seed is None:
        if per is None and frame.height <= cap:
            return frame
        frame, order = frame.sort("pair_id"), pl.int_range(pl.len())
    else:
        order = pl.int_range(pl.len()).shuffle(seed=seed)
    return frame.filter((order.over(per) if per is not None else order) < int(cap))
