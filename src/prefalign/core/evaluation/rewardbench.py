"""RewardBench-format files, v1 and v2, as rows any pair scorer can score (docs/methods.md s5, s9).

- v1 (arXiv:2403.13787): one row per prompt with prompt, chosen, rejected (strings), subset.
- v2 (arXiv:2506.01937): one row per prompt with prompt, chosen and rejected as LISTS of
  strings (usually one chosen and three rejected; the Ties subset has several correct answers),
  subset, id, and num_correct (defaults to the length of chosen).

A v2 row of n answers becomes n - 1 scored pairs (answer_i vs answer_0, i = 1..n-1): the logit
of P(answer_i > answer_0) is answer_i's score relative to answer_0 (exact for a scalar reward or
an implicit reward, whose logit is r_i - r_0; for GPM it is its own preference against answer_0).
Every v2 rule (best-of-N, Ties margins) depends only on differences of scores, so that common
shift changes nothing.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import polars as pl

from prefalign.core.evaluation.metrics import rewardbench2_scores, rewardbench_scores

V1_COLUMNS = ("prompt", "chosen", "rejected", "subset")
V2_PAIR_COLUMNS = ("prompt", "chosen", "rejected", "subset", "id", "num_correct", "response_index")


def is_v2(table: pl.DataFrame) -> bool:
    """A v2 file holds lists of answers in `chosen`."""
    return "chosen" in table.columns and isinstance(table.schema["chosen"], pl.List)


def _cap(table: pl.DataFrame, cap: int | None, seed: int) -> pl.DataFrame:
    if not cap:
        return table
    return table.filter(pl.int_range(pl.len()).shuffle(seed=seed).over("subset") < int(cap))


def prepare_rows(table: pl.DataFrame, max_rows_per_subset: int | None = None, seed: int = 0) -> pl.DataFrame:
    """Check a v1 or v2 table, cap it per subset when asked (seeded), return scorable pair rows.

    Returns:
        v1: prompt, chosen, rejected, subset. v2: V2_PAIR_COLUMNS, one row per (prompt, answer i >= 1).

    Raises:
        ValueError: a required column is missing (names the columns and the layout).
    """
    missing = [c for c in V1_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"the RewardBench-format file lacks column(s) {missing}; each row needs {list(V1_COLUMNS)} "
            "(v1: strings; v2: chosen and rejected as lists, plus id) "
            "(point --params rewardbench_path=... at a JSONL file with those keys)"
        )
    if not is_v2(table):
        return _cap(table.select(V1_COLUMNS).drop_nulls(), max_rows_per_subset, seed)
    if "id" not in table.columns:
        raise ValueError("a RewardBench 2 file needs an 'id' per row (Ties rows: 'ref:<n>' / 'tied:<n>')")
    if "num_correct" not in table.columns:
        table = table.with_columns(pl.col("chosen").list.len().alias("num_correct"))
    rows = _cap(table.select("prompt", "chosen", "rejected", "subset", pl.col("id").cast(pl.String),
                             pl.col("num_correct").cast(pl.Int64)).drop_nulls(), max_rows_per_subset, seed)
    answers = rows.with_columns(pl.concat_list("chosen", "rejected").alias("answers"))
    pairs = (answers.with_columns(pl.col("answers").list.first().alias("rejected"))
             .with_columns(pl.int_ranges(0, pl.col("answers").list.len()).alias("response_index"))
             .explode("answers", "response_index")
             .filter(pl.col("response_index") > 0)
             .with_columns(pl.col("answers").alias("chosen")))
    return pairs.select(V2_PAIR_COLUMNS)


def v2_score_table(scored: pl.DataFrame) -> pl.DataFrame:
    """Scored v2 pair rows -> one row per prompt: id, subset, num_correct, scores (answer 0 scores 0)."""
    return (scored.group_by("id", "subset", "num_correct", maintain_order=True)
            .agg(pl.col("logit").sort_by("response_index").alias("_rest"))
            .with_columns(pl.concat_list(pl.lit(0.0), "_rest").alias("scores")).drop("_rest"))


def score(scored: pl.DataFrame, sections: Mapping[str, Sequence[str]], subset_weights: Mapping[str, float] | None,
          capped_rows_per_subset: int | None = None) -> dict[str, Any]:
    """Published scores of a scored v1 or v2 table (rows with `logit`), with the cap, if any, recorded."""
    if "response_index" in scored.columns:
        result = rewardbench2_scores(v2_score_table(scored))
    else:
        result = rewardbench_scores(scored, sections, subset_weights)
    result["capped_rows_per_subset"] = int(capped_rows_per_subset) if capped_rows_per_subset else None
    return result
