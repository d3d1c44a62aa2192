"""Reward models: losses (BT, margin offset, MMPO, centering), scalar and GPM heads, scoring API."""
