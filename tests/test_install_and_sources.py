"""What a new user copies: the README's install commands (CPU torch from PyTorch's CPU index,
the same in .ci/run), kedro-datasets extras that exist, no paths of the development machine."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import metadata
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
TORCH_CPU = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"


def test_readme_installs_the_cpu_torch_from_the_pytorch_cpu_index():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(first_block) == 2
    for command in first_block:
        steps = [step.strip() for step in command.split("&&")]
        assert TORCH_CPU in steps, command
        assert steps.index(TORCH_CPU) < next(i for i, s in enumerate(steps) if s.startswith("pip install -e"))


def test_ci_script_runs_the_readme_second_command():
    readme = (ROOT / "README.md").read_text()
    second = readme.split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()[1]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    for step in [s.strip() for s in second.split("&&")][2:]:  # after venv creation and activation
        assert step in ci, f".ci/run lacks the README step {step!r}"


def test_kedro_datasets_extras_exist_in_the_installed_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = next(d for d in project["dependencies"] if d.startswith("kedro-datasets["))
    wanted = set(re.search(r"\[(.*)\]", spec).group(1).split(","))
    provided = set(metadata("kedro-datasets").get_all("Provides-Extra"))
    assert wanted <= provided, f"kedro-datasets does not provide {sorted(wanted - provided)}"


def test_no_tracked_file_names_the_development_machine():
    tracked = subprocess.run(["git", "grep", "-l", "/work/shared", "--", ".", ":!tests/test_install_and_sources.py"],
                             cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode not in (0, 1):  # 1: no match; anything else: not a git checkout
        pytest.skip(f"git grep unavailable: {tracked.stderr.strip()}")
    assert tracked.stdout.strip() == "", f"files naming /work/shared: {tracked.stdout}"
