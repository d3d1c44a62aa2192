"""One tiny trained project shared by the lineage, notebook and command tests of this folder.

The expensive part (feedback + validation + the three reward models on the `ci` environment, about
a minute on 2 cores) runs once per test session; each test then reads what that run wrote.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

import pytest

from .project_copy import RUN_LOG, TRAINED_PIPELINES, RunLog, copy_project


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tmp copy of the project after `kedro run --env ci --pipelines feedback,validation,reward`."""
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.runner import SequentialRunner

    project = copy_project(tmp_path_factory.mktemp("lineage") / "project")
    previous = Path.cwd()
    run_log = RunLog()
    os.chdir(project)  # catalog paths are relative to the working directory
    try:
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env="ci") as session:
            logging.getLogger("prefalign").addHandler(run_log)
            # An explicit runner, as `kedro run` passes one: with runner=None kedro-viz takes the run for
            # a non-sequential one and writes no .viz/kedro_pipeline_events.json.
            session.run(pipeline_names=TRAINED_PIPELINES, runner=SequentialRunner())
    finally:
        logging.getLogger("prefalign").removeHandler(run_log)
        pipelines.set_requested(None)  # a run leaves Kedro's lazy pipeline registry filtered to what it ran
        os.chdir(previous)
    (project / RUN_LOG).write_text("\n".join(run_log.lines))
    yield project
