"""Pipeline slice with LoRA: `model.lora` from parameters -> an adapter reward model in the versioned catalog."""

from pathlib import Path

import numpy as np
from kedro.framework.session import KedroSession
from peft import PeftModel

from prefalign.core.reward.scoring import pair_logits
from tests.reward.helpers import toy_pairs_frame


def test_reward_pipeline_with_lora_saves_and_reloads_the_adapter_and_head(kedro_project: Path, run_kedro):
    with KedroSession.create(project_path=kedro_project, env="ci") as session:
        session.load_context().catalog.save("validated_pairs", toy_pairs_frame(48, 16))
    params = {"reward": {"defaults": {"model": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0}}}}}
    outputs = run_kedro("reward", env="ci", namespaces=["reward_bt"], params=params)
    with KedroSession.create(project_path=kedro_project, env="ci", runtime_params=params) as session:
        catalog = session.load_context().catalog
        metrics = catalog.load("reward_bt.metrics")
        bundle = catalog.load("reward_bt.model")
    assert 0 < metrics["trainable_parameters"] < metrics["parameters"] / 2
    assert isinstance(bundle.model.backbone, PeftModel)
    (saved,) = list((kedro_project / "data/06_models/reward_bt/model").iterdir())
    files = {p.name for p in (saved / "model").iterdir()}
    assert {"adapter_model.safetensors", "head.safetensors", "prefalign_lora.json", "base_model"} <= files
    val = toy_pairs_frame(48, 16).filter(split="val")
    logits = pair_logits(bundle.model, bundle.tokenizer, val["prompt"].to_list(), val["chosen"].to_list(), val["rejected"].to_list())
    assert np.isfinite(logits).all() and outputs is not None
