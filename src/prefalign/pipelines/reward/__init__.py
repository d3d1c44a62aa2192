"""The ``reward`` pipeline: BT, MMPO and GPM reward models, one template per objective."""

from prefalign.pipelines.reward.pipeline import create_pipeline

__all__ = ["create_pipeline"]
