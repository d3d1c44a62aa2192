"""The evaluation of the reward models alone (no policy): for an environment that trains only
reward models, e.g. `kedro run --env cpu_pretrained --pipelines evaluation_reward`."""

from prefalign.pipelines.evaluation_reward.pipeline import create_pipeline

__all__ = ["create_pipeline"]
