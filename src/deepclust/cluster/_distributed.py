"""k-means over row shards held by the ranks of a ``torch.distributed`` process group.

The ranks hold contiguous blocks of one global array in rank order (``deepclust.distributed.
shard_indices``): rank r holds global rows ``offsets[r]:offsets[r + 1]``. Every random draw is made by
a generator in the same state on every rank, over global row indices, so the draws are the ones one
process makes on the concatenated array; only statistics of size O(k * d) cross between ranks:

* k-means++ seeding: per round, each rank's total of squared distances (one float), the candidate rows
  (drawn by the rank that holds them) and the candidates' potentials;
* Lloyd: per iteration, the per-cluster sums and counts and the number of changed labels;
* empty-cluster repair: each rank's ``k + e`` farthest points (value, index, label).

Sums are added in rank order in float64 (``sum_in_rank_order``), so every rank gets the same bits and
the centres are those of one process up to float64 rounding. Elkan's bounds are per row, so each rank
keeps its own unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import distributed as dist_utils
from . import _lloyd


class Shards:
    """Where the rows of one global array live, and the collectives k-means needs over them.

    ``sizes[r]`` rows on rank r, in rank order; ``offsets`` are their cumulative sums. It is also the
    ``comm`` object ``_lloyd.lloyd`` takes (``sum`` and ``reseed_empty``).
    """

    def __init__(self, sizes, rank: int):
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.rank = int(rank)

    @classmethod
    def gather(cls, n_local: int, n_features: int) -> Shards:
        """Learn every rank's row count (one all-gather); all ranks must have ``n_features`` columns."""
        info = torch.cat(dist_utils.all_gather_tensors(torch.tensor([n_local, n_features]))).view(-1, 2)
        widths = sorted(set(info[:, 1].tolist()))
        if len(widths) > 1:
            raise ValueError(f"every rank's shard must have the same number of features; got {widths} "
                             f"(rank {dist_utils.rank()} has {n_features}).")
        return cls(info[:, 0].numpy(), dist_utils.rank())

    @property
    def n_total(self) -> int:
        return int(self.offsets[-1])

    @property
    def start(self) -> int:
        return int(self.offsets[self.rank])

    def subset(self, index: np.ndarray) -> tuple[Shards, np.ndarray]:
        """The shards of the global rows ``index`` (sorted), and this rank's local positions of them."""
        cut = np.searchsorted(index, self.offsets)  # (world + 1,)
        mine = index[cut[self.rank]:cut[self.rank + 1]] - self.start
        return Shards(np.diff(cut), self.rank), mine

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks in rank order: identical bits on every rank."""
        return dist_utils.sum_in_rank_order(tensor)

    def rows(self, X: torch.Tensor, index) -> torch.Tensor:
        """The global rows ``index`` of the sharded ``X``, on every rank: (len(index), d)."""
        index = np.asarray(index, dtype=np.int64)
        out = torch.zeros(len(index), X.shape[1], dtype=X.dtype, device=X.device)
        mine = np.flatnonzero((index >= self.start) & (index < self.offsets[self.rank + 1]))
        if mine.size:
            local = torch.as_tensor(index[mine] - self.start, device=X.device)
            out[torch.as_tensor(mine, device=X.device)] = X[local]
        return self.sum(out)  # one owner per row, zeros elsewhere: the sum is the row, exactly

    def reseed_empty(self, X, labels, upper, sums, counts, total_counts, empty) -> None:
        """``_lloyd._reseed_empty`` across ranks: each empty cluster takes the globally farthest point
        (by ``upper``) among clusters of size > 1; ties go to the lower global index.

        ``sums``/``counts`` are this rank's, ``total_counts`` the global ones. At most ``k + e`` points
        are examined (each cluster can be skipped once, e clusters are filled), so each rank sends only
        its ``k + e`` largest bounds.
        """
        k = counts.shape[0]
        want = k + empty.numel()
        top = torch.full((want, 3), -1.0, dtype=torch.float64)  # (value, global index, label)
        top[:, 0] = -math.inf
        if X.shape[0]:
            value, order = torch.sort(upper.double().cpu(), descending=True, stable=True)
            take = min(want, X.shape[0])
            top[:take, 0] = value[:take]
            top[:take, 1] = (order[:take] + self.start).double()
            top[:take, 2] = labels.cpu()[order[:take]].double()
        pool = torch.cat(dist_utils.all_gather_tensors(top)).numpy()
        pool = pool[pool[:, 1] >= 0]
        pool = pool[np.lexsort((pool[:, 1], -pool[:, 0]))]  # farthest first, then lowest index
        sim = total_counts.double().cpu().numpy().copy()
        pos = 0
        end = self.offsets[self.rank + 1]
        for cluster in empty.tolist():
            while sim[int(pool[pos, 2])] <= 1:
                pos += 1
            index, old = int(pool[pos, 1]), int(pool[pos, 2])
            pos += 1
            sim[old] -= 1
            sim[cluster] = 1
            sums[cluster] = 0.0
            counts[cluster] = 0.0
            if self.start <= index < end:  # this rank holds the point: move it here
                _lloyd.move_to_empty(X, labels, sums, counts, index - self.start, cluster)
        upper.fill_(float("inf"))


def kmeans_plusplus(X: torch.Tensor, x_sq: torch.Tensor, k: int, rng: np.random.Generator,
                    chunk_size: int, shards: Shards, n_local_trials: int | None = None) -> torch.Tensor:
    """``_lloyd.kmeans_plusplus`` on sharded rows: the same draws over global indices.

    A draw ``u * total`` falls in the block of the rank whose cumulative weight range contains it; that
    rank finds the row in its own cumulative sum and contributes it. (One process's global cumulative
    sum and this rank-by-rank one differ only by float64 rounding.)
    """
    n = shards.n_total
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(k))
    centers = torch.empty(k, X.shape[1], dtype=X.dtype, device=X.device)
    first = int(rng.integers(n))
    centers[0] = shards.rows(X, [first])[0]
    closest = _lloyd._sq_dist_to(X, x_sq, centers[0:1], chunk_size)[:, 0]  # (n_local,)
    has_rows = np.flatnonzero(shards.sizes > 0)
    for c in range(1, k):
        cdf = np.cumsum(closest.cpu().numpy(), dtype=np.float64)  # this rank's cumulative weights
        local_total = torch.tensor([cdf[-1] if cdf.size else 0.0], dtype=torch.float64)
        totals = torch.cat(dist_utils.all_gather_tensors(local_total)).numpy()
        bounds = np.concatenate([[0.0], np.cumsum(totals)])
        total = bounds[-1]
        if not np.isfinite(total) or total <= 0:  # every point sits on a centre: pick any
            candidates = rng.choice(n, size=n_local_trials, replace=True)
            cand = shards.rows(X, candidates)
        else:
            targets = rng.random(n_local_trials) * total
            # Owner: the rank whose weight range holds the target; the last rank with rows takes
            # anything past the end (one process clamps to the last row likewise).
            owner = np.searchsorted(bounds[1:-1], targets, side="right")
            owner = has_rows[np.maximum(np.searchsorted(has_rows, owner, side="right") - 1, 0)]
            cand = torch.zeros(n_local_trials, X.shape[1], dtype=X.dtype, device=X.device)
            mine = np.flatnonzero(owner == shards.rank)
            if mine.size:
                local = np.searchsorted(cdf, targets[mine] - bounds[shards.rank], side="right")
                local = np.minimum(local, X.shape[0] - 1)
                cand[torch.as_tensor(mine, device=X.device)] = X[torch.as_tensor(local, device=X.device)]
            cand = shards.sum(cand)
        del cdf
        pot = shards.sum(_lloyd.candidate_potentials(X, x_sq, cand, closest, chunk_size))
        best = int(torch.argmin(pot))
        centers[c] = cand[best]
        _lloyd.take_closer(X, x_sq, cand, best, closest, chunk_size)
    return centers


def random_init(X: torch.Tensor, k: int, rng: np.random.Generator, shards: Shards) -> torch.Tensor:
    """k distinct global rows drawn as one process draws them."""
    return shards.rows(X, rng.choice(shards.n_total, size=k, replace=False))
