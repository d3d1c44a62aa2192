"""Wiring only: score every model, collect the metrics side by side, plot, write the report."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from prefalign.pipelines.evaluation import nodes

# Rows of the comparison table, each a node whose output is `evaluation.<name>.metrics`.
MODEL_ROWS: list[str] = ["ground_truth"]


def create_pipeline(**kwargs) -> Pipeline:
    prepare = pipeline([
        node(nodes.select_test_pairs, ["validated_pairs", "params:evaluation"], "evaluation_test_pairs",
             name="select_test_pairs"),
        node(nodes.prepare_rewardbench, ["rewardbench_file", "params:evaluation.rewardbench"],
             "evaluation_rewardbench_rows", name="prepare_rewardbench"),
    ])
    models = pipeline([
        node(nodes.ground_truth_metrics,
             ["evaluation_test_pairs", "synthetic_cyclic_triples", "params:feedback.sources.synthetic_scalar",
              "params:feedback.sources.synthetic_cyclic", "params:evaluation"],
             "evaluation_ground_truth_metrics", name="ground_truth_metrics"),
    ])
    report = pipeline([
        node(nodes.collect_metrics,
             {"validated_pairs": "validated_pairs", "test_pairs": "evaluation_test_pairs", "params": "params:evaluation",
              **{name: f"evaluation_{name}_metrics" for name in MODEL_ROWS}},
             ["evaluation_metrics", "evaluation_comparison", "evaluation_data_summary"], name="collect_metrics"),
        node(nodes.make_plots, ["evaluation_metrics", "validated_pairs"], "evaluation_figures", name="make_plots"),
        node(nodes.write_report,
             ["evaluation_metrics", "evaluation_comparison", "evaluation_data_summary", "evaluation_figures",
              "params:evaluation"],
             ["evaluation_report_md", "evaluation_report_html", "evaluation_plots"], name="write_report"),
    ])
    return prepare + models + report
