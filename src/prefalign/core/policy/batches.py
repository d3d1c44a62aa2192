"""Single-sequence batches for the training loop (SFT rows and GPO samples).

The loop wants batches with `to`, `shard`, `len` and `num_tokens` (core/training/loop.py);
`PairBatch` has them, `SequenceBatch` is only the padded tensors. `RowBatch` adds the rest, plus
per-row float targets (GPO: log pi_t(y|x) and s_i) that travel and shard with their rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from prefalign.core.training.batching import (
    SequenceBatch,
    TokenizedSequence,
    collate_sequences,
    length_grouped_batches,
)


@dataclass
class RowBatch:
    """N sequences (a SequenceBatch) and named [N] float targets."""

    sequences: SequenceBatch
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    row_index: torch.Tensor | None = None  # [N] row of each sequence in the tokenised list

    def __len__(self) -> int:
        return int(self.sequences.input_ids.shape[0])

    @property
    def num_tokens(self) -> int:
        """The rows' real (non-padding) tokens."""
        return self.sequences.num_tokens

    def to(self, device: torch.device | str) -> "RowBatch":
        """The batch with its sequences, targets and row index on ``device``.

        Args:
            device: a torch device or its name.

        Returns:
            A new RowBatch.
        """
        return RowBatch(
            self.sequences.to(device),
            {k: v.to(device) for k, v in self.targets.items()},
            None if self.row_index is None else self.row_index.to(device),
        )

    def shard(self, rank: int, world_size: int) -> "RowBatch":
        """Process ``rank``'s share: rows rank, rank + W, ... (as ``PairBatch.shard``).

        Args:
            rank: this process's index.
            world_size: W, the number of processes.

        Returns:
            A RowBatch of those rows, with their targets and row indices.
        """
        rows = torch.arange(rank, len(self), world_size)
        return RowBatch(
            self.sequences.rows(rows),
            {k: v[rows] for k, v in self.targets.items()},
            None if self.row_index is None else self.row_index[rows],
        )


def make_row_batches(
    sequences: Sequence[TokenizedSequence],
    batch_size: int,
    pad_token_id: int,
    seed: int | None = 0,
    targets: dict[str, Sequence[float]] | None = None,
) -> list[RowBatch]:
    """Length-grouped RowBatches (seed None: sorted by length, for evaluation passes).

    Args:
        sequences: the tokenised sequences (N of them).
        batch_size: rows per batch.
        pad_token_id: the id written into padding.
        seed: the length-grouped shuffle's seed; None = sorted by length, deterministic.
        targets: name -> N float values (e.g. GPO's log pi_t(y|x) in nats and s_i), cast to float32.

    Returns:
        The batches; each row's ``row_index`` is its position in ``sequences``.

    Raises:
        ValueError: a target with other than N values.
    """
    targets = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in (targets or {}).items()}
    for name, values in targets.items():
        if values.shape[0] != len(sequences):
            raise ValueError(f"target {name!r} has {values.shape[0]} values for {len(sequences)} sequences")
    batches = []
    for index in length_grouped_batches([len(s) for s in sequences], batch_size, seed):
        index_t = torch.as_tensor(index, dtype=torch.long)
        batches.append(
            RowBatch(
                collate_sequences([sequences[i] for i in index], pad_token_id),
                {k: v[index_t] for k, v in targets.items()},
                index_t,
            )
        )
    return batches
