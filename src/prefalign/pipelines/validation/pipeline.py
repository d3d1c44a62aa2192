"""Wiring only. The report and the quarantine are saved before the gate node can stop the run."""

from kedro.pipeline import Node, Pipeline


from prefalign.pipelines.validation.nodes import check_pairs, gate_validated_pairs, quarantine_pairs, write_report


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(check_pairs, ["pairs", "params:validation", "params:feedback.sources"], ["checked_pairs", "validation_results"], name="check_pairs"),
            Node(quarantine_pairs, "checked_pairs", ["quarantined_pairs", "passed_pairs"], name="quarantine_pairs"),
            Node(write_report, ["checked_pairs", "validation_results"], ["validation_report", "validation_plot"], name="write_validation_report"),
            Node(
                gate_validated_pairs,
                ["passed_pairs", "validation_results", "validation_report", "quarantined_pairs"],
                "validated_pairs",
                name="gate_validated_pairs",
            ),
        ]
    )
