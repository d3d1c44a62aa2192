"""Trained vs total parameters with and without LoRA (model.lora), and export/save-load equality.

    python benchmarks/lora_parameters.py

Counts for a scalar reward model and a policy at the test and default CPU sizes (r = 4, 16, all
linear layers), and for the Llama-3.1-8B shape built on the meta device (no weights, no download).
Then the reward equality numbers: max |prefalign - plain transformers| on an exported
LlamaForSequenceClassification, and max |before - after| a LoRA save -> load. Not collected by pytest.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.reward.helpers: the toy tokenizer

from prefalign.core.models import build_backbone, build_causal_lm  # noqa: E402
from prefalign.core.models.checkpoint import ModelBundle, load_bundle, save_bundle  # noqa: E402
from prefalign.core.models.lora import LoraSettings, apply_lora, trainable_parameters  # noqa: E402
from prefalign.core.reward import scoring  # noqa: E402
from prefalign.core.reward.model import RewardModel  # noqa: E402
from prefalign.core.training.batching import tokenize_sequences  # noqa: E402
from tests.reward.helpers import TINY_MODEL, toy_pairs, toy_tokenizer  # noqa: E402

SIZES = {"test tiny (h32, 1 layer)": TINY_MODEL, "default CPU (h64, 2 layers)": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 256}}


def counts(tok) -> None:
    for name, sizes in SIZES.items():
        for r in (None, 4, 16):
            lora = None if r is None else {"r": r, "alpha": 2 * r}
            rm = RewardModel(build_backbone({**sizes, "lora": lora}, tok), {"head": "scalar"})
            lm = build_causal_lm({**sizes, "lora": lora}, tok)
            print(f"{name:28s} lora r={r}: reward trained/total {trainable_parameters(rm)}, policy {trainable_parameters(lm)}")
    config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8)
    with torch.device("meta"):
        rm = RewardModel(apply_lora(AutoModel.from_config(config), LoraSettings(r=16, alpha=32), causal_lm=False), {"head": "scalar"})
    t, n = trainable_parameters(rm)
    print(f"Llama-3.1-8B shape, reward model, LoRA r=16 all-linear: trained {t:,} of {n:,} ({100 * t / n:.3f} %)")


def equality(tok) -> None:
    prompts, chosen, _ = toy_pairs(32, seed=3)
    seqs = tokenize_sequences(tok, prompts, chosen, 48, 24)
    enc = tok.pad({"input_ids": [s.input_ids for s in seqs]}, return_tensors="pt")
    for lora in (None, {"r": 4, "alpha": 8, "dropout": 0.0}):
        model = RewardModel(build_backbone({**TINY_MODEL, "lora": lora}, tok), {"head": "scalar", "max_length": 48, "max_prompt_length": 24}).eval()
        torch.manual_seed(1)
        for n, p in model.named_parameters():
            if "lora_B" in n:  # as if trained: otherwise LoRA is the identity
                torch.nn.init.normal_(p, std=0.1)
        ours = scoring.response_rewards(model, tok, prompts, chosen)
        with tempfile.TemporaryDirectory() as d:
            model.export_sequence_classifier(Path(d) / "export")
            hf = AutoModelForSequenceClassification.from_pretrained(Path(d) / "export").eval()
            with torch.no_grad():
                theirs = hf(**enc).logits[:, 0].double().numpy()
            save_bundle(ModelBundle(model, tok), Path(d) / "saved")
            back = scoring.response_rewards(load_bundle(Path(d) / "saved").model, tok, prompts, chosen)
        label = "LoRA r=4 (export merges)" if lora else "full"
        print(f"{label}: 32 padded sequences, max |prefalign - transformers| = {np.abs(ours - theirs).max():.3g}; "
              f"max |before - after save/load| = {np.abs(ours - back).max():.3g}")


if __name__ == "__main__":
    tokenizer = toy_tokenizer()
    counts(tokenizer)
    equality(tokenizer)
