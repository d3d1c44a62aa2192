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

import numpy as np
import polars as pl

from prefalign.core.evaluation import statistics as st
from prefalign.core.pair_selection import cap_rows
from prefalign.core.evaluation.metrics import (pair_correct, rewardbench2_scores, rewardbench2_statistics,
                                               rewardbench_scores, rewardbench_section_statistics)

V1_COLUMNS = ("prompt", "chosen", "rejected", "subset")
V2_PAIR_COLUMNS = ("prompt", "chosen", "rejected", "subset", "id", "num_correct", "response_index")


def is_v2(table: pl.DataFrame) -> bool:
    """A v2 file holds lists of answers in `chosen`.

    Args:
        table: a RewardBench-format table.

    Returns:
        True when it has a ``chosen`` column of list dtype (RewardBench 2), else False (v1).
    """
    return "chosen" in table.columns and isinstance(table.schema["chosen"], pl.List)


def _cap(table: pl.DataFrame, cap: int | None, seed: int) -> pl.DataFrame:
    if not cap:
        return table
    return cap_rows(table, int(cap), per="subset", seed=seed)


def prepare_rows(table: pl.DataFrame, max_rows_per_subset: int | None = None, seed: int = 0) -> pl.DataFrame:
    """Check a v1 or v2 table, cap it per subset when asked (seeded), return scorable pair rows.

    Returns:
        v1: prompt, chosen, rejected, subset. v2: V2_PAIR_COLUMNS, one row per (prompt, answer i >= 1).

    Raises:
        ValueError: a required column is missing (names the columns and the layout).

    Args:
        table: the loaded file (v1: prompt, chosen, rejected, subset as strings; v2: chosen and rejected
            as lists, plus id and optionally num_correct).
        max_rows_per_subset: keep at most this many rows per subset, drawn at random; None or 0 = all.
        seed: the draw's seed.
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
    """Scored v2 pair rows -> one row per prompt: id, subset, num_correct, prompt, scores (answer 0 scores 0).

    Args:
        scored: ``prepare_rows``' v2 rows with ``logit`` (answer response_index over answer 0).

    Returns:
        One row per (id, subset, num_correct) with prompt and scores (list of float: 0.0 for answer 0,
        then the logits in response_index order).
    """
    return (scored.group_by("id", "subset", "num_correct", maintain_order=True)
            .agg(pl.col("prompt").first(), pl.col("logit").sort_by("response_index").alias("_rest"))
            .with_columns(pl.concat_list(pl.lit(0.0), "_rest").alias("scores")).drop("_rest"))


def score_rows(scored: pl.DataFrame) -> pl.DataFrame:
    """The per-row scores of a scored v1 or v2 table, as kept in the catalog (evaluation_rewardbench_scores).

    Returns:
        v1: row (position in the prepared file), subset, prompt, logit, correct (logit > 0: the chosen
        answer, always listed first, wins). v2: row, id, subset, num_correct, response_index, prompt,
        logit (answer i's score relative to answer 0 of the same prompt).

    Args:
        scored: ``prepare_rows``' rows plus ``logit``.
    """
    numbered = scored.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("row"))
    if "response_index" in scored.columns:
        return numbered.select("row", "id", "subset", "num_correct", "response_index", "prompt", "logit")
    return numbered.select("row", "subset", "prompt", "logit", (pl.col("logit") > 0).alias("correct"))


def score(scored: pl.DataFrame, sections: Mapping[str, Sequence[str]], subset_weights: Mapping[str, float] | None,
          capped_rows_per_subset: int | None = None, bootstrap: st.BootstrapConfig | None = None,
          n_bins: int = 10) -> dict[str, Any]:
    """Published scores of a scored v1 or v2 table (rows with `logit`), their intervals, the cap if any.

    Args:
        scored: prepare_rows' rows plus `logit` (v1: of P(chosen > rejected); v2: of answer i over answer 0).
        sections, subset_weights: the v1 section mapping and fixed subset weights (unused for v2).
        capped_rows_per_subset: the cap the rows were drawn with (recorded; None = every row).
        bootstrap: the prompt bootstrap of every other accuracy (statistics.py); None = the defaults.
        n_bins: calibration bins (10-15).

    Returns:
        rewardbench_scores / rewardbench2_scores' result plus `intervals` ({section or subset:
        {value, low, high, level}} and "overall": percentile intervals over prompts, the rows of a
        prompt moving together) and, for v1, `calibration` (symmetric ECE, Brier, NLL against
        target 1, each with its interval: on a file that lists the correct answer first, the
        symmetric ECE is not 1 - mean p).
    """
    bootstrap = bootstrap or st.BootstrapConfig()
    if "response_index" in scored.columns:
        table = v2_score_table(scored)
        result = rewardbench2_scores(table)
        statistics = rewardbench2_statistics(table)
    else:
        table = scored
        result = rewardbench_scores(scored, sections, subset_weights)
        statistics = rewardbench_section_statistics(scored["subset"].to_list(), pair_correct(scored["logit"]),
                                                    sections, subset_weights)
    weights = st.prompt_resample_weights(table["prompt"].to_list(), bootstrap.resamples, bootstrap.seed)
    result["intervals"] = {name: st.bootstrap_estimate(statistic, weights, bootstrap.level)
                           for name, statistic in statistics.items()}
    if result["format"] == "v1":
        logits = scored["logit"].to_numpy()
        calibration = st.pair_metric_intervals(logits, np.ones(logits.size), weights, n_bins, bootstrap.level)
        result["calibration"] = {"target": "1 (the chosen answer, listed first, is correct)", "rows": int(logits.size),
                                 **{name: calibration[name] for name in ("ece", "brier", "nll")}}
    result["capped_rows_per_subset"] = int(capped_rows_per_subset) if capped_rows_per_subset else None
    return result
