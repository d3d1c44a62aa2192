"""scripts/download_raw_data.py offline: the manifest names every source's upstream file with a
checksum, and --verify finds a changed or missing file (no network in these tests)."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"ultrafeedback_sample", "tulu2_bon", "alpaca_eval", "arena_bench_v1", "vicuna_eval",
           "prometheus_ratings", "hh_rlhf", "pandalm"}


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("download_raw_data", ROOT / "scripts" / "download_raw_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_names_upstream_and_checksum_of_every_file(script):
    manifest = script.load_manifest()
    assert set(manifest["sources"]) == SOURCES == set(manifest["samples"])
    for name, body in manifest["sources"].items():
        assert body["files"], name
        for entry in body["files"]:
            assert entry["url"].startswith(f"https://raw.githubusercontent.com/{body['repository'].removeprefix('https://github.com/')}/{body['commit']}/")
            assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) and entry["bytes"] > 0
            assert entry["path"].startswith(f"{name}/")


def test_shipped_samples_match_their_checksums(script):
    result = script.verify(ROOT / "data" / "01_raw", script.manifest_files(script.load_manifest(), samples=True))
    assert not result["mismatch"] and not result["missing"] and len(result["ok"]) > 50


def test_verify_finds_a_changed_and_a_missing_file(script, tmp_path: Path, capsys):
    copy = tmp_path / "raw"
    shutil.copytree(ROOT / "data" / "01_raw" / "pandalm", copy / "pandalm")
    args = ["--verify", str(copy), "--samples", "--sources", "pandalm", "--require-all"]
    assert script.main(args) == 0
    changed = copy / "pandalm" / "testset-v1.json"
    changed.write_bytes(changed.read_bytes().replace(b"1", b"2", 1))  # same size, other bytes
    assert script.main(args) == 1
    assert "MISMATCH" in capsys.readouterr().out
    changed.unlink()
    (copy / "pandalm" / "LICENSE").unlink()
    result = script.verify(copy, script.manifest_files(script.load_manifest(), ["pandalm"], samples=True))
    assert sorted(result["missing"]) == ["pandalm/LICENSE", "pandalm/testset-v1.json"]
    assert script.main(args) == 1  # --require-all: missing is an error


def test_an_unknown_source_is_named(script):
    with pytest.raises(SystemExit, match="unknown source.*pandalmm.*the manifest has"):
        script.manifest_files(script.load_manifest(), ["pandalmm"])
