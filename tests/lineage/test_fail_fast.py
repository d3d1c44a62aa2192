"""`kedro run` with a bad parameter fails before the first node: one `Error:` line naming the key
and the value, no traceback, a non-zero exit, nothing new under data/, in a few seconds."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .project_copy import copy_project, subprocess_env

CASES = [
    pytest.param("policy", "policy.dpo.objective.beta=-1", ["policy.dpo", "objective.beta=-1", "must be > 0"], id="beta"),
    pytest.param("reward", "reward.defaults.training.max_steps=fast",
                 ["training.max_steps='fast'", "wrong type (str)", "must be int"], id="max-steps-type"),
    pytest.param("reward", "reward.defaults.training.max_step=5",
                 ["training.max_step", "did you mean training.max_steps?"], id="max-step-typo"),
]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize(("pipeline", "param", "expected"), CASES)
def test_bad_parameter_fails_before_any_node(tmp_path: Path, pipeline: str, param: str, expected: list[str]):
    project = copy_project(tmp_path / "project")
    before = _files(project / "data")
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--env", "ci", "--pipelines", pipeline, "--params", param],
        cwd=project, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    output = result.stdout + result.stderr
    print(f"{param}: exit {result.returncode}, {wall:.1f} s wall, {cpu:.1f} s CPU")
    assert result.returncode != 0
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    assert "Traceback" not in output and "Running node" not in output, output[-3000:]
    assert _files(project / "data") == before  # no dataset version was written
    # CPU seconds, not wall: the machine running the tests may be shared (wall is printed above).
    assert cpu < 15, f"failing took {cpu:.1f} s of CPU ({wall:.1f} s wall)"
