"""Get the FULL raw feedback files (the project ships small samples in data/01_raw) and check them.

Every file of the eight sources is listed in scripts/raw_data_manifest.json with its upstream URL
(a GitHub repository pinned to the commit the project used), its size and its SHA-256, so a
download is checked byte for byte. The folder written has the layout of data/01_raw (same folder
and file names), which the feedback pipeline reads with
`kedro run --pipelines feedback --params raw_data_dir=<DEST>`.

    python scripts/download_raw_data.py --dest data/raw_full                 # all eight sources
    python scripts/download_raw_data.py --dest data/raw_full --sources pandalm hh_rlhf
    python scripts/download_raw_data.py --verify data/raw_full               # offline: checksums only
    python scripts/download_raw_data.py --verify data/01_raw --samples       # the shipped samples

`--verify` needs no network: it checks the files already in a folder against the manifest
(`--samples` uses the manifest's `samples` section, the checksums of the cut shipped in
data/01_raw). Exit status 0 when every listed file that is present matches, 1 otherwise.
`--write-manifest SRC` (maintainers) recomputes the checksums of a full local copy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

MANIFEST = Path(__file__).with_name("raw_data_manifest.json")
CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(path: Path = MANIFEST) -> dict:
    return json.loads(path.read_text())


def manifest_files(manifest: dict, sources: list[str] | None = None, samples: bool = False) -> list[dict]:
    """The file entries (``path``, ``sha256``, ``bytes``, ``url``) of the chosen sources.

    Raises:
        SystemExit: a source name the manifest does not have (naming the known ones).
    """
    section = manifest["samples"] if samples else manifest["sources"]
    unknown = sorted(set(sources or []) - set(section))
    if unknown:
        raise SystemExit(f"unknown source(s) {unknown}; the manifest has {sorted(section)}")
    return [entry for name, body in section.items() if not sources or name in sources for entry in body["files"]]


def verify(folder: Path, entries: list[dict], require_all: bool = False) -> dict[str, list[str]]:
    """Compare the files under ``folder`` with the manifest entries.

    Returns:
        ``{"ok": [...], "mismatch": [...], "missing": [...]}`` of relative paths. A mismatch is a
        file whose size or SHA-256 differs from the manifest's.
    """
    result: dict[str, list[str]] = {"ok": [], "mismatch": [], "missing": []}
    for entry in entries:
        path = folder / entry["path"]
        if not path.is_file():
            result["missing"].append(entry["path"])
        elif path.stat().st_size != entry["bytes"] or sha256_of(path) != entry["sha256"]:
            result["mismatch"].append(entry["path"])
        else:
            result["ok"].append(entry["path"])
    return result


def download(entries: list[dict], dest: Path) -> dict[str, list[str]]:
    """Fetch each file not already present with the right checksum; a file whose checksum does
    not match after download is removed and reported (never left half-checked in ``dest``)."""
    present = set(verify(dest, entries)["ok"])
    for entry in (e for e in entries if e["path"] not in present):
        target = dest / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            with urllib.request.urlopen(entry["url"], timeout=120) as response:  # noqa: S310 (https URLs from the manifest)
                for block in iter(lambda: response.read(CHUNK), b""):
                    tmp.write(block)
        if sha256_of(Path(tmp.name)) != entry["sha256"]:
            Path(tmp.name).unlink()
            print(f"CHECKSUM FAILED {entry['url']}: not written (upstream changed, or a proxy altered it)")
            continue
        Path(tmp.name).replace(target)
        print(f"downloaded {entry['path']} ({entry['bytes']:,} bytes)")
    return verify(dest, entries)


def write_manifest(src: Path, manifest: dict, samples_dir: Path | None) -> dict:
    """Recompute ``bytes`` and ``sha256`` of every listed file from a local full copy ``src``
    (and of the shipped samples from ``samples_dir``)."""
    for body in manifest["sources"].values():
        for entry in body["files"]:
            path = src / entry["path"]
            entry["bytes"], entry["sha256"] = path.stat().st_size, sha256_of(path)
    if samples_dir is not None:
        for name, body in manifest["samples"].items():
            folder = samples_dir / name
            body["files"] = [{"path": str(p.relative_to(samples_dir)), "bytes": p.stat().st_size, "sha256": sha256_of(p)}
                             for p in sorted(folder.rglob("*")) if p.is_file()]
    return manifest


def _report(result: dict[str, list[str]], folder: Path) -> int:
    for path in result["mismatch"]:
        print(f"MISMATCH {folder / path}: size or SHA-256 differs from the manifest")
    print(f"{folder}: {len(result['ok'])} files match, {len(result['mismatch'])} differ, {len(result['missing'])} missing")
    return 1 if result["mismatch"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--dest", type=Path, help="download the full files into this folder (data/01_raw layout)")
    action.add_argument("--verify", type=Path, help="offline: check the files already in this folder")
    action.add_argument("--write-manifest", type=Path, metavar="SRC", help="maintainers: recompute checksums from a full local copy")
    parser.add_argument("--sources", nargs="+", help="only these sources (default: all eight)")
    parser.add_argument("--samples", action="store_true", help="with --verify: check against the shipped samples' checksums")
    parser.add_argument("--require-all", action="store_true", help="with --verify: a missing file is an error too")
    args = parser.parse_args(argv)

    manifest = load_manifest()
    if args.write_manifest:
        samples = Path(__file__).resolve().parents[1] / "data" / "01_raw"
        MANIFEST.write_text(json.dumps(write_manifest(args.write_manifest, manifest, samples), indent=1) + "\n")
        print(f"wrote {MANIFEST}")
        return 0
    entries = manifest_files(manifest, args.sources, samples=args.samples)
    if args.verify:
        result = verify(args.verify, entries)
        status = _report(result, args.verify)
        if args.require_all and result["missing"]:
            for path in result["missing"]:
                print(f"MISSING {args.verify / path}")
            status = 1
        return status
    return _report(download(entries, args.dest), args.dest)


if __name__ == "__main__":
    sys.exit(main())
