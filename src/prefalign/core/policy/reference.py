"""Reference log-probs, computed ONCE per dataset and reused every epoch (docs/methods.md s4).

The reference policy is constant during DPO/MMPO/IPO training, so its log-probs of every chosen
and rejected response are computed in one pass before training, stored as a table keyed by
`pair_id` (a versioned dataset a person can read), and looked up by each batch's pair index.
The reference model itself is then dropped: it is never in memory while the policy trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import torch

from prefalign.core.models.precision import compute_precision
from prefalign.core.policy.logprobs import batch_pair_logprobs

if TYPE_CHECKING:
    import polars as pl


def _reference_schema() -> dict:
    """The table's columns; polars is imported here, not at module level (the GPU check imports this module without it)."""
    import polars as pl

    return {"pair_id": pl.String, "ref_chosen_logp": pl.Float64, "ref_rejected_logp": pl.Float64}


@torch.no_grad()
def score_pair_batches(model: torch.nn.Module, batches: Iterable, mixed_precision: str = "no") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One no-grad pass over PairBatches: (pair_index, log pi(chosen), log pi(rejected)), each [N] on CPU.

    ``mixed_precision``: the training's setting (auto | no | bf16 | fp16); the pass runs under the
    same autocast as the training forward, so a reference equals the policy it starts (core/models/precision.py).

    Args:
        model: the causal LM (left in its train/eval mode afterwards).
        batches: PairBatches or PackedPairBatches.
        mixed_precision: see above.

    Returns:
        (pair_index [N] long, chosen log-probs [N] float32, rejected log-probs [N] float32), N = the
        pairs of all batches in batch order; log-probs summed over response tokens, nats.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    index_parts, chosen_parts, rejected_parts = [torch.zeros(0, dtype=torch.long)], [torch.zeros(0)], [torch.zeros(0)]
    for batch in batches:
        seqs = batch.sequences.to(device)
        with compute_precision(device, mixed_precision):
            chosen, rejected = batch_pair_logprobs(model, seqs)
        index_parts.append(batch.pair_index.cpu())
        chosen_parts.append(chosen.float().cpu())
        rejected_parts.append(rejected.float().cpu())
    model.train(was_training)
    return torch.cat(index_parts), torch.cat(chosen_parts), torch.cat(rejected_parts)


def compute_reference_logprobs(model: torch.nn.Module, batches: Iterable, pair_ids: Sequence[str],
                               mixed_precision: str = "no") -> "pl.DataFrame":
    """One no-grad pass over pair batches (core/training/batching.PairBatch) -> the reference table.

    `pair_ids[i]` names the pair at tokenised index i (each batch's `pair_index`); `mixed_precision`
    is the policy training's setting (the pass runs under the same autocast).

    Args:
        model: the reference policy.
        batches: pair batches (padded or packed).
        pair_ids: pair_id per tokenised index.
        mixed_precision: the policy training's ``training.mixed_precision``.

    Returns:
        A table pair_id, ref_chosen_logp, ref_rejected_logp (float64, nats), sorted by pair_id.
    """
    index, chosen, rejected = score_pair_batches(model, batches, mixed_precision)
    import polars as pl

    return pl.DataFrame(
        {
            "pair_id": [pair_ids[i] for i in index.tolist()],
            "ref_chosen_logp": chosen.double().tolist(),
            "ref_rejected_logp": rejected.double().tolist(),
        },
        schema=_reference_schema(),
    ).sort("pair_id")


class ReferenceLogprobs:
    """The reference table as two tensors aligned with the tokenised pairs (index = pair_index)."""

    def __init__(self, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        self.chosen = chosen
        self.rejected = rejected

    @classmethod
    def from_table(cls, table: "pl.DataFrame", pair_ids: Sequence[str]) -> "ReferenceLogprobs":
        """Align `table` (pair_id -> log-probs) with `pair_ids`; a missing pair is an error.

        Args:
            table: ``compute_reference_logprobs``' table (first row kept per pair_id).
            pair_ids: pair_id per tokenised index.

        Returns:
            ReferenceLogprobs with chosen and rejected float32 tensors of shape [len(pair_ids)].

        Raises:
            ValueError: a pair of ``pair_ids`` has no row (or a null log-prob) in ``table``.
        """
        import polars as pl

        lookup = pl.DataFrame({"pair_id": list(pair_ids)}, schema={"pair_id": pl.String}).join(
            table.unique("pair_id", keep="first"), on="pair_id", how="left", maintain_order="left"
        )
        missing = lookup.filter(pl.col("ref_chosen_logp").is_null() | pl.col("ref_rejected_logp").is_null())
        if missing.height:
            raise ValueError(
                f"{missing.height} pair(s) have no reference log-probs (first: {missing['pair_id'][0]!r}); "
                "the reference table was computed on other pairs: re-run the reference node on these pairs"
            )
        return cls(
            torch.tensor(lookup["ref_chosen_logp"].to_list(), dtype=torch.float32),
            torch.tensor(lookup["ref_rejected_logp"].to_list(), dtype=torch.float32),
        )

    def lookup(self, pair_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference log-probs of a batch's pairs.

        Args:
            pair_index: [B] long, each pair's tokenised index (``PairBatch.pair_index``), on any device.

        Returns:
            (chosen [B], rejected [B]) float32 log-probs in nats, on ``pair_index``'s device.
        """
        index = pair_index.cpu()
        return self.chosen[index].to(pair_index.device), self.rejected[index].to(pair_index.device)
