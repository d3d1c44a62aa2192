from pathlib import Path

import pytest
import torch
from kedro.io.core import DatasetError, Version
from transformers import AutoModelForCausalLM

from prefalign.core.models import build_backbone, build_causal_lm
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.datasets.model_checkpoint import ModelCheckpointDataset
from tests.reward.helpers import TINY_MODEL, toy_tokenizer


def test_versioned_causal_lm_round_trip_and_versions(tmp_path: Path):
    tok = toy_tokenizer()
    ds = ModelCheckpointDataset(filepath=str(tmp_path / "policy_sft" / "model"), version=Version(None, None))
    assert not ds.exists()
    lm = build_causal_lm(TINY_MODEL, tok).eval()
    ds.save(ModelBundle(lm, tok, {"objective": "sft"}))
    assert ds.exists()
    saved_dir = Path(ds.list_versions()[0])
    assert (saved_dir / "model.safetensors").exists() and (saved_dir / "tokenizer.json").exists()
    assert not list(saved_dir.rglob("*.bin")) and not list(saved_dir.rglob("*.pkl"))  # no pickles

    bundle = ModelCheckpointDataset(filepath=str(tmp_path / "policy_sft" / "model"), version=Version(None, None)).load()
    ids = torch.tensor([tok("great kind")["input_ids"]])
    assert isinstance(bundle.model, type(lm)) and not bundle.model.training
    assert torch.allclose(bundle.model(ids).logits, lm(ids).logits, atol=1e-6)
    assert bundle.tokenizer("great kind")["input_ids"] == tok("great kind")["input_ids"]
    # the metadata as saved, plus which checkpoint (environment folder and version) was loaded
    assert bundle.metadata == {"objective": "sft", "checkpoint": str(saved_dir)}
    # plain transformers can read it too
    assert isinstance(AutoModelForCausalLM.from_pretrained(saved_dir), type(lm))

    lm2 = build_causal_lm({**TINY_MODEL, "seed": 1}, tok)
    ds2 = ModelCheckpointDataset(filepath=str(tmp_path / "policy_sft" / "model"), version=Version(None, None))
    ds2.save(ModelBundle(lm2, tok))
    versions = ds2.list_versions(full_path=False)
    assert len(versions) == 2 and versions[0] > versions[1]
    older = ModelCheckpointDataset(filepath=str(tmp_path / "policy_sft" / "model"), version=Version(versions[1], None)).load()
    assert torch.allclose(older.model(ids).logits, lm(ids).logits, atol=1e-6)


def test_backbone_round_trip_unversioned(tmp_path: Path):
    tok = toy_tokenizer()
    ds = ModelCheckpointDataset(filepath=str(tmp_path / "backbone"))
    model = build_backbone(TINY_MODEL, tok)
    ds.save(ModelBundle(model, tok))
    ds.save(ModelBundle(model, tok))  # unversioned: overwrites
    assert type(ds.load().model) is type(model)


def test_bad_inputs_fail_clearly(tmp_path: Path):
    ds = ModelCheckpointDataset(filepath=str(tmp_path / "m"), version=Version(None, None))
    with pytest.raises(DatasetError, match="ModelBundle"):
        ds.save(torch.nn.Linear(2, 2))
    with pytest.raises(DatasetError, match="versions"):
        ds.load()
    with pytest.raises(DatasetError, match="load_args"):
        ModelCheckpointDataset(filepath=str(tmp_path / "m"), load_args={"dtype": "x"})
