"""Run-level hooks: parameters checked before the first node, one log line per node (rows in/out,
time), and where a run's reports went."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
import logging
import math
import re
import time
from pathlib import Path
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


class EnvironmentObjectivesHooks:
    """Builds the pipelines for the objectives the run environment declares (``objectives`` parameter).

    Runs when the context is created, before Kedro first registers the pipelines for the run, so an
    environment that lists ``objectives: {reward: [bt, mmpo, gpm]}`` has no node of any other reward
    objective: `kedro run --env <env>` trains and evaluates exactly those (pipelines/__init__.py).
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        from kedro.framework.project import PACKAGE_NAME, pipelines

        from prefalign.pipelines import declare_judge, declare_objectives

        params = context.config_loader["parameters"]
        judge = ((params.get("evaluation") or {}).get("generation") or {}).get("judge")
        try:
            changed = declare_objectives(params.get("objectives"))
            changed = declare_judge(judge) or changed
        except ValueError as error:
            raise InvalidParameters(f"invalid parameters, nothing was run: {error}") from None
        if changed and PACKAGE_NAME:
            pipelines.configure(f"{PACKAGE_NAME}.pipeline_registry")  # registered again, with the declared objectives


class ParameterCheckHooks:
    """Before any node runs (so before any dataset version is written): every parameter of every
    selected pipeline, the user tables against their folder, and every input the run will load."""

    @hook_impl
    def after_context_created(self, context) -> None:
        # Start-up lines before the slow steps (loading the pipelines, then the checks below, import
        # torch, transformers and Great Expectations: 12 s of silence in a `--env ci --pipelines
        # feedback` run on a shared 2-core CPU), instead of a pause that looks like a hang.
        logger.info("loading the pipelines...")

    @hook_impl(tryfirst=True)  # before other plugins' before_pipeline_run (e.g. kedro-mlflow starting a run)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        logger.info("checking the parameters and inputs of %s (importing torch first)...",
                    ", ".join(run_params.get("pipeline_names") or ["__default__"]))
        # Imported here, not at module level: settings.py imports this module for every kedro
        # command (even `kedro --help`), and the checks import torch and Great Expectations.
        from prefalign.core.models.params import ParameterError
        from prefalign.pipelines.parameter_checks import check_pipeline_parameters, check_user_tables

        params = catalog.load("parameters")
        try:
            checked = check_pipeline_parameters(params, run_params.get("pipeline_names"))
            unread = check_user_tables(params, _tables_folder(catalog)) if "feedback" in checked else []
        except ParameterError as error:
            raise InvalidParameters(f"invalid parameters, nothing was run: {error}") from None
        logger.info("parameters of %s checked", ", ".join(checked) or "no known pipeline")
        if unread:
            logger.warning(
                "%d file(s) in %s are read by no source: %s. Add a `parser: preference_table` block naming each "
                "under feedback.sources (README, \"Bring your own preference table\"); a block in conf/local is "
                "not loaded when another environment is named (--env %s)",
                len(unread), _tables_folder(catalog), ", ".join(unread), run_params.get("env") or "local")
        if not run_params.get("only_missing_outputs"):  # then Kedro skips nodes whose outputs exist: inputs differ
            _check_inputs(pipeline, catalog, run_params)


def _tables_folder(catalog) -> str:
    """The user-tables folder as the catalog resolved it (``--params raw_data_dir`` applied)."""
    dataset = _dataset(catalog, "raw_tables")
    return str(getattr(dataset, "folder", None) or "data/01_raw/tables")


def _check_inputs(pipeline, catalog, run_params: dict[str, Any]) -> None:
    from prefalign.pipeline_registry import all_pipelines
    from prefalign.pipelines.input_checks import missing_inputs, missing_inputs_message

    missing = missing_inputs(pipeline, catalog)
    if missing:
        raise InvalidParameters(missing_inputs_message(pipeline, missing, all_pipelines(), catalog, run_params))


def _describe(value: Any) -> str:
    """A few words on what a node got or gave: rows, keys, items, or the kind of object."""
    height = getattr(value, "height", None)  # polars DataFrame
    if height is not None:
        return f"{height} rows"
    if isinstance(value, dict):
        return f"{len(value)} keys"
    if isinstance(value, (list, tuple)):
        return f"{len(value)} items"
    if inspect.isroutine(value) or isinstance(value, functools.partial) or hasattr(value, "chunks"):
        return "loaded on demand"  # e.g. the raw-records datasets hand the node a loader
    return type(value).__name__


def _clear_progress_label() -> None:
    from prefalign.core.training.progress import set_label

    set_label(None)


class RunSummaryHooks:
    """Logs, for every node, what went in and out and how long it took."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._saved: list[str] = []

    @hook_impl
    def before_node_run(self, node, inputs: dict[str, Any]) -> None:
        from prefalign.core.training.progress import set_label

        self._started[node.name] = time.perf_counter()
        set_label(node.namespace or node.name)  # progress lines name the model: "reward_bt train 484/600 ..."

    @hook_impl
    def after_node_run(self, node, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        took = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        ins = ", ".join(f"{k}={_describe(v)}" for k, v in inputs.items() if not k.startswith("params:"))
        outs = ", ".join(f"{k}={_describe(v)}" for k, v in outputs.items())
        logger.info("node %s took %.1fs | in: %s | out: %s", node.name, took, ins or "-", outs or "-")
        _clear_progress_label()

    @hook_impl
    def on_node_error(self, error: Exception, node, catalog) -> None:
        _clear_progress_label()
        _name_the_validation_report(error, catalog)

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


def _name_the_validation_report(error: Exception, catalog) -> None:
    """A validation stop names the report file the catalog wrote (its versioned path), so no parameter
    repeats the catalog's path: the error's message is made again with it, in place (Kedro re-raises it)."""
    from prefalign.core.validation import stop_message
    from prefalign.pipelines.validation.nodes import ValidationError

    results = getattr(error, "results", None)
    path = _written_path(catalog, "validation_report") if isinstance(error, ValidationError) and results else None
    if path:
        error.args = (stop_message(results, path),)


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


class VizStatsHooks:
    """Rows, columns and file size of every polars table a run loads or saves, added to the
    ``.viz/stats.json`` that kedro-viz's own hook writes (it counts pandas frames only, so the
    preview panel showed "N/A rows" for every table here). Written also without kedro-viz
    installed: a run made before ``pip install -e ".[viz]"`` (the README's order) still leaves
    the stats that ``kedro viz run`` shows later."""

    def __init__(self) -> None:
        self._stats: dict[str, dict[str, int]] = {}

    def _record(self, name: str, data: Any) -> None:
        height = getattr(data, "height", None)
        if not isinstance(height, int):  # a LazyFrame has no height; its .width would resolve the schema (a warning)
            return
        width = getattr(data, "width", None)
        if isinstance(width, int):
            self._stats[name] = {"rows": height, "columns": width}

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self._stats = {}

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any) -> None:
        self._record(dataset_name, data)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        self._record(dataset_name, data)

    @hook_impl(trylast=True)  # after kedro-viz's after_pipeline_run has written its stats.json
    def after_pipeline_run(self, run_params: dict[str, Any], catalog) -> None:
        if not self._stats:
            return
        try:
            from kedro_viz.constants import VIZ_METADATA_ARGS

            folder = VIZ_METADATA_ARGS["path"]
        except ImportError:
            folder = VIZ_FOLDER
        path = Path(run_params.get("project_path") or ".") / folder / "stats.json"
        stats = json.loads(path.read_text()) if path.is_file() else {}
        for name, counts in self._stats.items():
            entry = stats.setdefault(name, {})
            entry.update(counts)
            written = _written_path(catalog, name)
            if written and Path(written).is_file():
                entry["file_size"] = Path(written).stat().st_size
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stats))


VIZ_FOLDER = ".viz"  # kedro_viz.constants.VIZ_METADATA_ARGS["path"] (kedro-viz 10-12)


_METRIC_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def flat_metrics(values: Any, prefix: str = "") -> dict[str, float]:
    """Every finite number in a nested dict, keyed by its dotted path (``val.accuracy``); bools,
    strings, lists and NaN are left out (MLflow metrics are finite floats), and characters MLflow
    refuses in a key (anything but letters, digits, ``_ - . /`` and space) become ``_``."""
    out: dict[str, float] = {}
    if isinstance(values, dict):
        for key, value in values.items():
            key = _METRIC_KEY_UNSAFE.sub("_", str(key))
            out.update(flat_metrics(value, f"{prefix}.{key}" if prefix else key))
    elif isinstance(values, (int, float)) and not isinstance(values, bool) and math.isfinite(values):
        out[prefix] = float(values)
    return out


def final_metrics(values: dict[str, Any], prefix: str) -> dict[str, float]:
    """The finite numbers among the TOP-LEVEL keys of a metrics dict, as ``<prefix>.<key>``; nested
    dicts (per-split details, truncation counts) are left out."""
    return flat_metrics({key: value for key, value in values.items() if not isinstance(value, dict)}, prefix)


def comparison_metrics(table: Any, prefix: str = "evaluation") -> dict[str, float]:
    """Each finite number of the comparison table (one row per evaluated set and model) as
    ``<prefix>.<set>.<model>.<column>``; interval bounds (columns ending ``_low`` / ``_high``) are
    left out: they are in the table artifact."""
    out: dict[str, float] = {}
    for row in table.to_dicts():
        values = {column: value for column, value in row.items()
                  if column not in ("set", "model") and not column.endswith(("_low", "_high"))}
        out.update(flat_metrics(values, f"{prefix}.{row.get('set')}.{row.get('model')}"))
    return out


def curve_rows(curve: Any) -> list[dict[str, Any]]:
    """A training curve as row dicts, whether a node returned a polars frame or a list of dicts."""
    if hasattr(curve, "to_dicts"):
        return curve.to_dicts()
    return list(curve) if isinstance(curve, (list, tuple)) else []


class MlflowTrackingHooks:
    """With kedro-mlflow installed (``pip install -e ".[mlflow]"``), kedro-mlflow opens one MLflow
    run per ``kedro run`` and logs every node's parameters; this hook adds what a person compares
    between runs, and nothing else (every nested key of every metrics JSON was 8,150 metrics per
    ci run, which made the MLflow UI unusable):

    * ``<namespace>.training_curve``: every numeric column as a metric series over ``step``
      (``reward_bt.curve.train_loss``, ``policy_dpo.curve.val_loss``, ...);
    * ``<namespace>.metrics``: the training node's final numbers, its top-level keys only
      (``reward_bt.val_accuracy``, ``policy_dpo.val_implicit_accuracy``; the nested details stay in
      the versioned metrics JSON);
    * ``evaluation_comparison``: each value of the comparison table as a final metric
      ``evaluation.<set>.<model>.<column>`` (interval bounds left out), and the table itself as
      the artifacts ``evaluation_comparison.json`` and ``evaluation_comparison.csv``;
    * every saved ``*.model`` checkpoint: a tag ``catalog.<dataset>`` with its versioned path
      (the weights stay in the catalog, not copied into MLflow).

    Without kedro-mlflow or mlflow importable, or without an active run, every method returns at
    once: training is unchanged.
    """

    def __init__(self) -> None:
        self._pending_models: list[str] = []
        self.enabled = all(importlib.util.find_spec(m) is not None for m in ("mlflow", "kedro_mlflow"))

    def _active(self) -> Any:
        if not self.enabled:
            return None
        import mlflow

        return mlflow if mlflow.active_run() is not None else None

    @hook_impl
    def after_node_run(self, node, outputs: dict[str, Any]) -> None:
        mlflow = self._active()
        if mlflow is None:
            return
        try:
            self._log_outputs(mlflow, outputs)
        except Exception as error:  # tracking must never fail a run whose outputs are saved
            logger.warning("MLflow logging of node %s failed: %s: %s", getattr(node, "name", node), type(error).__name__, error)

    def _log_outputs(self, mlflow: Any, outputs: dict[str, Any]) -> None:
        for name, value in outputs.items():
            if name.endswith(".training_curve"):
                self._log_curve(mlflow, name.rsplit(".", 1)[0], value)
            elif name.endswith(".metrics") and isinstance(value, dict):
                mlflow.log_metrics(final_metrics(value, name.rsplit(".", 1)[0]))
            elif name == "evaluation_comparison" and hasattr(value, "to_dicts"):
                mlflow.log_metrics(comparison_metrics(value))
                mlflow.log_dict(value.to_dicts(), "evaluation_comparison.json")
                mlflow.log_text(value.write_csv(), "evaluation_comparison.csv")

    @staticmethod
    def _log_curve(mlflow: Any, prefix: str, curve: Any) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}.curve.{key}", value, now, int(row["step"]))
                   for row in curve_rows(curve) if "step" in row
                   for key, value in flat_metrics({k: v for k, v in row.items() if k != "step"}).items()]
        client, run_id = MlflowClient(), mlflow.active_run().info.run_id
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            client.log_batch(run_id, metrics=metrics[start:start + 1000])

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        if not dataset_name.endswith(".model") and not dataset_name.endswith(".iteration_models"):
            return
        mlflow = self._active()
        if mlflow is not None:
            self._pending_models.append(dataset_name)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self._pending_models: list[str] = []

    @hook_impl(tryfirst=True)  # before kedro-mlflow ends the run
    def after_pipeline_run(self, run_params: dict[str, Any], catalog) -> None:
        mlflow = self._active()
        if mlflow is None:
            return
        for name in self._pending_models:
            path = _written_path(catalog, name)
            if path:
                mlflow.set_tag(f"catalog.{name}", path)
