"""Project settings. See https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

import warnings

# Two warnings a run cannot act on, silenced here (settings.py is imported before both fire):
# - kedro's OmegaConfigLoader (and kedro-mlflow) still call OmegaConf.register_new_resolver,
#   which OmegaConf deprecated; the call is inside those packages, not in this project.
# - kedro flags any dotted dataset name used outside its own namespace, which every consumer of
#   another namespace's output does by design here (policy_dpo reads policy_sft.model, policy_gpo
#   reads reward_gpm.model): that is Kedro's documented modular-pipeline wiring.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message=r"One or more dataset names contain '\.' characters", category=UserWarning)

from pathlib import Path

from kedro.config import OmegaConfigLoader

from prefalign.console import rich_logging_in_terminal

# Rich log output in a terminal; plain unwrapped lines when redirected (conf/logging.yml), without
# colour codes and without mlflow's warning about its own classes (console.PlainText).
rich_logging_in_terminal()

from prefalign.hooks import EnvironmentObjectivesHooks, MlflowTrackingHooks, ParameterCheckHooks, RunSummaryHooks, VizStatsHooks

HOOKS = (EnvironmentObjectivesHooks(), ParameterCheckHooks(), RunSummaryHooks(), VizStatsHooks(), MlflowTrackingHooks())



def project_root() -> str:
    """The Kedro project folder around the working directory (a notebook runs in notebooks/).

    Used as ``${project_root:}`` in conf/base/mlflow.yml, so the tracking store is the project's
    mlruns/ whether a run starts in the project folder or a notebook in notebooks/ (a relative
    sqlite URI would give each working directory its own store).
    """
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "[tool.kedro]" in pyproject.read_text(encoding="utf-8"):
            return str(folder)
    return str(here)


CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    # `local` is untracked and holds a user's own overrides; `ci` is the tiny test config.
    "default_run_env": "local",
    # Soft merge: an environment (ci, gpu, local) overrides single keys of a parameter block
    # instead of replacing the whole block.
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
    "custom_resolvers": {"project_root": project_root},
}
