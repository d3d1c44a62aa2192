"""The evaluation pipeline: every model on the same test pairs, RewardBench file and cycles."""
