"""``ModelCheckpointSeriesDataset``: several model checkpoints saved together as one version.

GPO trains T policies in one node (iteration 1..T); a person wants each back. This dataset saves a
``dict[str, ModelBundle]`` as one sub-directory per key inside one versioned directory, each
sub-directory a complete checkpoint in the format of ``ModelCheckpointDataset``
(``prefalign.core.models.checkpoint.save_bundle``: safetensors + config + tokenizer).

Example catalog entry:

.. code-block:: yaml

    "policy_{name}.iteration_models":
      type: prefalign.datasets.checkpoint_series.ModelCheckpointSeriesDataset
      filepath: data/06_models/policy_{name}/iteration_models
      versioned: true

Saving ``{"iteration_1": bundle1, "iteration_2": bundle2}`` writes
``<filepath>/<timestamp>/iteration_models/iteration_1/`` and ``.../iteration_2/``. ``load`` returns
``{"iteration_1": <callable>, ...}``: call one to load that checkpoint (lazily, like
PartitionedDataset, so T models are not all in memory at once). One checkpoint is also loadable
alone with ``load_bundle(path)`` or, for causal LMs, ``AutoModelForCausalLM.from_pretrained(path)``.
"""

from __future__ import annotations

import re
import shutil
from functools import partial
from pathlib import Path
from typing import Callable

from kedro.io.core import DatasetError

from prefalign.core.models.checkpoint import MARKER_FILE, ModelBundle, load_bundle, save_bundle
from prefalign.datasets.model_checkpoint import ModelCheckpointDataset
from prefalign.datasets.previews import checkpoint_summary

_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


class ModelCheckpointSeriesDataset(ModelCheckpointDataset):
    """A dict of ``ModelBundle``s saved as sibling checkpoint directories of one version.

    Arguments as ``ModelCheckpointDataset`` (filepath, version, load_args ``device``, metadata).
    """

    def _summary(self, path: Path) -> dict:
        """The preview: one checkpoint summary per key (e.g. per GPO iteration)."""
        keys = sorted(p.name for p in path.iterdir() if (p / MARKER_FILE).exists()) if path.is_dir() else []
        return {"path": str(path), "checkpoints": {key: checkpoint_summary(path / key, MARKER_FILE) for key in keys}}

    def load(self) -> dict[str, Callable[[], ModelBundle]]:  # type: ignore[override]
        path = Path(self._get_load_path())
        keys = sorted(p.name for p in path.iterdir() if (p / MARKER_FILE).exists()) if path.is_dir() else []
        if not keys:
            raise DatasetError(f"no model checkpoints under '{path}'; run the pipeline that saves them")
        return {key: partial(load_bundle, path / key, device=self._load_args["device"]) for key in keys}

    def save(self, data: dict[str, ModelBundle]) -> None:  # type: ignore[override]
        if not isinstance(data, dict) or not data or not all(isinstance(v, ModelBundle) for v in data.values()):
            raise DatasetError("ModelCheckpointSeriesDataset saves a non-empty dict[str, ModelBundle]")
        bad = [k for k in data if not _KEY.match(k)]
        if bad:
            raise DatasetError(f"checkpoint names {bad} are not safe directory names (use letters, digits, _ . -)")
        path = Path(self._get_save_path())
        partial_dir = path.with_name(path.name + ".partial")
        shutil.rmtree(partial_dir, ignore_errors=True)
        for key, bundle in data.items():
            save_bundle(bundle, partial_dir / key)
        if path.exists():  # unversioned: replace the previous save
            shutil.rmtree(path)
        partial_dir.rename(path)  # never a half-written version that looks complete

    def _exists(self) -> bool:
        try:
            path = Path(self._get_load_path())
        except DatasetError:
            return False
        return path.is_dir() and any((p / MARKER_FILE).exists() for p in path.iterdir())
