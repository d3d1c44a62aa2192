"""The pairs table: the one contract between ingestion and everything downstream.

Every feedback source ends in this polars schema (docs/architecture.md, "The one contract").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import polars as pl

from prefalign.core.text import canonical_text

# One chat turn; a prompt is a list of them (the last one a user turn).
MESSAGE_DTYPE = pl.Struct({"role": pl.String, "content": pl.String})
MESSAGES_DTYPE = pl.List(MESSAGE_DTYPE)
MESSAGE_ROLES = ("system", "user", "assistant")

PAIRS_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.String,  # stable hash of (prompt, chosen, rejected)
    "prompt_id": pl.String,  # stable hash of the prompt; the unit of splitting
    "prompt": pl.String,  # the prompt flattened to text (docs/feedback.md, "Chat flattening")
    "prompt_messages": MESSAGES_DTYPE,  # the prompt as chat turns [{role, content}], last = user
    "chosen": pl.String,
    "rejected": pl.String,
    "margin": pl.Float64,  # how much better, in the source's unit; null for binary
    "p_chosen": pl.Float64,  # soft target P(chosen > rejected) in [0.5, 1]
    "source": pl.String,
    "feedback": pl.String,  # human | ai | synthetic
    "signal": pl.String,  # score_gap | judge_prob | votes | binary | ground_truth
    "true_p": pl.Float64,  # ground-truth probability where known (synthetic), else null
    "split": pl.String,  # train | val | test (by a hash of prompt_id) | heldout (held-out sources' prompts)
}
PAIR_COLUMNS: list[str] = list(PAIRS_SCHEMA)

FEEDBACK_KINDS = ("human", "ai", "synthetic")
SIGNALS = ("score_gap", "judge_prob", "votes", "binary", "ground_truth")
SPLITS = ("train", "val", "test")  # drawn by ratio (core/feedback/pairs.py assign_split)
HELDOUT = "heldout"  # every prompt of a held-out source (feedback.split.heldout_sources); never trained on
ALL_SPLITS = (*SPLITS, HELDOUT)


def source_names(value: str | Sequence[str] | None) -> list[str] | None:
    """A list of source names as a parameter may write it: a YAML list, or ONE string of names
    separated by spaces (``"ultrafeedback my_prefs"``), which ``kedro run --params`` can pass (it
    splits its argument at every comma, so ``sources=[a,b]`` never arrives whole); None stays None.

    Args:
        value: a list/tuple of names, a string of names, or None.

    Returns:
        The names in order, or None.

    Raises:
        ValueError: an empty string, or a list with a non-string or an empty name.
    """
    if value is None:
        return None
    names = re.split(r"[\s,]+", value.strip()) if isinstance(value, str) else list(value)
    if not names or any(not isinstance(n, str) or not n.strip() for n in names):
        raise ValueError(f"{value!r} is not a list of source names: write a YAML list, or one string of names "
                         "separated by spaces (--params \"reward.defaults.data.sources=ultrafeedback my_prefs\")")
    return [n.strip() for n in names]


def with_source_names(params: Mapping[str, Any] | None, key: str) -> Mapping[str, Any] | None:
    """``params`` with ``params[key]`` read by ``source_names`` when it is one string (a ``--params``
    value); a list, None or a missing key is left for the config's own type check.

    Args:
        params: a parameter block, or None.
        key: the key that holds source names (``sources``, ``prompt_sources``).

    Returns:
        A new dict with the key converted, or ``params`` itself when there is nothing to convert.

    Raises:
        ValueError: a string that names no source (from ``source_names``).
    """
    if isinstance(params, Mapping) and isinstance(params.get(key), str):
        return {**params, key: source_names(params[key])}
    return params


def stable_hash(*parts: str) -> str:
    """A hash that is the same on every machine and run (unlike Python's hash()).

    Parts are joined with a separator that cannot appear in UTF-8 text, so
    ("ab", "c") and ("a", "bc") hash differently.

    Args:
        *parts: the texts to hash, in order (encoded as UTF-8, lone surrogates kept).

    Returns:
        24 lowercase hex characters (BLAKE2b with a 12-byte digest).
    """
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        h.update(part.encode("utf-8", errors="surrogatepass"))
        h.update(b"\xff")
    return h.hexdigest()


def prompt_id_of(prompt: str) -> str:
    """Stable hash of the prompt's canonical form (core/text.py), so prompts that are the same
    to a reader share one id and one split (docs/methods.md s8).

    Args:
        prompt: the prompt text as stored (flattened chat).

    Returns:
        24 hex characters: ``stable_hash("prompt", canonical_text(prompt))``.
    """
    return stable_hash("prompt", canonical_text(prompt))


def pair_id_of(prompt: str, chosen: str, rejected: str) -> str:
    """Stable hash of the canonical (prompt, chosen, rejected); the orientation is part of the id.

    Args:
        prompt: the prompt text.
        chosen: the preferred response.
        rejected: the other response.

    Returns:
        24 hex characters; swapping chosen and rejected gives a different id (docs/methods.md s8.1).
    """
    return stable_hash("pair", canonical_text(prompt), canonical_text(chosen), canonical_text(rejected))


def comparison_id_of(prompt: str, response_a: str, response_b: str,
                     canonical: Callable[[str], str] = canonical_text) -> str:
    """Stable hash of the canonical prompt and the UNORDERED pair of canonical responses: the same
    for every judgment of the same two responses, whichever seat each sat in (section 8).

    Args:
        prompt, response_a, response_b: texts as judged (any seat order).
        canonical: the canonical form to hash; canonical_text (memoised inside a
            ``core.text.canonical_memo()`` block, as the feedback pipeline runs it) or a copy of it.

    Returns:
        24 hex characters (stable_hash of "comparison", the prompt, the smaller then the larger response).
    """
    a, b = sorted((canonical(response_a), canonical(response_b)))
    return stable_hash("comparison", canonical(prompt), a, b)


def user_turn(prompt: str) -> list[dict[str, str]]:
    """The prompt as one user turn: prompt_messages of a single-turn source.

    Args:
        prompt: the prompt text.

    Returns:
        ``[{"role": "user", "content": prompt}]``.
    """
    return [{"role": "user", "content": prompt}]


def _turn_checks(column: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(the turns, per turn whether its role or content is bad, the last turn's role)."""
    turns = pl.col(column)
    role, content = pl.element().struct.field("role"), pl.element().struct.field("content")
    bad_turns = turns.list.eval(~role.is_in(list(MESSAGE_ROLES)).fill_null(False) | content.is_null())
    return turns, bad_turns, turns.list.last().struct.field("role")


def prompt_messages_valid(column: str = "prompt_messages") -> pl.Expr:
    """``prompt_messages_problem(column).is_null()`` where the value is not null, without formatting the
    messages (the validation's per-row check): True for a valid value, False for an invalid one, null for null.

    Args:
        column: the column holding the turns (``MESSAGES_DTYPE``).

    Returns:
        A Boolean expression: True / False / null per row as above.
    """
    turns, bad_turns, last_role = _turn_checks(column)
    valid = (turns.list.len() > 0) & ~bad_turns.list.any() & (last_role == "user").fill_null(False)
    return pl.when(turns.is_not_null()).then(valid)


def prompt_messages_problem(column: str = "prompt_messages") -> pl.Expr:
    """The one rule for a prompt's chat turns, as a polars expression: why a row's value is not a valid
    ``prompt_messages``, or null when it is. Valid = a non-empty list of {role, content} turns, roles
    in system/user/assistant, content text, the last a user turn. The validation pipeline quarantines
    the rows it flags (core/validation/checks.py, derived column ``prompt_messages_valid``).

    Args:
        column: the column holding the turns (``MESSAGES_DTYPE``).

    Returns:
        A String expression: e.g. "prompt_messages[0] has role 'bot', expected one of [...]",
        "prompt_messages[1] has no text content", "prompt_messages ends with a 'assistant' turn; ...",
        "prompt_messages is empty ..." (also for a null value); null for a valid value.
    """
    turns, bad_turns, last_role = _turn_checks(column)
    first_bad = bad_turns.list.arg_max()  # the first bad turn, where there is one
    bad_role = turns.list.get(first_bad, null_on_oob=True).struct.field("role")
    quoted = pl.when(bad_role.is_null()).then(pl.lit("None")).otherwise(pl.format("'{}'", bad_role))
    return (
        pl.when(turns.is_null() | (turns.list.len() == 0))
        .then(pl.lit("prompt_messages is empty (expected at least one user turn)"))
        .when(bad_turns.list.any() & ~bad_role.is_in(list(MESSAGE_ROLES)).fill_null(False))
        .then(pl.format(f"prompt_messages[{{}}] has role {{}}, expected one of {list(MESSAGE_ROLES)}", first_bad, quoted))
        .when(bad_turns.list.any())
        .then(pl.format("prompt_messages[{}] has no text content", first_bad))
        .when(last_role != "user")
        .then(pl.format("prompt_messages ends with a '{}' turn; the last turn of a prompt must be 'user'", last_role))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def with_prompt_messages(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``prompt_messages`` as one user turn holding ``prompt`` where the frame lacks the column
    (single-turn and generated sources, e.g. synthetic); a frame that has it is returned as is.

    Args:
        frame: a table with a ``prompt`` column (a frame without one is returned unchanged).

    Returns:
        The frame with a ``prompt_messages`` column of dtype ``MESSAGES_DTYPE``.
    """
    if "prompt_messages" in frame.columns or "prompt" not in frame.columns:
        return frame
    turn = pl.struct(role=pl.lit("user", dtype=pl.String), content=pl.col("prompt").cast(pl.String))
    return frame.with_columns(prompt_messages=pl.concat_list(turn).cast(MESSAGES_DTYPE))


def conform_to_pairs_schema(frame: pl.DataFrame) -> pl.DataFrame:
    """Select and cast the contract's columns, in order; a missing column is an error, except
    ``prompt_messages``, which defaults to one user turn holding ``prompt``.

    Args:
        frame: a table holding at least the ``PAIR_COLUMNS`` (``prompt_messages`` optional);
            extra columns are dropped.

    Returns:
        The frame with exactly ``PAIR_COLUMNS``, in order, cast to ``PAIRS_SCHEMA``.

    Raises:
        ValueError: a contract column other than ``prompt_messages`` is missing (the message lists them).
    """
    frame = with_prompt_messages(frame)
    missing = [c for c in PAIR_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"pairs table is missing columns {missing}; every source must produce {PAIR_COLUMNS}"
        )
    return frame.select([pl.col(c).cast(t) for c, t in PAIRS_SCHEMA.items()])
