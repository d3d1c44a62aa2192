"""The policy tests' tiny pairs and tiny policy, reused by the packed-run tests."""

from tests.policy.conftest import tiny_pairs, tiny_policy  # noqa: F401  (pytest fixtures)
