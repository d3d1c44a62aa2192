"""Project settings. See https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

from kedro.config import OmegaConfigLoader

from prefalign.hooks import ParameterCheckHooks, RunSummaryHooks

HOOKS = (ParameterCheckHooks(), RunSummaryHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    # `local` is untracked and holds a user's own overrides; `ci` is the tiny test config.
    "default_run_env": "local",
    # Soft merge: an environment (ci, gpu, local) overrides single keys of a parameter block
    # instead of replacing the whole block.
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
}
