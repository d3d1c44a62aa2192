"""Objectives: the one soft-label logistic loss (docs/methods.md s2) and the objective registry."""
