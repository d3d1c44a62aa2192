"""Run-level hooks: parameters checked before the first node, one log line per node (rows in/out,
time), and where a run's reports went."""

from __future__ import annotations

import logging
import time
from typing import Any

import click
from kedro.framework.hooks import hook_impl

logger = logging.getLogger("prefalign")


class InvalidParameters(click.ClickException):
    """A configuration error: click prints ``Error: <message>`` (no traceback) and exits with 1.

    ``kedro run`` and ``python -m prefalign`` run under click, which handles this exception
    type itself; in a notebook or a test it is an ordinary exception with the same message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


class ParameterCheckHooks:
    """Checks every parameter of every selected pipeline before any node runs (so before any
    dataset version is written)."""

    @hook_impl(tryfirst=True)  # before other plugins' before_pipeline_run (e.g. kedro-mlflow starting a run)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        # Imported here, not at module level: settings.py imports this module for every kedro
        # command (even `kedro --help`), and the checks import torch and Great Expectations.
        from prefalign.core.models.params import ParameterError
        from prefalign.pipelines.parameter_checks import check_pipeline_parameters

        params = catalog.load("parameters")
        try:
            checked = check_pipeline_parameters(params, run_params.get("pipeline_names"))
        except ParameterError as error:
            raise InvalidParameters(f"invalid parameters, nothing was run: {error}") from None
        logger.info("parameters of %s checked", ", ".join(checked) or "no known pipeline")


def _describe(value: Any) -> str:
    """A few words on what a node got or gave: rows, keys, items, or the kind of object."""
    height = getattr(value, "height", None)  # polars DataFrame
    if height is not None:
        return f"{height} rows"
    if isinstance(value, dict):
        return f"{len(value)} keys"
    if isinstance(value, (list, tuple)):
        return f"{len(value)} items"
    if callable(value) and not isinstance(value, type) and not hasattr(value, "forward"):
        return "loaded on demand"  # e.g. the raw-records datasets hand the node a loader
    return type(value).__name__


class RunSummaryHooks:
    """Logs, for every node, what went in and out and how long it took."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._saved: list[str] = []

    @hook_impl
    def before_node_run(self, node, inputs: dict[str, Any]) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        took = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        ins = ", ".join(f"{k}={_describe(v)}" for k, v in inputs.items() if not k.startswith("params:"))
        outs = ", ".join(f"{k}={_describe(v)}" for k, v in outputs.items())
        logger.info("node %s took %.1fs | in: %s | out: %s", node.name, took, ins or "-", outs or "-")

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self._saved = []

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        self._saved.append(dataset_name)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result: dict[str, Any], pipeline, catalog) -> None:
        """Ends every run with the files a person reads: each saved dataset of layer `reporting`."""
        written = [(name, _written_path(catalog, name)) for name in self._saved if _layer(catalog, name) == "reporting"]
        written = [(name, path) for name, path in written if path]
        if written:
            logger.info("reports of this run:\n%s", "\n".join(f"  {name}: {path}" for name, path in written))


def _dataset(catalog, name: str):
    try:
        return catalog.get(name)
    except Exception:  # a catalog without .get (older protocol) or an unknown name: nothing to report
        return None


def _layer(catalog, name: str) -> str | None:
    metadata = getattr(_dataset(catalog, name), "metadata", None) or {}
    return (metadata.get("kedro-viz") or {}).get("layer")


def _written_path(catalog, name: str) -> str | None:
    """The file this run wrote: the versioned path when the dataset is versioned."""
    dataset = _dataset(catalog, name)
    for method in ("_get_save_path", "_get_load_path"):  # kedro's versioned datasets resolve the version here
        try:
            return str(getattr(dataset, method)())
        except Exception:
            continue
    filepath = getattr(dataset, "_filepath", None)
    return str(filepath) if filepath else None
