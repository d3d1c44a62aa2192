"""`validation` pipeline: pairs -> validated_pairs + quarantined_pairs + report."""

from prefalign.pipelines.validation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
