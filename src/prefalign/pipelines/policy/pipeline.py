"""Policy pipeline, generated from the registry (core/objectives/registry.py): the reference (SFT)
objective, one pairwise template per pairwise objective, one on-policy template per GPO-style one.

Every objective is its own namespace ``policy_<name>``, so each runs alone
(``kedro run --pipelines policy --namespaces <namespace>``). Its settings are ``policy.<name>`` in
parameters_policy.yml; ``policy.defaults`` holds the model, tokenizer and data settings every
objective uses.
"""

from kedro.pipeline import Node, Pipeline

from prefalign.core.objectives.registry import ObjectiveSpec, reference_policy
from prefalign.pipelines import declared_objectives, for_entry
from prefalign.pipelines.policy import nodes

PARAMS = ["params:defaults", "params:objective"]


def _wrap(spec: ObjectiveSpec, node_list: list[Node], inputs) -> Pipeline:
    return Pipeline(node_list, namespace=spec.namespace, inputs=inputs,
                    parameters={"params:defaults": "params:policy.defaults", "params:objective": f"params:{spec.params_key}"})


def reference_pipeline(spec: ObjectiveSpec) -> Pipeline:
    return _wrap(spec, [Node(for_entry(nodes.train_sft, namespace=spec.namespace), inputs=["validated_pairs", *PARAMS],
                             outputs=["model", "training_curve", "metrics"], name="train_sft")], {"validated_pairs"})


def pairwise_pipeline(spec: ObjectiveSpec, reference: str) -> Pipeline:
    """Reference log-probs once (only when the objective needs them), then training."""
    steps = []
    inputs = {"reference": reference, "validated_pairs": "validated_pairs", "defaults": PARAMS[0], "objective": PARAMS[1]}
    if spec.needs_reference:
        steps.append(Node(nodes.reference_logprobs, inputs=[reference, "validated_pairs", *PARAMS],
                          outputs="reference_logprobs", name="reference_logprobs"))
        inputs["reference_logprobs"] = "reference_logprobs"
    steps.append(Node(for_entry(nodes.train_policy, namespace=spec.namespace), inputs=inputs,
                      outputs=["model", "training_curve", "metrics"], name="train_policy"))
    return _wrap(spec, steps, {"validated_pairs", reference})


def on_policy_pipeline(spec: ObjectiveSpec, reference: str) -> Pipeline:
    return _wrap(spec, [Node(for_entry(nodes.train_gpo, namespace=spec.namespace),
                             inputs=[reference, "preference_model", "validated_pairs", *PARAMS],
                             outputs=["model", "iteration_models", "generations", "training_curve", "metrics"],
                             name="train_gpo")],
                 {"validated_pairs": "validated_pairs", reference: reference,
                  "preference_model": f"{spec.preference_model}.model"})


def create_pipeline(**kwargs) -> Pipeline:
    ref_spec = reference_policy()
    reference = f"{ref_spec.namespace}.model"
    declared = declared_objectives("policy")
    pipe = reference_pipeline(ref_spec) if ref_spec in declared else Pipeline([])
    for spec in declared_objectives("policy", trainer="pairwise"):
        pipe += pairwise_pipeline(spec, reference)
    for spec in declared_objectives("policy", trainer="on_policy"):
        pipe += on_policy_pipeline(spec, reference)
    return pipe
