"""Policy pipeline: one SFT reference, preference policies from a template, iterative GPO.

Every objective is its own namespace (policy_sft, policy_dpo, policy_mmpo, policy_ipo,
policy_gpo, policy_gpo_bt), so each runs alone:
    kedro run --pipelines policy --namespaces policy_dpo
Its settings are `policy.<objective>` (sft, dpo, ...) in parameters_policy.yml; `policy.defaults`
holds the model, tokenizer and data settings every objective uses.
"""

from kedro.pipeline import Node, Pipeline

from prefalign.pipelines.policy.nodes import (
    compute_reference_logprobs,
    gpo_policy,
    preference_policy,
    sft_policy,
)

PREFERENCE_NAMESPACES = ("policy_dpo", "policy_mmpo", "policy_ipo")
# GPO namespace -> the reward pipeline's checkpoint that scores its samples
GPO_NAMESPACES = {"policy_gpo": "reward_gpm.model", "policy_gpo_bt": "reward_bt.model"}


def _params(namespace: str) -> dict[str, str]:
    return {"params:defaults": "params:policy.defaults", "params:objective": f"params:policy.{namespace.removeprefix('policy_')}"}


def sft_pipeline() -> Pipeline:
    return Pipeline(
        [
            Node(
                sft_policy,
                inputs=["validated_pairs", "params:defaults", "params:objective"],
                outputs=["model", "training_curve", "metrics"],
                name="train_sft",
            )
        ],
        namespace="policy_sft",
        inputs={"validated_pairs"},
        parameters=_params("policy_sft"),
    )


def preference_pipeline(namespace: str) -> Pipeline:
    """The DPO/MMPO/IPO template: reference log-probs once, then training."""
    return Pipeline(
        [
            Node(
                compute_reference_logprobs,
                inputs=["policy_sft.model", "validated_pairs", "params:defaults", "params:objective"],
                outputs="reference_logprobs",
                name="reference_logprobs",
            ),
            Node(
                preference_policy,
                inputs=["policy_sft.model", "validated_pairs", "reference_logprobs", "params:defaults", "params:objective"],
                outputs=["model", "training_curve", "metrics"],
                name="train_policy",
            ),
        ],
        namespace=namespace,
        inputs={"validated_pairs", "policy_sft.model"},
        parameters=_params(namespace),
    )


def gpo_pipeline(namespace: str, preference_model: str) -> Pipeline:
    return Pipeline(
        [
            Node(
                gpo_policy,
                inputs=["policy_sft.model", "preference_model", "validated_pairs", "params:defaults", "params:objective"],
                outputs=["model", "iteration_models", "generations", "training_curve", "metrics"],
                name="train_gpo",
            )
        ],
        namespace=namespace,
        inputs={"validated_pairs": "validated_pairs", "policy_sft.model": "policy_sft.model", "preference_model": preference_model},
        parameters=_params(namespace),
    )


def create_pipeline(**kwargs) -> Pipeline:
    return (
        sft_pipeline()
        + sum((preference_pipeline(ns) for ns in PREFERENCE_NAMESPACES), Pipeline([]))
        + sum((gpo_pipeline(ns, model) for ns, model in GPO_NAMESPACES.items()), Pipeline([]))
    )
