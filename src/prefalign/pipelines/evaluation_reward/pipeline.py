"""Wiring only: the evaluation pipeline without its policy nodes (same node and dataset names),
so that it needs no policy checkpoint. Not part of `__default__` (pipeline_registry.py)."""

from kedro.pipeline import Pipeline

from prefalign.pipelines.evaluation.pipeline import create_pipeline as evaluation_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return evaluation_pipeline(include_policies=False)
