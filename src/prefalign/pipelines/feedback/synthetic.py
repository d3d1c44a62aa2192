"""The synthetic lab as generated sources of the feedback pipeline (thin: the lab is core/synthetic).

`GENERATED` plugs into the feedback pipeline's extension point; `synthetic_cyclic_triples` is the
extra table the evaluation pipeline needs (the cycles themselves, split like the pairs).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from prefalign.core.feedback.pairs import PAIR_ROW_COLUMNS
from prefalign.core.schema import HELDOUT, source_names, with_prompt_messages
from prefalign.core.synthetic import (CYCLIC_SOURCE, SCALAR_SOURCE, SyntheticConfig, cyclic_pairs, generate_cyclic,
                                      generate_scalar)


def synthetic_scalar_rows(source_params: dict[str, Any]) -> pl.DataFrame:
    return with_prompt_messages(generate_scalar(SyntheticConfig.from_params(source_params))).select(list(PAIR_ROW_COLUMNS))


def synthetic_cyclic_rows(source_params: dict[str, Any]) -> pl.DataFrame:
    config = SyntheticConfig.from_params(source_params)
    return with_prompt_messages(cyclic_pairs(generate_cyclic(config), config)).select(list(PAIR_ROW_COLUMNS))


def synthetic_cyclic_triples(source_params: dict[str, Any], split_params: dict[str, Any]) -> pl.DataFrame:
    """The A > B > C > A triples, split by the pairs table's own rule (feedback.split)."""
    if not source_params.get("enabled", True):
        return pl.DataFrame(schema={"triple_id": pl.String, "prompt_id": pl.String, "prompt": pl.String,
                                    "response_a": pl.String, "response_b": pl.String, "response_c": pl.String,
                                    "cycle": pl.String, "split": pl.String})
    params = {**source_params, "split": {k: v for k, v in split_params.items() if k != "heldout_sources"}}
    triples = generate_cyclic(SyntheticConfig.from_params(params))
    if CYCLIC_SOURCE in (source_names(split_params.get("heldout_sources")) or []):
        triples = triples.with_columns(split=pl.lit(HELDOUT))  # the pairs table holds these prompts out too
    return triples


GENERATED = {SCALAR_SOURCE: synthetic_scalar_rows, CYCLIC_SOURCE: synthetic_cyclic_rows}
