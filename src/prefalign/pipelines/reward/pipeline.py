"""One template pipeline, instantiated per objective: namespaces reward_bt, reward_mmpo, reward_gpm.

Parameters: ``reward.defaults`` deep-merged with ``reward.<objective>``. Run one objective with
``kedro run --pipelines reward --namespaces reward_gpm``.
"""

from kedro.pipeline import Node, Pipeline

from prefalign.pipelines.reward.nodes import select_training_pairs, train_reward, train_tokenizer

OBJECTIVES = ("bt", "mmpo", "gpm")


def template() -> Pipeline:
    return Pipeline(
        [
            Node(
                select_training_pairs,
                inputs=["validated_pairs", "params:reward.defaults", "params:reward.objective"],
                outputs=["train_pairs", "val_pairs", "selection"],
                name="select_training_pairs",
            ),
            Node(
                train_tokenizer,
                inputs=["train_pairs", "params:reward.defaults", "params:reward.objective"],
                outputs="tokenizer",
                name="train_tokenizer",
            ),
            Node(
                train_reward,
                inputs=["train_pairs", "val_pairs", "tokenizer", "selection", "params:reward.defaults", "params:reward.objective"],
                outputs=["model", "training_curve", "metrics"],
                name="train_reward_model",
            ),
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    return sum(
        (
            Pipeline(
                template(),
                namespace=f"reward_{objective}",
                inputs={"validated_pairs"},
                parameters={
                    "params:reward.defaults": "params:reward.defaults",
                    "params:reward.objective": f"params:reward.{objective}",
                },
            )
            for objective in OBJECTIVES
        ),
        Pipeline([]),
    )
