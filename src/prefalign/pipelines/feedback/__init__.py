"""The `feedback` pipeline: raw human/AI feedback -> the margin-annotated pairs table."""

from prefalign.pipelines.feedback.pipeline import create_pipeline

__all__ = ["create_pipeline"]
