"""Run-level hooks: one log line per node (rows in/out, time)."""

from __future__ import annotations

import logging
import time
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger("prefalign")


def _describe(value: Any) -> str:
    height = getattr(value, "height", None)  # polars DataFrame
    if height is not None:
        return f"{height} rows"
    if isinstance(value, dict):
        return f"{len(value)} keys"
    return type(value).__name__


class RunSummaryHooks:
    """Logs, for every node, what went in and out and how long it took."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    @hook_impl
    def before_node_run(self, node, inputs: dict[str, Any]) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        took = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        ins = ", ".join(f"{k}={_describe(v)}" for k, v in inputs.items() if not k.startswith("params:"))
        outs = ", ".join(f"{k}={_describe(v)}" for k, v in outputs.items())
        logger.info("node %s took %.1fs | in: %s | out: %s", node.name, took, ins or "-", outs or "-")
