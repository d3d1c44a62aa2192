"""One source end to end (parse -> pairs -> pair rows), and the per-source summary.

Count reconciliation, per source (checked by tests/feedback/test_reconciliation.py):

* records_read = records_used + records_rejected (primary records: the judgments);
* pairwise sources: candidate_pairs = comparisons = records_used (one pair per record);
  multi-response sources: candidate_pairs = sum over prompts of k(k-1)/2 (the documented
  expansion), and comparisons = candidate_pairs - capped_dropped - (pairs of identical texts);
* pair_rows = candidate_pairs - capped_dropped - identical_dropped - ties_dropped;
* pairs = pair_rows - conflict_rows_removed - duplicates_dropped (contradicting judgments resolved
  by feedback.conflicts; then pair_id already produced by an earlier row or source).
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from prefalign.core.feedback.conflicts import TOTAL_KEY
from prefalign.core.feedback.pairs import REQUIRED_PAIR_ROW_COLUMNS, to_pair_rows, within_group_pairs
from prefalign.core.feedback.parsers import REJECTED_SCHEMA, SAME_TEXT_REASON, check_table_params, get_parser
from prefalign.core.feedback.records import RawFileError, RawRecord
from prefalign.core.schema import FEEDBACK_KINDS
from prefalign.core.text import canonical_memo

REQUIRED_SOURCE_KEYS = ("parser", "signal", "feedback")
# signals a parsed source can carry (ground_truth is only for generated sources)
SOURCE_SIGNALS = ("score_gap", "judge_prob", "votes", "binary")


def check_source_params(source: str, params: dict[str, Any]) -> None:
    """Check one source's parameters before any file is read.

    Args:
        source: the source name.
        params: feedback.sources.<source>.

    Raises:
        ValueError: a missing key, an unknown signal or feedback kind, or a bad gamma, eps,
            laplace_alpha, max_pairs_per_prompt or table column mapping; the message names the key.
    """
    missing = [k for k in REQUIRED_SOURCE_KEYS if k not in params]
    if missing:
        raise ValueError(f"feedback.sources.{source} lacks {missing}; see conf/base/parameters_feedback.yml")
    key = f"feedback.sources.{source}"
    if params["signal"] not in SOURCE_SIGNALS:
        raise ValueError(f"{key}.signal={params['signal']!r} is not one of {', '.join(SOURCE_SIGNALS)}")
    if params["feedback"] not in FEEDBACK_KINDS:
        raise ValueError(f"{key}.feedback={params['feedback']!r} is not one of {', '.join(FEEDBACK_KINDS)}")
    if params["signal"] == "score_gap" and "gamma" not in params:
        raise ValueError(f"{key}.gamma is required for a score_gap source")
    # gamma scales the score gap into log-odds (docs/methods.md s1): <= 0 would flip or erase preferences.
    if "gamma" in params and not float(params["gamma"]) > 0:
        raise ValueError(f"{key}.gamma={params['gamma']} must be > 0 (MMPO used 0.3-2.2 on 1-10 scores)")
    if "eps" in params and not 0 < float(params["eps"]) < 0.5:
        raise ValueError(f"{key}.eps={params['eps']} must be in (0, 0.5)")
    if "laplace_alpha" in params and not float(params["laplace_alpha"]) >= 0:
        raise ValueError(f"{key}.laplace_alpha={params['laplace_alpha']} must be >= 0")
    cap = params.get("max_pairs_per_prompt")
    if cap is not None and not (isinstance(cap, int) and cap >= 1):
        raise ValueError(f"{key}.max_pairs_per_prompt={cap!r} must be an integer >= 1, or null for all pairs")
    if params["parser"] == "preference_table":  # its column mapping fits its signal (a score_gap table names its scores)
        try:
            check_table_params(params)
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from None


def ingest_source(source: str, inputs: dict[str, list[RawRecord]], params: dict[str, Any],
                  max_rejected_fraction: float | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """(pair rows, rejected records, stats) of one source from its decoded raw records.

    Args:
        source: the source name (feedback.sources.<source>).
        inputs: role -> decoded raw records (RawRecordsDataset).
        params: the source's parameters; ``max_rejected_fraction`` there overrides the argument.
        max_rejected_fraction: per-file limit on rejected records / records read
            (feedback.max_rejected_fraction_per_file); None = no limit.

    Returns:
        (pair rows (PAIR_ROW_COLUMNS), rejected records (REJECTED_SCHEMA), stats): the stats
        reconcile as the module docstring says. The streaming engine's ingest_source_chunks
        gives the same three.

    Raises:
        ValueError: bad source parameters, naming the key.
        RawFileError: a file whose rejected fraction is above the limit, naming the file, the
            counts and the most common reason.
    """
    check_source_params(source, params)
    with canonical_memo():  # parsing, within-prompt pairs and orientation canonicalise each text once
        return _ingest(source, inputs, params, max_rejected_fraction)


def _ingest(source: str, inputs: dict[str, list[RawRecord]], params: dict[str, Any],
            max_rejected_fraction: float | None) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    parsed = get_parser(params["parser"])(inputs, params)
    limit = params.get("max_rejected_fraction", max_rejected_fraction)
    if limit is not None:
        check_rejected_fraction(source, inputs, parsed.rejected, float(limit))
    stats: dict[str, Any] = {
        "source": source, "parser": params["parser"], "signal": params["signal"], "feedback": params["feedback"],
        "records_read": parsed.records_read, "records_rejected": parsed.records_rejected,
        "records_used": parsed.records_read - parsed.records_rejected,
        "auxiliary_records_read": parsed.auxiliary_read, "auxiliary_records_rejected": parsed.auxiliary_rejected,
        "join_duplicates": parsed.join_duplicates,
    }
    if parsed.kind == "scored":
        cap = params.get("max_pairs_per_prompt")
        comparisons, candidates, identical = within_group_pairs(parsed.frame, cap)
        stats.update(responses=parsed.frame.height, prompts=parsed.frame["group"].n_unique(), candidate_pairs=candidates,
                     capped_dropped=candidates - identical - comparisons.height)
    else:
        comparisons, identical = parsed.frame, 0
        stats.update(candidate_pairs=comparisons.height, capped_dropped=0)
    pair_rows, dropped = to_pair_rows(comparisons, source, params)
    dropped["identical_dropped"] += identical
    stats.update(comparisons=comparisons.height, **dropped, pair_rows=pair_rows.height)
    rejected = pl.DataFrame([dict(r, source=source) for r in parsed.rejected], schema=REJECTED_SCHEMA, orient="row") \
        if parsed.rejected else pl.DataFrame(schema=REJECTED_SCHEMA)
    stats["rejected_by_reason"] = _reasons(rejected)
    return pair_rows, rejected, stats


def check_rejected_fraction(source: str, inputs: dict[str, list[RawRecord]], rejected: list[dict[str, Any]], limit: float) -> None:
    """RawFileError when one file's rejected records / records read is above ``limit``: so many bad
    records mean the file is wrong (another format, a broken export), not that a few rows are.
    Records rejected because their two responses are the same text carry no preference but are
    not defects (a file reviewing a model against itself), so they do not count.

    Args:
        source: the source name (for the message).
        inputs: role -> the records read (their files are counted).
        rejected: rejected rows (role, file, reason).
        limit: feedback.max_rejected_fraction_per_file, in [0, 1].

    Raises:
        ValueError: a limit outside [0, 1].
        RawFileError: a file above the limit (check_rejected_counts).
    """
    read: dict[tuple[str, str], int] = {}
    for role, records in inputs.items():
        for rec in records:
            read[(role, rec.file)] = read.get((role, rec.file), 0) + 1
    check_rejected_counts(source, read, rejected, limit)


def check_rejected_counts(source: str, read: dict[tuple[str, str], int], rejected: list[dict[str, Any]], limit: float) -> None:
    """``check_rejected_fraction`` on counts: records read per (role, file), e.g. summed over the
    chunks of the streaming path.

    Args:
        source: the source name (for the message).
        read: (role, file) -> records read.
        rejected: rejected rows (role, file, reason).
        limit: feedback.max_rejected_fraction_per_file, in [0, 1].

    Raises:
        ValueError: a limit outside [0, 1].
        RawFileError: a file above the limit, naming the file, the counts and the most common reason.

    Source: docs/feedback.md, "Bad input".
    """
    if not 0.0 <= limit <= 1.0:
        raise ValueError(f"max_rejected_fraction={limit} must be in [0, 1] (feedback.max_rejected_fraction_per_file)")
    bad: dict[tuple[str, str], list[str]] = {}
    for row in rejected:
        if row["reason"].startswith(SAME_TEXT_REASON):
            continue  # a record with no preference, not a broken one (e.g. a model reviewed against itself)
        bad.setdefault((row["role"], row["file"]), []).append(row["reason"])
    for (role, file), reasons in bad.items():
        n = read.get((role, file), 0)
        if n and len(reasons) / n > limit:
            common = max(set(reasons), key=reasons.count)
            raise RawFileError(
                f"raw file {file} (source {source}, role {role}): {len(reasons)} of {n} records rejected "
                f"({len(reasons) / n:.0%}), above feedback.max_rejected_fraction_per_file={limit:g}; most common "
                f"reason ({reasons.count(common)}x): {common}. Check the file and the source's parser, or raise the limit")


def generated_source_stats(source: str, pair_rows: pl.DataFrame, params: dict[str, Any]) -> dict[str, Any]:
    """Stats of a source generated from parameters (no raw file): every row is a record used.

    Args:
        source: the source name.
        pair_rows: its generated pair rows.
        params: feedback.sources.<source>.

    Returns:
        The stats dict, with the same keys as ingest_source's.

    Raises:
        ValueError: pair rows without a required column.
    """
    missing = [c for c in REQUIRED_PAIR_ROW_COLUMNS if c not in pair_rows.columns]
    if missing:
        raise ValueError(f"generated source {source!r} lacks columns {missing}; it must give {list(REQUIRED_PAIR_ROW_COLUMNS)}")
    n = pair_rows.height
    return {"source": source, "parser": "generated", "signal": params.get("signal", "ground_truth"),
            "feedback": params.get("feedback", "synthetic"), "records_read": n, "records_rejected": 0,
            "records_used": n, "auxiliary_records_read": 0, "auxiliary_records_rejected": 0,
            "candidate_pairs": n, "capped_dropped": 0, "comparisons": n, "identical_dropped": 0,
            "ties": int((pair_rows["p_chosen"] == 0.5).sum()), "ties_dropped": 0, "pair_rows": n,
            "rejected_by_reason": {}}


_DETAIL = re.compile(r"(field '[^']*')|'[^']*'|\"[^\"]*\"|0x[0-9a-f]+|-?\d+(?:\.\d+)?")


def _reasons(rejected: pl.DataFrame) -> dict[str, int]:
    """Rejected counts by role and reason, with ids, values and numbers blanked ("_") so that the
    summary stays short; field names are kept."""
    counts: dict[str, int] = {}
    for role, reason in rejected.select("role", "reason").iter_rows():
        if reason.startswith(SAME_TEXT_REASON):  # the quoted text may hold quotes itself: cut it off
            reason = reason.split("): ", 1)[0] + "): _"
        key = f"{role}: " + _DETAIL.sub(lambda m: m.group(1) or "_", reason)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def summarise(pairs: pl.DataFrame, source_stats: list[dict[str, Any]], duplicates: dict[str, int],
              conflicts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per-source summary (records read, rejected, ties, conflicts, pairs, p_chosen distribution).

    ``conflicts`` is resolve_conflicts' per-source counts; a source without contradictions gets
    zeros, so the summary always says how many were found.

    Args:
        pairs: the pairs table (source, p_chosen, margin, split, prompt_id are read).
        source_stats: each enabled source's stats (ingest_source, generated_source_stats).
        duplicates: source -> rows dropped as a repeated pair_id.
        conflicts: resolve_conflicts' counts, or None.

    Returns:
        {"total": {pairs, prompts, ties, conflicting_comparisons, records_read, records_rejected,
        splits}, "sources": {source: stats + pairs, duplicates, conflicts, distributions, splits}}.
        streaming.summarise_dataset gives the same on a lazy table.
    """
    per_source = {}
    conflicts = conflicts or {}
    for stats in source_stats:
        name = stats["source"]
        mine = pairs.filter(pl.col("source") == name)
        stats = dict(stats, duplicates_dropped=int(duplicates.get(name, 0)), pairs=mine.height)
        mine_conflicts = conflicts.get(name, {})
        stats["conflicts"] = {scope: mine_conflicts.get(scope, {"comparisons": 0}) for scope in ("within_source", "across_sources")}
        within, across = stats["conflicts"]["within_source"], stats["conflicts"]["across_sources"]
        stats["conflict_rows_removed"] = (within.get("judgments", 0) - within.get("pairs_out", 0)
                                          + across.get("dropped", 0) - across.get("pooled_pairs_out", 0))
        stats["ties_in_pairs"] = int((mine["p_chosen"] == 0.5).sum())  # kept for soft objectives, dropped by hard-label ones
        stats["p_chosen"] = _distribution(mine["p_chosen"])
        stats["margin"] = _distribution(mine["margin"].drop_nulls(), tie=0.0)
        stats["splits"] = {s: int(n) for s, n in mine.group_by("split").len().sort("split").iter_rows()}
        per_source[name] = stats
    return {
        "total": {"pairs": pairs.height, "prompts": pairs["prompt_id"].n_unique(),
                  "ties": int((pairs["p_chosen"] == 0.5).sum()),
                  "conflicting_comparisons": conflicts.get(TOTAL_KEY, {"within_source": 0, "across_sources": 0}),
                  "records_read": sum(s["records_read"] for s in source_stats),
                  "records_rejected": sum(s["records_rejected"] for s in source_stats),
                  "splits": {s: int(n) for s, n in pairs.group_by("split").len().sort("split").iter_rows()}},
        "sources": per_source,
    }


def _distribution(values: pl.Series, tie: float = 0.5) -> dict[str, Any]:
    """n, mean, quantiles, and the share of ties (p = 0.5, or margin = 0)."""
    if values.len() == 0:
        return {"n": 0}
    values = values.cast(pl.Float64)
    out = {"n": values.len(), "mean": round(float(values.mean()), 4), "min": round(float(values.min()), 4)}
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        out[f"q{int(q * 100)}"] = round(float(values.quantile(q, "nearest")), 4)
    out["max"] = round(float(values.max()), 4)
    out["share_ties"] = round(float((values == tie).mean()), 4)
    return out


def rejected_table(rejected: list[pl.DataFrame]) -> pl.DataFrame:
    """Every source's rejected records in one table.

    Args:
        rejected: one REJECTED_SCHEMA frame per source, in pipeline order.

    Returns:
        Their concatenation (an empty REJECTED_SCHEMA frame when none).
    """
    return pl.concat(rejected) if rejected else pl.DataFrame(schema=REJECTED_SCHEMA)
