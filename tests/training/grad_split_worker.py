"""Run under ``accelerate launch`` (2 CPU processes, gloo): one step of every objective split across
processes; the main process saves the losses and gradients to ``<work_dir>/result.pt``.

Splits (pairs, global micro-batch, accumulation): (4, 4, 1): 2 pairs per process; (4, 2, 2): one
pair per process per micro-batch; (3, 2, 2): the last micro-batch holds 1 pair, so process 1's
share is empty (it runs a stand-in with weight 0); the 3 pairs are also the validation set, in
batches of 2 (process 1's share of the last one empty again).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import PartialState

from tests.training.grad_split import OBJECTIVES, one_step

SPLITS = [(4, 4, 1), (4, 2, 2), (3, 2, 2)]


def main(work_dir: str) -> None:
    torch.set_num_threads(1)
    results = {}
    for objective in OBJECTIVES:
        for n_pairs, batch_size, accum in SPLITS:
            run = one_step(objective, batch_size, accum, n_pairs, val_batch_size=2 if n_pairs == 3 else None)
            results[(objective, n_pairs, batch_size, accum)] = {k: run[k] for k in ("loss", "grad_norm", "grad", "val_loss")}
    state = PartialState()
    if state.is_main_process:
        torch.save({"num_processes": state.num_processes, "results": results}, Path(work_dir) / "result.pt")
    state.wait_for_everyone()
    state.destroy_process_group()  # not left to interpreter shutdown (tests/training/distributed_worker.py)


if __name__ == "__main__":
    main(sys.argv[1])
