"""Wiring only: score every model, collect the metrics side by side, plot, write the report.

Models are evaluated when the pipeline that trains them is part of the project (the reward and
policy packages): their checkpoints `<namespace>.model` are then in the catalog. The package
`evaluation_reward` registers this pipeline without the policies, for an environment that trains
only reward models (`kedro run --env cpu_pretrained --pipelines evaluation_reward`).
"""

from __future__ import annotations

from importlib.util import find_spec

from kedro.pipeline import Pipeline, node, pipeline

from prefalign.core.objectives.registry import reference_policy
from prefalign.core.synthetic import CYCLIC_SOURCE, SCALAR_SOURCE
from prefalign.pipelines import declared_objectives, for_entry, win_rate_judge
from prefalign.pipelines.evaluation import nodes

REFERENCE_POLICY = reference_policy().namespace
SHARED = ["evaluation_test_pairs", "evaluation_heldout_pairs", "evaluation_rewardbench_rows", "evaluation_test_triples"]


def _present(package: str) -> bool:
    return find_spec(f"prefalign.pipelines.{package}") is not None


def create_pipeline(include_policies: bool | None = None, **kwargs) -> Pipeline:
    """The evaluation pipeline; ``include_policies=False`` leaves the policies out (None: in when
    the policy package is present). Node and dataset names are the same either way."""
    include_policies = _present("policy") if include_policies is None else include_policies
    rows = ["ground_truth"]
    prepare = pipeline([
        node(nodes.select_test_pairs, ["validated_pairs", "params:evaluation"], "evaluation_test_pairs",
             name="select_test_pairs"),
        node(nodes.select_heldout_pairs, ["validated_pairs", "params:evaluation"], "evaluation_heldout_pairs",
             name="select_heldout_pairs"),
        node(nodes.select_test_triples, [f"{CYCLIC_SOURCE}_triples", "params:evaluation"], "evaluation_test_triples",
             name="select_test_triples"),
        node(nodes.prepare_rewardbench, ["rewardbench_file", "params:evaluation.rewardbench"],
             "evaluation_rewardbench_rows", name="prepare_rewardbench"),
        node(nodes.ground_truth_metrics,
             ["evaluation_test_pairs", "evaluation_heldout_pairs", "evaluation_test_triples",
              "params:feedback.sources", "params:evaluation"],
             "evaluation_ground_truth_metrics", name="ground_truth_metrics"),
    ])
    # Every objective the run environment declares is evaluated (pipelines/__init__.py), in registration order.
    reward_models = [spec.namespace for spec in declared_objectives("reward", evaluation="reward_model")]
    policies = [spec.namespace for spec in declared_objectives("policy", evaluation="implicit_reward")]
    models = []
    if _present("reward"):
        for name in reward_models:
            models.append(node(nodes.evaluate_reward_model,
                               [f"{name}.model", f"{name}.training_curve", *SHARED, "params:evaluation"],
                               f"evaluation_{name}_metrics", name=f"evaluate_{name}"))
            rows.append(name)
    if include_policies and policies:
        reference = f"{REFERENCE_POLICY}.model"
        models += [
            node(nodes.reference_logprobs, [reference, *SHARED, "params:policy.defaults.data", "params:evaluation"],
                 "evaluation_reference_logprobs", name="reference_logprobs"),
            node(nodes.generation_prompts, ["evaluation_test_pairs", "params:evaluation", "evaluation_heldout_pairs"],
                 "evaluation_generation_prompts", name="generation_prompts"),
            node(nodes.reference_samples, [reference, "evaluation_generation_prompts", "params:evaluation",
                                           "params:policy.defaults.data"],
                 "evaluation_reference_samples", name="reference_samples"),
        ]
        # win rates against SFT: judged by a reward model (evaluation.generation.judge), else by r*
        judge = f"{win_rate_judge()}.model" if win_rate_judge() else f"params:feedback.sources.{SCALAR_SOURCE}"
        for name in policies:
            models.append(node(for_entry(nodes.evaluate_policy, namespace=name),
                               [f"{name}.model", reference, "evaluation_reference_logprobs",
                                "evaluation_reference_samples", f"{name}.training_curve", *SHARED,
                                judge, "params:evaluation", "params:policy.defaults.data"],
                               f"evaluation_{name}_metrics", name=f"evaluate_{name}"))
            rows.append(name)
    report = pipeline([
        node(nodes.collect_metrics,
             {"validated_pairs": "validated_pairs", "test_pairs": "evaluation_test_pairs",
              "heldout_pairs": "evaluation_heldout_pairs", "params": "params:evaluation",
              **{name: f"evaluation_{name}_metrics" for name in rows}},
             ["evaluation_metrics", "evaluation_comparison", "evaluation_data_summary",
              "evaluation_rewardbench_scores"], name="collect_metrics"),
        node(nodes.make_plots, ["evaluation_metrics", "validated_pairs"], "evaluation_figures", name="make_plots"),
        node(nodes.write_report,
             ["evaluation_metrics", "evaluation_data_summary", "evaluation_figures"],
             ["evaluation_report_md", "evaluation_report_html", "evaluation_plots"], name="write_report"),
    ])
    return prepare + pipeline(models) + report
