"""Lloyd's k-means in PyTorch with Elkan's bounds, and k-means++ seeding.

The pure functions here work on one tensor ``X`` of shape (n_samples, n_features) and are what the
``KMeans`` estimator calls. Distances are computed in row chunks (``chunk_size`` rows at a time), so
memory stays at O(chunk_size * n_clusters) beyond the data itself.

Elkan's bounds (Elkan 2003, "Using the triangle inequality to accelerate k-means") keep for every point
an upper bound on the distance to its own centre and a lower bound on the distance to each other centre.
After the centres move, a point whose upper bound is still below every lower bound (and half the gap
between centres) cannot change cluster, so its row of ``X`` is not read again. Late iterations then
touch a few percent of the data; the result is exactly Lloyd's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LloydResult:
    labels: torch.Tensor  # (n,) int64
    centers: torch.Tensor  # (k, d) float32
    inertia: float
    n_iter: int
    converged: bool
    n_repaired: int  # empty clusters re-seeded


def squared_norms(X: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Row-wise squared L2 norms, (n,), computed in chunks to avoid a full temporary."""
    out = torch.empty(X.shape[0], dtype=X.dtype, device=X.device)
    for start in range(0, X.shape[0], chunk_size):
        block = X[start:start + chunk_size]
        out[start:start + chunk_size] = torch.einsum("ij,ij->i", block, block)
    return out


def pairwise_sq_dist(X: torch.Tensor, x_sq: torch.Tensor, C: torch.Tensor,
                     c_sq: torch.Tensor) -> torch.Tensor:
    """||x - c||^2 for a block of rows: (b, d), (b,), (k, d), (k,) -> (b, k), clamped at 0."""
    d = torch.addmm(c_sq.unsqueeze(0), X, C.T, alpha=-2.0)  # (b, k) = ||c||^2 - 2 x.c
    d += x_sq.unsqueeze(1)
    return d.clamp_(min=0.0)


def assign(X: torch.Tensor, x_sq: torch.Tensor, C: torch.Tensor, chunk_size: int):
    """Nearest centre of every row and its squared distance: (n,) int64, (n,) float."""
    c_sq = torch.einsum("ij,ij->i", C, C)
    labels = torch.empty(X.shape[0], dtype=torch.int64, device=X.device)
    dist = torch.empty(X.shape[0], dtype=X.dtype, device=X.device)
    for start in range(0, X.shape[0], chunk_size):
        # argmin of ||c||^2 - 2 x.c before ||x||^2 is added: adding it rounds near-ties away (as sklearn)
        block = torch.addmm(c_sq.unsqueeze(0), X[start:start + chunk_size], C.T, alpha=-2.0)
        part, labels[start:start + chunk_size] = block.min(dim=1)
        dist[start:start + chunk_size] = (part + x_sq[start:start + chunk_size]).clamp_(min=0.0)
    return labels, dist


def cluster_sums(X: torch.Tensor, labels: torch.Tensor, k: int, chunk_size: int):
    """Per-cluster sums in float64 (k, d) and counts (k,), accumulated chunk by chunk."""
    sums = torch.zeros(k, X.shape[1], dtype=torch.float64, device=X.device)
    step = min(chunk_size, 512)  # float64 copies of cache-sized blocks: float32 partial sums lose digits
    for start in range(0, X.shape[0], step):
        sums.index_add_(0, labels[start:start + step], X[start:start + step].double())
    counts = torch.bincount(labels, minlength=k).to(torch.float64)
    return sums, counts


def kmeans_plusplus(X: torch.Tensor, x_sq: torch.Tensor, k: int, rng: np.random.Generator,
                    chunk_size: int, n_local_trials: int | None = None) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with sklearn's local trials).

    Each new centre is the best of ``2 + log(k)`` candidates drawn with probability proportional to the
    squared distance to the nearest centre chosen so far. Memory beyond ``X``: two (n,) arrays.
    """
    n = X.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(k))
    centers = torch.empty(k, X.shape[1], dtype=X.dtype, device=X.device)
    first = int(rng.integers(n))
    centers[0] = X[first]
    closest = _sq_dist_to(X, x_sq, X[first:first + 1], chunk_size)[:, 0]  # (n,)
    for c in range(1, k):
        cdf = np.cumsum(closest.cpu().numpy(), dtype=np.float64)
        total = cdf[-1]
        if not np.isfinite(total) or total <= 0:  # every point sits on a centre: pick any unused one
            candidates = rng.choice(n, size=n_local_trials, replace=True)
        else:
            candidates = np.searchsorted(cdf, rng.random(n_local_trials) * total, side="right")
            candidates = np.minimum(candidates, n - 1)
        del cdf
        cand = X[torch.as_tensor(candidates, device=X.device)]
        best = int(torch.argmin(candidate_potentials(X, x_sq, cand, closest, chunk_size)))
        centers[c] = cand[best]
        take_closer(X, x_sq, cand, best, closest, chunk_size)
    return centers


def candidate_potentials(X: torch.Tensor, x_sq: torch.Tensor, cand: torch.Tensor, closest: torch.Tensor,
                         chunk_size: int) -> torch.Tensor:
    """k-means++'s potential of each candidate centre, sum over rows of min(closest, ||x - cand||^2):
    (trials,) float64, a chunk of rows at a time (no (n, trials) array)."""
    c_sq = torch.einsum("ij,ij->i", cand, cand)
    pot = torch.zeros(cand.shape[0], dtype=torch.float64, device=X.device)
    for start in range(0, X.shape[0], chunk_size):
        block = pairwise_sq_dist(X[start:start + chunk_size], x_sq[start:start + chunk_size], cand, c_sq)
        pot += torch.minimum(block, closest[start:start + chunk_size].unsqueeze(1)).sum(dim=0,
                                                                                       dtype=torch.float64)
    return pot


def take_closer(X: torch.Tensor, x_sq: torch.Tensor, cand: torch.Tensor, best: int, closest: torch.Tensor,
                chunk_size: int) -> None:
    """``closest`` = min(closest, ||x - cand[best]||^2) in place. The distances come from the same
    (rows, trials) products as :func:`candidate_potentials`, so they are the bits it summed."""
    c_sq = torch.einsum("ij,ij->i", cand, cand)
    for start in range(0, X.shape[0], chunk_size):
        block = pairwise_sq_dist(X[start:start + chunk_size], x_sq[start:start + chunk_size], cand, c_sq)
        torch.minimum(closest[start:start + chunk_size], block[:, best],
                      out=closest[start:start + chunk_size])


def _sq_dist_to(X, x_sq, C, chunk_size):
    c_sq = torch.einsum("ij,ij->i", C, C)
    out = torch.empty(X.shape[0], C.shape[0], dtype=X.dtype, device=X.device)
    for start in range(0, X.shape[0], chunk_size):
        out[start:start + chunk_size] = pairwise_sq_dist(
            X[start:start + chunk_size], x_sq[start:start + chunk_size], C, c_sq)
    return out


def lloyd(X: torch.Tensor, x_sq: torch.Tensor, centers: torch.Tensor, *, max_iter: int, tol: float,
          chunk_size: int, bounds_budget: int = 50_000_000, bounds: bool | None = None,
          comm=None) -> LloydResult:
    """Run Lloyd iterations from ``centers`` until labels stop changing or centres move < ``tol``.

    ``tol`` is absolute: the sum over centres of the squared centre shift (sklearn's criterion).
    Empty clusters are re-seeded with the points farthest from their centre. Elkan's per-centre lower
    bounds (n x k floats) skip the rows that cannot change cluster; above ``bounds_budget`` floats, or
    when the rows are short (fewer than 2k features), every iteration reads all rows instead.
    ``bounds`` True or False forces the choice (the result is the same either way).

    ``comm`` (``_distributed.Shards``) makes ``X`` one rank's shard of a global array: the sums, counts
    and changed-label counts are totalled over ranks with ``comm.sum`` and empty clusters repaired with
    ``comm.reseed_empty``; labels stay per shard, centres and inertia are global. None: one process.
    """
    n, k = X.shape[0], centers.shape[0]
    centers = centers.clone()
    # The bounds pay where they spare reading long rows: with k >= d/2 (an autoencoder's 10-d embedding
    # and 10 clusters) they hold as many floats as the data and checking them costs what the distances do.
    if bounds is None:
        bounds = n * k <= bounds_budget and 2 * k <= X.shape[1]
    if bounds:
        lower, labels = _distances_and_labels(X, x_sq, centers, chunk_size)  # (n, k), exact for now
        upper = lower.gather(1, labels.unsqueeze(1)).squeeze(1)
    else:
        lower = None
        labels, upper = assign(X, x_sq, centers, chunk_size)
        upper.sqrt_()
    sums, counts = cluster_sums(X, labels, k, chunk_size)  # this process's rows
    total_sums, total_counts = _totals(comm, sums, counts)  # all ranks' (the same tensors without comm)
    n_repaired, converged, n_iter = 0, False, 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported after the loop
        empty = torch.nonzero(total_counts == 0).flatten()
        if empty.numel():
            n_repaired += empty.numel()
            if comm is None:
                _reseed_empty(X, labels, upper, sums, counts, empty)
            else:
                comm.reseed_empty(X, labels, upper, sums, counts, total_counts, empty)
                total_sums, total_counts = _totals(comm, sums, counts)
            if lower is not None:
                lower.zero_()  # centres jump: no bound survives
        new_centers = (total_sums / total_counts.clamp(min=1).unsqueeze(1)).to(X.dtype)
        shift = (new_centers - centers).norm(dim=1)  # (k,)
        centers = new_centers
        if lower is None:
            suspects = None  # every row
        else:
            # Move the bounds by how far each centre moved; a point keeps its cluster when its upper
            # bound is below, for every other centre j, both the lower bound to j and half the gap
            # between its centre and j (the triangle inequality).
            upper += shift[labels]
            lower -= shift
            half_gap = torch.cdist(centers.double(), centers.double()).to(X.dtype) / 2  # (k, k)
            suspects = _suspects(upper, lower, labels, half_gap, chunk_size)
        changed = _reassign(X, x_sq, centers, suspects, labels, upper, lower, sums, counts, chunk_size)
        if comm is not None:
            changed = int(comm.sum(torch.tensor([changed], dtype=torch.int64)).item())
            total_sums, total_counts = _totals(comm, sums, counts)
        if changed == 0 or float((shift ** 2).sum()) <= tol:
            # The assignment above already matches ``centers`` (sklearn's final E-step).
            converged = True
            break
    x_sq_total = x_sq.sum(dtype=torch.float64)
    if comm is not None:
        x_sq_total = comm.sum(x_sq_total)
    inertia = _inertia(x_sq_total, centers, total_sums, total_counts)
    return LloydResult(labels, centers, inertia, n_iter, converged, n_repaired)


def _suspects(upper: torch.Tensor, lower: torch.Tensor, labels: torch.Tensor, half_gap: torch.Tensor,
              chunk_size: int) -> torch.Tensor:
    """Rows whose upper bound exceeds, for some other centre j, both the lower bound to j and half the
    gap between their centre and j: the rows that may change cluster. Computed ``chunk_size`` rows at a
    time, so the (rows, k) temporaries do not grow with n."""
    found = []
    for start in range(0, labels.shape[0], chunk_size):
        lab = labels[start:start + chunk_size]
        bound = torch.maximum(lower[start:start + chunk_size], half_gap[lab])  # (chunk, k)
        bound[torch.arange(lab.shape[0], device=lab.device), lab] = float("inf")
        hit = (upper[start:start + chunk_size].unsqueeze(1) > bound).any(dim=1)
        found.append(torch.nonzero(hit).flatten() + start)
    return torch.cat(found) if found else torch.zeros(0, dtype=torch.int64, device=labels.device)


def _totals(comm, sums: torch.Tensor, counts: torch.Tensor):
    """Sums and counts over all ranks in one collective; the very same tensors in one process."""
    if comm is None:
        return sums, counts
    both = comm.sum(torch.cat([sums, counts.unsqueeze(1)], dim=1))  # (k, d + 1)
    return both[:, :-1], both[:, -1].clone()


def all_distances(X: torch.Tensor, x_sq: torch.Tensor, C: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Euclidean (not squared) distances from every row to every centre: (n, k)."""
    return _sq_dist_to(X, x_sq, C, chunk_size).sqrt_()


def _distances_and_labels(X, x_sq, C, chunk_size):
    """Euclidean distances to every centre (n, k) and the nearest centre (n,).

    The nearest centre is the argmin of ||c||^2 - 2 x.c, taken before ||x||^2 is added and the square
    root is taken: both round away the last bits that separate near-ties (sklearn picks labels this way).
    """
    c_sq = torch.einsum("ij,ij->i", C, C)
    out = torch.empty(X.shape[0], C.shape[0], dtype=X.dtype, device=X.device)
    labels = torch.empty(X.shape[0], dtype=torch.int64, device=X.device)
    for start in range(0, X.shape[0], chunk_size):
        block = torch.addmm(c_sq.unsqueeze(0), X[start:start + chunk_size], C.T, alpha=-2.0)
        labels[start:start + chunk_size] = block.argmin(dim=1)
        block += x_sq[start:start + chunk_size].unsqueeze(1)
        out[start:start + chunk_size] = block.clamp_(min=0.0).sqrt_()
    return out, labels


def _reassign(X, x_sq, centers, suspects, labels, upper, lower, sums, counts, chunk_size) -> int:
    """Recompute exact distances for ``suspects`` (None: every row); move the ones whose nearest centre
    changed."""
    changed = 0
    whole = suspects is None
    for start in range(0, X.shape[0] if whole else suspects.numel(), chunk_size):
        if whole:  # every row in turn: slices, no index arrays
            idx = slice(start, min(start + chunk_size, X.shape[0]))
        else:  # gather only the rows that may move
            idx = suspects[start:start + chunk_size]
        rows = X[idx]
        dist, new_labels = _distances_and_labels(rows, x_sq[idx], centers, chunk_size)  # (b, k), (b,)
        if lower is not None:
            lower[idx] = dist
        upper[idx] = dist.gather(1, new_labels.unsqueeze(1)).squeeze(1)
        old_labels = labels[idx]
        moved = torch.nonzero(new_labels != old_labels).flatten()
        if moved.numel() == 0:
            continue
        changed += moved.numel()
        moved_rows = rows[moved].double()
        old, new = old_labels[moved], new_labels[moved]
        sums.index_add_(0, old, moved_rows, alpha=-1.0)
        sums.index_add_(0, new, moved_rows)
        counts.index_add_(0, old, torch.full(old.shape, -1.0, dtype=counts.dtype, device=X.device))
        counts.index_add_(0, new, torch.ones(new.shape, dtype=counts.dtype, device=X.device))
        labels[moved + start if whole else idx[moved]] = new
    return changed


def _reseed_empty(X, labels, upper, sums, counts, empty) -> None:
    """Give each empty cluster the point farthest from its own centre (among clusters of size > 1)."""
    order = torch.argsort(upper, descending=True)
    pos = 0
    for cluster in empty.tolist():
        while counts[labels[order[pos]]] <= 1:
            pos += 1
        i = order[pos]
        pos += 1
        move_to_empty(X, labels, sums, counts, i, cluster)
    upper.fill_(float("inf"))  # bounds no longer hold after centres jump: recheck everyone


def move_to_empty(X, labels, sums, counts, i: int, cluster: int) -> None:
    """Point ``i`` leaves its cluster's sum and count and alone makes up the empty ``cluster``."""
    old = labels[i]
    row = X[i].double()
    sums[old] -= row
    counts[old] -= 1
    sums[cluster] = row
    counts[cluster] = 1
    labels[i] = cluster


def _inertia(x_sq_total, centers, sums, counts) -> float:
    """Sum of ||x - c(x)||^2 from the cluster sums, in float64, with no pass over ``X``.

    sum ||x - c||^2 = sum ||x||^2 - 2 sum_c S_c . c + sum_c n_c ||c||^2, where S_c and n_c are the sum
    and size of cluster c; ``x_sq_total`` is the first term (float64).
    """
    c = centers.double()
    total = x_sq_total - 2 * (sums * c).sum() + (counts * (c * c).sum(dim=1)).sum()
    return max(float(total), 0.0)
