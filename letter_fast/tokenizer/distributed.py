"""Tokenizer training under torch.distributed (torchrun; gloo on CPU, NCCL on GPU): each rank computes one contiguous
slice of every global batch, and the step is the one a single process takes on the whole global batch.

``W`` ranks with ``batch_size = B`` split each global batch of ``B`` items (the same seeded permutation on every
rank) with :func:`torch.tensor_split`: rank ``r`` takes the ``r``-th contiguous piece, ``b_r`` items. The terms that
couple the items of a batch are computed over the global batch:

* the Sinkhorn last-level assignment (a balanced transport over the batch): the ranks all-gather the residuals
  before the last level (no gradient flows through an assignment) and every rank solves the same global problem,
  then keeps its own rows;
* ``L_CF``: the anchors are the rank's quantized embeddings, the candidates the CF embeddings of the whole global
  batch (every rank holds the CF matrix, which is data, not a parameter, so it indexes the global batch's rows
  instead of gathering them; the gradient reaches only the anchors, as in one process);
* the diversity positives: every rank draws the global batch's uniforms from the shared batch generator (so the
  generator stays in step with a single process) and uses its own rows.

Every loss term is a mean over the batch's rows, so rank ``r``'s loss is its local mean times ``W b_r / B``:
DistributedDataParallel averages the gradients over the ``W`` ranks, which then sum to the gradient of the global
batch mean. The result: ``W`` ranks with ``batch_size = B`` train the model one process trains with
``batch_size = B``, up to float rounding (an MLP on ``b_r`` rows and on ``B`` rows need not round alike; the
gradient sum is taken in another order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class BatchShard:
    """Rank ``rank``'s rows ``[start, stop)`` of a global batch of ``total`` items split over ``world`` ranks
    (``sizes``: every rank's row count). ``cf``: the CF embeddings of the whole global batch, or None."""

    rank: int
    world: int
    start: int
    stop: int
    total: int
    sizes: tuple[int, ...]
    cf: Optional[torch.Tensor] = None

    @classmethod
    def split(cls, idx: torch.Tensor, rank: int, world: int, cf: Optional[torch.Tensor] = None
              ) -> tuple[BatchShard, torch.Tensor]:
        """The shard of global batch ``idx`` (item indices) for ``rank``, and its item indices."""
        pieces = torch.tensor_split(idx, world)
        sizes = tuple(int(p.numel()) for p in pieces)
        start = sum(sizes[:rank])
        shard = cls(rank=rank, world=world, start=start, stop=start + sizes[rank], total=int(idx.numel()),
                    sizes=sizes, cf=cf[idx] if cf is not None else None)
        return shard, pieces[rank]

    @property
    def weight(self) -> float:
        """``W b_r / B``: the factor that turns the local mean into this rank's share of the global mean under DDP's
        gradient average."""
        return self.world * (self.stop - self.start) / self.total

    def positives(self, device) -> torch.Tensor:
        """Each local row's position in the global batch (its own CF embedding among the candidates)."""
        return torch.arange(self.start, self.stop, device=device)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """The global batch's rows of a per-row tensor (no gradient): all-gather, padded to the largest shard."""
        import torch.distributed as dist

        most = max(self.sizes)
        padded = t.new_zeros((most, *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:n] for p, n in zip(parts, self.sizes)])

    def uniforms(self, shape_per_row: tuple[int, ...], generator: Optional[torch.Generator], device) -> torch.Tensor:
        """This rank's rows of the uniforms a single process draws for the whole global batch."""
        u = torch.rand((self.total, *shape_per_row), generator=generator, device=device)
        return u[self.start:self.stop]


def broadcast_tensor(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """``t`` replaced in place by rank ``src``'s."""
    import torch.distributed as dist

    with torch.no_grad():
        dist.broadcast(t.data, src)
    return t


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Parameters and buffers of rank ``src`` copied to every rank (after the k-means start on rank 0)."""
    for t in list(module.parameters()) + list(module.buffers()):
        broadcast_tensor(t, src)


__all__ = ["BatchShard", "broadcast_module", "broadcast_tensor"]
