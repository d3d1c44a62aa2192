"""One template pipeline per registered reward objective (core/objectives/registry.py).

Namespace ``reward_<name>``; parameters ``reward.defaults`` deep-merged with ``reward.<name>``.
Run one objective with ``kedro run --pipelines reward --namespaces <namespace>``.
"""

from kedro.pipeline import Node, Pipeline

from prefalign.core.objectives.registry import ObjectiveSpec
from prefalign.pipelines import declared_objectives, for_entry
from prefalign.pipelines.reward import nodes


def template(spec: ObjectiveSpec) -> Pipeline:
    params = ["params:reward.defaults", "params:reward.objective"]
    return Pipeline(
        [
            Node(for_entry(nodes.select_training_pairs, namespace=spec.namespace), inputs=["validated_pairs", *params],
                 outputs=["train_pairs", "val_pairs", "selection"], name="select_training_pairs"),
            Node(for_entry(nodes.train_tokenizer, namespace=spec.namespace), inputs=["train_pairs", *params],
                 outputs="tokenizer", name="train_tokenizer"),
            Node(for_entry(nodes.train_reward_model, namespace=spec.namespace),
                 inputs=["train_pairs", "val_pairs", "tokenizer", "selection", *params],
                 outputs=["model", "training_curve", "metrics"], name="train_reward_model"),
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    return sum(
        (
            Pipeline(
                template(spec),
                namespace=spec.namespace,
                inputs={"validated_pairs"},
                parameters={"params:reward.defaults": "params:reward.defaults",
                            "params:reward.objective": f"params:{spec.params_key}"},
            )
            for spec in declared_objectives("reward")
        ),
        Pipeline([]),
    )
