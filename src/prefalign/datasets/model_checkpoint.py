"""``ModelCheckpointDataset``: a versioned Kedro dataset for models saved as directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version
from kedro_datasets._typing import JSONPreview

from prefalign.core.models.checkpoint import MARKER_FILE, ModelBundle, load_bundle, save_bundle
from prefalign.datasets.previews import checkpoint_summary


class ModelCheckpointDataset(AbstractVersionedDataset[ModelBundle, ModelBundle]):
    """Saves and loads a ``ModelBundle`` (model + tokenizer) as a ``save_pretrained`` directory.

    ``load`` returns a ready model (eval mode, on ``load_args["device"]``): a causal LM, a
    backbone, or a ``RewardModel``; LoRA checkpoints come back as peft ``PeftModel`` s with their
    adapter loaded (trainable, so a LoRA SFT policy can be trained further).

    Layout of one saved directory (``<filepath>/<version>/<name>/`` when versioned)::

        prefalign_checkpoint.json   {"kind": "causal_lm" | "backbone" | "reward_model",
                                     "metadata": {...}, "lora_adapter": bool}
        tokenizer.json, tokenizer_config.json, ...      the tokenizer it was trained with
        config.json, model.safetensors                  the model (save_pretrained), in one of:
          - causal LM: a plain AutoModelForCausalLM directory;
          - scalar reward model on a decoder: a standard AutoModelForSequenceClassification
            directory (num_labels=1; ``score.weight`` is the reward head) + head_config.json;
          - encoder scalar reward model or GPM: the backbone + head_config.json + head.safetensors;
        adapter_config.json, adapter_model.safetensors, prefalign_lora.json, [base_model/]
            instead of the weights above for LoRA models saved unmerged (``model.lora``; the base
            is referred to by hub id, or saved in base_model/ when it was built from config);
            with ``model.lora.merge_on_save: true`` the plain layouts above are written instead.

    Tensor-level layouts (reward head, GPM): docs/reward.md, "Checkpoint layout". No pickles.
    Any such directory is also loadable outside Kedro with
    ``prefalign.core.models.checkpoint.load_bundle(path)``; causal LMs with plain
    ``AutoModelForCausalLM.from_pretrained(path)`` (LoRA: ``peft.AutoPeftModelForCausalLM`` or
    ``load_bundle``), scalar decoder reward models with
    ``AutoModelForSequenceClassification.from_pretrained(path)``, GPMs with
    ``prefalign.core.reward.scoring.load_preference_model(path)``.

    Example catalog entry:

    .. code-block:: yaml

        "reward_{objective}.model":
          type: prefalign.datasets.model_checkpoint.ModelCheckpointDataset
          filepath: data/06_models/reward_{objective}/model
          versioned: true
          load_args:
            device: cpu
          metadata:
            kedro-viz:
              layer: models

    With ``versioned: true`` each save writes ``<filepath>/<timestamp>/model/`` and
    ``list_versions()`` lists them, newest first.

    Example (Python):

    .. code-block:: python

        from kedro.io.core import Version
        from prefalign.datasets.model_checkpoint import ModelCheckpointDataset

        ds = ModelCheckpointDataset(filepath="data/06_models/my_reward/model", version=Version(None, None))
        ds.save(ModelBundle(model, tokenizer))
        bundle = ds.load()  # bundle.model is in eval mode on load_args["device"]
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Args:
        filepath: local directory (versioned: the parent of the version folders).
        version: Kedro version (load None = latest, save None = new timestamp).
        load_args: ``device`` to put the loaded model on (default ``cpu``).
        metadata: free-form, e.g. kedro-viz layer; not used by the dataset.
        """
        super().__init__(filepath=PurePosixPath(Path(filepath).expanduser().as_posix()), version=version)
        self._load_args = {"device": "cpu", **(load_args or {})}
        unknown = sorted(set(self._load_args) - {"device"})
        if unknown:
            raise DatasetError(f"ModelCheckpointDataset load_args {unknown} are unknown; allowed: ['device']")
        self.metadata = metadata

    def load(self) -> ModelBundle:
        path = Path(self._get_load_path())
        if not (path / MARKER_FILE).exists():
            raise DatasetError(f"no model checkpoint at '{path}' ({MARKER_FILE} missing); run the pipeline that saves it")
        bundle = load_bundle(path, device=self._load_args["device"])
        # which checkpoint of which environment this is (the report names it): the loaded version's folder
        bundle.metadata = {**(bundle.metadata or {}), "checkpoint": str(path)}
        return bundle

    def save(self, data: ModelBundle) -> None:
        if not isinstance(data, ModelBundle):
            raise DatasetError(
                f"ModelCheckpointDataset saves a ModelBundle(model, tokenizer), got {type(data).__name__}"
            )
        path = Path(self._get_save_path())
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        save_bundle(data, partial)
        if path.exists():  # unversioned: replace the previous save
            shutil.rmtree(path)
        partial.rename(path)  # a crash mid-save never leaves a half-written version that looks complete

    def _exists(self) -> bool:
        try:
            path = Path(self._get_load_path())
        except DatasetError:
            return False
        return (path / MARKER_FILE).exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version, "load_args": self._load_args}

    def preview(self) -> JSONPreview:
        """kedro-viz preview: the newest version's kind, metadata (objective, beta, ...),
        architecture and files with sizes, read from its JSON files (the weights are not loaded)."""
        try:
            path = Path(self._get_load_path())
        except DatasetError:
            return JSONPreview(json.dumps({"status": f"no version saved yet under {self._filepath}"}))
        return JSONPreview(json.dumps(self._summary(path)))

    def _summary(self, path: Path) -> dict[str, Any]:
        return checkpoint_summary(path, MARKER_FILE)
