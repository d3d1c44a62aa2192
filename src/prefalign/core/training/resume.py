"""Where an interrupted training run resumes from, and the clean-up once it has finished.

The loop (``core/training/loop.py``) resumes from the newest checkpoint in its ``output_dir``. A
run's folder is named by a fingerprint of everything that changes the run (parameters, the pairs
and their soft targets, the starting weights), so a killed run started again resumes, and a run
with other parameters or data starts fresh. A finished run's model goes to the versioned catalog;
its resumable state is then dropped, so the next run with the same inputs trains again rather than
silently restoring a finished state.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import polars as pl
import torch


def resumable_run_dir(
    base: str | Path,
    name: str,
    params: Any,
    pair_frames: Sequence[pl.DataFrame],
    start_model: torch.nn.Module | None = None,
) -> Path:
    """``base/<name>_<fingerprint>`` of ``params`` (JSON-able), the frames' pair_id and p_chosen
    columns, and a cheap checksum of the starting weights.

    Args:
        base: the folder holding resumable runs.
        name: the run's name prefix (e.g. the objective).
        params: the run's parameters (JSON-serialisable; other values are hashed by ``str``).
        pair_frames: the training/validation pairs tables (each needs ``pair_id`` and ``p_chosen``).
        start_model: the model training starts from; the first 64 KiB of its first four state-dict
            tensors enter the fingerprint. None = weights not fingerprinted.

    Returns:
        ``base/<name>_<16 hex characters>`` (not created here).
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for frame in pair_frames:
        h.update("|".join(frame["pair_id"].to_list()).encode())
        h.update(frame["p_chosen"].to_numpy().tobytes())
    if start_model is not None:
        for tensor in list(start_model.state_dict().values())[:4]:
            h.update(tensor.detach().float().cpu().numpy().tobytes()[:65536])
    return Path(base) / f"{name}_{h.hexdigest()}"


def discard_checkpoints(run_dir: str | Path) -> None:
    """The run is complete and its model is in the catalog: drop its resumable checkpoints.

    Args:
        run_dir: the run's folder (its ``checkpoints`` subfolder is removed; a missing one is fine).
    """
    shutil.rmtree(Path(run_dir) / "checkpoints", ignore_errors=True)
