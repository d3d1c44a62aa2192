"""Evaluation: metrics (docs/methods.md s5), RewardBench-format files, plots and the run report."""
