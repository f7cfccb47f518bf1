"""A rank's share of each global batch under torchrun, and how its part of the loss adds up to the batch's.

Every rank draws the same batches (the same seeded permutation) and takes a contiguous share of each
(:func:`batch_share`), sizes differing by at most one. The share's mean loss, weighted by its part of
the batch (:func:`backward_share`), makes DDP's average of the ranks' gradients the gradient of the
whole batch's mean; per-rank totals are summed in rank order for the log (:func:`reduce_totals`). In
one process the share is the whole batch and each of these is the plain operation.

Random draws made per batch (noise, shifts, crops, dropout masks) take the :class:`Share` to draw for
the whole batch and keep the share's rows; batch norm takes it through ``deep.global_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import distributed as D


@dataclass(frozen=True)
class Share:
    """Rows ``start:stop`` of a global batch of ``size`` rows: one rank's part of it under torchrun."""

    start: int
    stop: int
    size: int

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)


def batch_share(idx: torch.Tensor) -> tuple[torch.Tensor, Share]:
    """This rank's contiguous part of the global batch ``idx`` and where it lies (all of it in one
    process). Ranks' parts differ in size by at most one; a batch smaller than the number of ranks (the
    last of an epoch) leaves some ranks none."""
    start, stop = D.shard_bounds(idx.numel())
    return idx[start:stop], Share(start, stop, idx.numel())


def backward_share(loss: torch.Tensor | None, outputs, share: Share) -> float:
    """Back-propagate this rank's part of a global batch's mean loss; return its sum over the rank's rows.

    ``loss`` is the mean over the rank's rows (None when it has none). Scaled by ``rows * world / size``,
    DDP's average of the ranks' gradients is the gradient of the mean over the global batch; a rank with
    no rows back-propagates zeros through its ``outputs`` so that it still joins the gradient all-reduce
    (and the all-reduces of global batch norm's backward pass). In one process the scale is 1 and this
    is ``loss.backward()``.
    """
    n = share.stop - share.start
    if n == 0:
        (sum(out.sum() for out in outputs) * 0.0).backward()
        return 0.0
    weight = n * D.world_size() / share.size
    (loss if weight == 1 else loss * weight).backward()
    return loss.item() * n


def reduce_totals(*values: float) -> list[float]:
    """Sums over ranks of per-rank totals (losses, row counts), added in rank order: every rank logs the
    same numbers. The values themselves in one process."""
    if not D.is_distributed():
        return list(values)
    return D.sum_in_rank_order(torch.tensor(values, dtype=torch.float64)).tolist()


__all__ = ["Share", "backward_share", "batch_share", "reduce_totals"]
