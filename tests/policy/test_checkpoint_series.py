"""GPO's per-iteration checkpoints: one versioned directory, one loadable checkpoint per key."""

from __future__ import annotations

import pytest
import torch
from kedro.io.core import DatasetError, Version

from prefalign.datasets.checkpoint_series import ModelCheckpointSeriesDataset


def test_round_trip_lazy_and_versioned(tiny_policy, tmp_path):
    ds = ModelCheckpointSeriesDataset(filepath=str(tmp_path / "iteration_models"), version=Version(None, None))
    ds.save({"iteration_1": tiny_policy, "iteration_2": tiny_policy})
    loaded = ModelCheckpointSeriesDataset(filepath=str(tmp_path / "iteration_models"), version=Version(None, None)).load()
    assert sorted(loaded) == ["iteration_1", "iteration_2"]
    bundle = loaded["iteration_2"]()  # loading is lazy: one model at a time
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        assert torch.allclose(bundle.model(ids).logits, tiny_policy.model.eval()(ids).logits, atol=1e-6)
    assert len(list((tmp_path / "iteration_models").iterdir())) == 1  # one version folder


def test_bad_inputs_are_clear_errors(tiny_policy, tmp_path):
    ds = ModelCheckpointSeriesDataset(filepath=str(tmp_path / "m"), version=Version(None, None))
    with pytest.raises(DatasetError, match="non-empty dict"):
        ds.save({})
    with pytest.raises(DatasetError, match=r"\['../escape'\] are not safe"):
        ds.save({"../escape": tiny_policy})
    with pytest.raises(DatasetError):
        ModelCheckpointSeriesDataset(filepath=str(tmp_path / "none")).load()
