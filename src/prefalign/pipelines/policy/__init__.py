"""Policy pipeline: SFT reference, DPO / MMPO / IPO, iterative GPO (issue 5)."""

from prefalign.pipelines.policy.pipeline import create_pipeline

__all__ = ["create_pipeline"]
