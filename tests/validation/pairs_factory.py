"""Small valid pairs frames for the validation tests, built with the contract's own id helpers."""

from __future__ import annotations

from typing import Any

import polars as pl
import yaml

from prefalign.core.schema import PAIRS_SCHEMA, pair_id_of, prompt_id_of
from tests.conftest import PROJECT_ROOT

SOURCES = ("ultrafeedback", "hh_rlhf", "synthetic_scalar")


def good_pair(i: int, source: str = "ultrafeedback", split: str = "train") -> dict[str, Any]:
    prompt, chosen, rejected = f"Question {i}: what is {i} + {i}?", f"It is {2 * i}.", f"It is {2 * i + 1}."
    binary = source == "hh_rlhf"
    return {
        "pair_id": pair_id_of(prompt, chosen, rejected),
        "prompt_id": prompt_id_of(prompt),
        "prompt": prompt,
        "prompt_messages": [{"role": "user", "content": prompt}],
        "chosen": chosen,
        "rejected": rejected,
        "margin": None if binary else 1.0 + (i % 5),
        "p_chosen": 1.0 if binary else 0.6 + 0.05 * (i % 5),
        "source": source,
        "feedback": {"hh_rlhf": "human", "synthetic_scalar": "synthetic"}.get(source, "ai"),
        "signal": {"hh_rlhf": "binary", "synthetic_scalar": "ground_truth"}.get(source, "score_gap"),
        "true_p": 0.7 if source == "synthetic_scalar" else None,
        "split": split,
    }


def good_pairs(per_source: int = 40) -> pl.DataFrame:
    rows = [
        good_pair(1000 * s + i, source, ("train", "train", "val", "test")[i % 4])
        for s, source in enumerate(SOURCES)
        for i in range(per_source)
    ]
    return pl.DataFrame(rows, schema=PAIRS_SCHEMA)


def base_params(**overrides: Any) -> dict[str, Any]:
    """The shipped `validation:` block, with the row bounds limited to the sources used here."""
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_validation.yml").read_text())["validation"]
    # what the validation node does: `value_set: feedback_sources` = the configured feedback sources
    sources = list(yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_feedback.yml").read_text())["feedback"]["sources"])
    for body in params["expectations"].values():
        if body and (body.get("kwargs") or {}).get("value_set") == "feedback_sources":
            body["kwargs"]["value_set"] = sources
    params["source_row_bounds"] = {s: {"min": 1, "max": 1000} for s in SOURCES}
    params.update(overrides)
    return params
