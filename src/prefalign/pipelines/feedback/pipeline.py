"""Wiring of the feedback pipeline: one ingest node per source, then the pairs table.

Which sources RUN is configuration (`enabled` in conf/base/parameters_feedback.yml); which
sources EXIST is the two tables below: a raw source names its catalog datasets by role, a
generated source names the function that makes its pair rows from its parameters.
"""

from __future__ import annotations

from typing import Any, Callable

import polars as pl
from kedro.pipeline import Node, Pipeline

from prefalign.core.synthetic import CYCLIC_SOURCE
from prefalign.pipelines import for_entry
from prefalign.pipelines.feedback import synthetic
from prefalign.pipelines.feedback.nodes import (
    build_pairs,
    collect_rejected,
    generate_source,
    ingest_raw_source,
    ingest_tables,
    summarise_feedback,
)

# source -> {parser role: catalog dataset}
RAW_SOURCES: dict[str, dict[str, str]] = {
    "ultrafeedback": {"records": "raw_ultrafeedback"},
    "tulu2_bon": {"records": "raw_tulu2_bon"},
    "alpaca_eval": {"records": "raw_alpaca_eval"},
    "arena_bench": {"questions": "raw_arena_questions", "answers": "raw_arena_answers", "judgments": "raw_arena_judgments"},
    "vicuna_eval": {"questions": "raw_vicuna_questions", "answers": "raw_vicuna_answers", "reviews": "raw_vicuna_reviews"},
    "prometheus": {"records": "raw_prometheus"},
    "hh_rlhf": {"records": "raw_hh_rlhf"},
    "pandalm_human": {"records": "raw_pandalm_testset"},
    "pandalm_gpt35": {"testset": "raw_pandalm_testset", "predictions": "raw_pandalm_gpt35"},
    "pandalm_7b": {"testset": "raw_pandalm_testset", "predictions": "raw_pandalm_7b"},
}

# source -> function(source_params) -> pair rows (prompt, chosen, rejected, margin, p_chosen,
# source, feedback, signal, true_p). The extension point for sources without a raw file, e.g.
# {"my_generated_source": make_rows}; its parameters go under feedback.sources.<name>.
GENERATED_SOURCES: dict[str, Callable[[dict[str, Any]], pl.DataFrame]] = dict(synthetic.GENERATED)


def create_pipeline(generated_sources: dict[str, Callable[[dict[str, Any]], pl.DataFrame]] | None = None, **kwargs: Any) -> Pipeline:
    generated_sources = GENERATED_SOURCES if generated_sources is None else generated_sources
    nodes: list[Node] = []
    sources = list(RAW_SOURCES) + list(generated_sources)
    for source, roles in RAW_SOURCES.items():
        nodes.append(Node(
            for_entry(ingest_raw_source, source=source),
            inputs={"source_params": f"params:feedback.sources.{source}",
                    "max_rejected_fraction": "params:feedback.max_rejected_fraction_per_file",
                    "feedback": "params:feedback", **roles},  # engine, streaming, split
            outputs=[f"pair_rows_{source}", f"rejected_{source}", f"stats_{source}"],
            name=f"ingest_{source}",
        ))
    for source, generate in generated_sources.items():
        nodes.append(Node(
            for_entry(generate_source, source=source, generate=generate),
            inputs=f"params:feedback.sources.{source}",
            outputs=[f"pair_rows_{source}", f"rejected_{source}", f"stats_{source}"],
            name=f"generate_{source}",
        ))
    if CYCLIC_SOURCE in generated_sources:  # the cycles themselves, for evaluation
        nodes.append(Node(synthetic.synthetic_cyclic_triples,
                          inputs=[f"params:feedback.sources.{CYCLIC_SOURCE}", "params:feedback.split"],
                          outputs=f"{CYCLIC_SOURCE}_triples", name=f"{CYCLIC_SOURCE}_triples"))
    # user tables: every feedback.sources entry with parser preference_table and a `table` path
    nodes.append(Node(ingest_tables, inputs=["params:feedback.sources", "params:feedback.max_rejected_fraction_per_file", "raw_tables"],
                      outputs=["pair_rows_tables", "rejected_tables", "stats_tables"], name="ingest_tables"))
    sources.append("tables")
    nodes += [
        Node(build_pairs, inputs=["params:feedback"] + [f"pair_rows_{s}" for s in sources],
             outputs=["pairs", "pair_resolution"], name="build_pairs"),
        Node(collect_rejected, inputs=[f"rejected_{s}" for s in sources],
             outputs="rejected_feedback_records", name="collect_rejected"),
        Node(summarise_feedback, inputs=["pairs", "pair_resolution"] + [f"stats_{s}" for s in sources],
             outputs="feedback_summary", name="summarise_feedback"),
    ]
    return Pipeline(nodes)
