"""Project pipelines: every folder under pipelines/ with a create_pipeline().

`__default__` is all of them but `evaluation_reward`, the evaluation of the reward models alone
(for an environment that trains no policy: `kedro run --env cpu_pretrained --pipelines
evaluation_reward`), whose nodes are a part of `evaluation`'s under the same names."""

import importlib
import pkgutil

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

import prefalign.pipelines

NOT_IN_DEFAULT = ("evaluation_reward",)


def _with_default(pipelines: dict[str, Pipeline]) -> dict[str, Pipeline]:
    pipelines["__default__"] = sum((p for name, p in pipelines.items() if name not in ("__default__", *NOT_IN_DEFAULT)),
                                   Pipeline([]))
    return pipelines


def register_pipelines() -> dict[str, Pipeline]:
    """Kedro's registry; under `kedro run --pipelines X` Kedro builds only the pipelines asked for."""
    return _with_default(find_pipelines(raise_errors=True))


def all_pipelines() -> dict[str, Pipeline]:
    """Every pipeline of the project, whichever ones this run asked Kedro for (the missing-input
    check names the pipeline that makes a missing dataset, hooks.py)."""
    found = {}
    for module in pkgutil.iter_modules(prefalign.pipelines.__path__):
        if module.ispkg:
            found[module.name] = importlib.import_module(f"prefalign.pipelines.{module.name}.pipeline").create_pipeline()
    return _with_default(found)
