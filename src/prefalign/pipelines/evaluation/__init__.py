"""The evaluation pipeline: every model on the same test pairs, RewardBench file and cycles."""

from prefalign.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
