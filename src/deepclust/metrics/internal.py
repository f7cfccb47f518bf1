"""Internal metrics: judge a clustering from the features alone (no true labels).

Both metrics need Euclidean distances between (many) pairs of points. They never build an N x N matrix:
distances are computed for a block of rows against a block of points grouped by cluster, with one float32
GEMM (``||x||^2 - 2 x.y + ||y||^2`` folded into the product, clamped at 0, on mean-centred data to limit
cancellation), and each block is reduced at once over the contiguous segment of every cluster (sum, min
or max). A sampled silhouette holds its rows, their per-cluster sums and one block of points (4 MiB), so
its memory does not grow with N; the exact metrics and Dunn's subsample hold a centred copy of the points
they use. Distance blocks are at most 16M floats (64 MiB).

**Exact or sampled.** The cost of a call is about ``pairs x (n_features + 64)`` multiply-add equivalents
(the 64 stands for the per-distance clamp, sqrt and reductions, measured on CPU). With
``sample_size="auto"`` a metric is exact when that cost is at most :data:`EXACT_COST_BUDGET` (1e11, about
1.5 s on 2 CPU cores) and otherwise estimated from a random sample sized to that budget:

- silhouette: ``s(i)`` is computed *exactly* (against all N points) for a uniform random subset of rows;
  their mean is an unbiased estimate of the mean silhouette, reported with its standard error;
- Dunn: the index is computed exactly on a stratified random subsample of points (the same fraction of
  every cluster, at least 2 points each). It is an *estimate*: the minimum separation over fewer pairs is
  biased upward and the maximum diameter downward, so the sampled index is biased upward.

``sample_size=None`` forces the exact computation; an int forces a sample of that size. The budget was
calibrated on CPU; on a GPU the same budget applies (exact is much cheaper there: pass None to force it).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np
import torch
from numpy.typing import ArrayLike

from .._validation import check_features, check_random_state, resolve_device
from ._labels import check_labels, unique_codes

#: Largest cost (pairs x (n_features + 64) multiply-adds) computed exactly under ``sample_size="auto"``.
EXACT_COST_BUDGET = 1.0e11
_PAIR_OVERHEAD = 64  # clamp, sqrt, reductions per distance in multiply-adds (measured ~46)
_MIN_SAMPLE = 1000  # floor of an "auto" sample, for its statistical quality (rows or points)
# Default row blocks: about 4M distances (16 MiB, fits the L3 cache: the clamp/sqrt/reduce passes are
# memory-bound), but at least 256 rows when n_features >= 128 so the GEMM stays efficient, and never above
# 16M distances.
_CACHE_ELEMENTS = 2**22
_MAX_ELEMENTS = 2**24  # 64 MiB of float32 per block: the memory bound whatever N is
_BLOCK_ELEMENTS = 2**20  # floats in a block of points the silhouette's rows are compared with (4 MiB)
_GEMM_ROWS = 256
_REFINE_ROWS = 4096  # rows per float64 block when recomputing the winning Dunn pair

SampleSize = int | Literal["auto"] | None


class SilhouetteReport(TypedDict):
    value: float
    exact: bool
    sample_size: int | None  # rows whose s(i) was averaged; None when exact
    std_error: float | None  # standard error of the sampled mean; None when exact


class DunnReport(TypedDict):
    value: float
    exact: bool
    sample_size: int | None  # points in the stratified subsample; None when exact


@dataclass(frozen=True)
class _Labelled:
    """The input validated: features in their original order and each row's cluster code."""

    X: np.ndarray  # (n, d) float32
    codes: np.ndarray  # (n,) cluster codes 0..k-1
    counts: np.ndarray  # (k,) cluster sizes
    mean: np.ndarray  # (d,) float32 mean of X: every distance is computed on centred points

    def grouped(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``rows`` (default: all) reordered by cluster, keeping their order within a cluster, and their
        codes: each cluster becomes a contiguous block."""
        codes = self.codes if rows is None else self.codes[rows]
        order = np.argsort(codes, kind="stable")
        return (order if rows is None else rows[order]), codes[order]

    def members(self, cluster: int) -> np.ndarray:
        """Rows of one cluster, ascending."""
        return np.flatnonzero(self.codes == cluster)


def _prepare(X: ArrayLike, labels: ArrayLike, metric: str) -> _Labelled:
    X = check_features(X)
    labels = check_labels(labels, name="labels")
    n = X.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"labels must have one entry per sample of X; got {labels.shape[0]} labels "
                         f"for {n} samples.")
    _, codes = unique_codes(labels)
    codes = codes.reshape(-1)
    counts = np.bincount(codes)
    k = counts.size
    if not 2 <= k <= n - 1:
        raise ValueError(f"{metric} needs 2 <= n_clusters <= n_samples - 1; got n_clusters={k} for "
                         f"n_samples={n}.")
    return _Labelled(X, codes, counts, X.mean(axis=0, dtype=np.float64).astype(np.float32))


def _segment_starts(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For codes sorted ascending: the clusters present and where each one's block starts."""
    present = np.flatnonzero(np.bincount(codes))
    return present, np.searchsorted(codes, present)


def _check_sample_size(sample_size, name: str = "sample_size") -> None:
    if sample_size is None or (isinstance(sample_size, str) and sample_size == "auto"):
        return
    if isinstance(sample_size, bool) or not isinstance(sample_size, numbers.Integral) or sample_size < 1:
        raise ValueError(f"{name} must be 'auto', None (exact) or an integer >= 1; got {sample_size!r}.")


def _check_chunk_size(chunk_size) -> None:
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be None (automatic) or an integer >= 1; got {chunk_size!r}.")


class _Points:
    """Points prepared for one-GEMM distances: ``[x, ||x||^2, 1] . [-2y, 1, ||y||^2] = ||x - y||^2``.

    Only the column form ``[-2y, 1, ||y||^2]`` is stored, (n, d + 2) float32: a row form is rebuilt from it
    (halving -2y is exact). The points are centred on the mean of all the data first (``mean``), which
    keeps ``||x||^2`` small next to the distances and so limits float32 cancellation. Folding the norms
    into the GEMM saves two passes over every distance block.
    """

    def __init__(self, X: np.ndarray, rows: np.ndarray | slice, device: torch.device, mean: np.ndarray):
        picked = X[rows] if isinstance(rows, slice) else None
        n, d = (picked.shape[0] if picked is not None else rows.size), X.shape[1]
        cols = np.empty((n, d + 2), dtype=np.float32)
        points = cols[:, :d]
        if picked is not None:
            points[:] = picked
        else:
            np.take(X, rows, axis=0, out=points, mode="clip")  # "clip": unbuffered (indices are valid)
        points -= mean
        cols[:, d] = 1.0
        cols[:, d + 1] = np.einsum("ij,ij->i", points, points, dtype=np.float64)
        points *= -2.0
        self.d = d
        self.cols = torch.from_numpy(cols).to(device)  # (n, d + 2)

    def __len__(self) -> int:
        return self.cols.shape[0]

    def distances(self, rows: torch.Tensor | slice, cols: slice = slice(None),
                  other: _Points | None = None) -> torch.Tensor:
        """Euclidean distances from the points ``rows`` to the points ``cols`` (of ``other``, default
        these): (b, m) float32."""
        c = self.cols[rows]  # (b, d + 2)
        r = torch.cat([c[:, :self.d] * -0.5, c[:, self.d + 1:], c[:, self.d:self.d + 1]], dim=1)
        D = torch.mm(r, (self if other is None else other).cols[cols].T)  # (b, m) squared, up to rounding
        return D.clamp_(min=0.0).sqrt_()


def _segment_reduce(D: torch.Tensor, starts: np.ndarray, op: str) -> np.ndarray:
    """Reduce every row of ``D`` over contiguous column segments starting at ``starts`` (all non-empty).

    (b, m) -> (b, len(starts)) numpy. On CPU numpy's ``reduceat`` works on the tensor's memory directly
    (about 5x faster than a one-hot GEMM for the sums, and it scales to many clusters); elsewhere
    ``torch.segment_reduce`` keeps the work on the device.
    """
    if D.device.type == "cpu":
        ufunc = {"sum": np.add, "min": np.minimum, "max": np.maximum}[op]
        return ufunc.reduceat(D.numpy(), starts, axis=1)
    return _segment_reduce_torch(D, starts, op)


def _segment_reduce_torch(D: torch.Tensor, starts: np.ndarray, op: str) -> np.ndarray:
    lengths = torch.as_tensor(np.diff(np.append(starts, D.shape[1])), device=D.device)
    out = torch.segment_reduce(D, op, lengths=lengths.expand(D.shape[0], -1).contiguous(), axis=1)
    return out.cpu().numpy()


def _auto_chunk(n_columns: int, n_features: int, chunk_size: int | None) -> int:
    """Rows per distance block. Measured on 2 CPU cores with few features: 2^20-2^22 distances per block
    run 2x faster than 2^24 on an idle machine; on a busy one fewer, larger blocks suffer less from
    thread synchronisation. 2^22 is the compromise."""
    if chunk_size is not None:
        return chunk_size
    rows = _CACHE_ELEMENTS // n_columns
    if n_features >= 128:
        rows = max(rows, _GEMM_ROWS)
    return max(1, min(rows, _MAX_ELEMENTS // n_columns))


# --------------------------------------------------------------------------------------------- silhouette


def _column_block(n: int, d: int) -> int:
    """Points per block of the pass over all N: their centred copy, (block, d + 2) float32, is at most
    :data:`_BLOCK_ELEMENTS` floats (4 MiB), so the pass holds the same memory whatever N is."""
    return max(1, min(n, _BLOCK_ELEMENTS // (d + 2)))


def _silhouette_samples(data: _Labelled, rows: np.ndarray, device: torch.device,
                        chunk_size: int | None) -> np.ndarray:
    """s(i) for the rows ``rows`` of X (ascending), each computed exactly against all N points.

    One pass over the N points, a block at a time (each block grouped by cluster, so its distances reduce
    over contiguous segments): memory beyond X is the rows' per-cluster sums and one block. Returns
    (len(rows),).
    """
    n, d = data.X.shape
    points = _Points(data.X, rows, device, data.mean)
    sums = np.zeros((rows.size, data.counts.size))  # distance sum from each row to each cluster
    width = _column_block(n, d)
    for c0 in range(0, n, width):
        c1 = min(n, c0 + width)
        local, codes = data.grouped(np.arange(c0, c1))
        block = _Points(data.X, local, device, data.mean)
        present, starts = _segment_starts(codes)
        column = np.empty(c1 - c0, dtype=np.int64)  # where each point of the block went
        column[local - c0] = np.arange(c1 - c0)
        first, last = np.searchsorted(rows, [c0, c1])  # the rows that lie in this block
        step = _auto_chunk(len(block), d, chunk_size)
        for lo in range(0, rows.size, step):
            hi = min(rows.size, lo + step)
            D = points.distances(slice(lo, hi), other=block)  # (b, block)
            own = np.arange(max(lo, first), min(hi, last))
            if own.size:  # d(i, i) = 0, otherwise a rounding residue
                D[torch.as_tensor(own - lo, device=D.device),
                  torch.as_tensor(column[rows[own] - c0], device=D.device)] = 0.0
            sums[lo:hi, present] += _segment_reduce(D, starts, "sum")
    counts = data.counts.astype(np.float64)
    own = data.codes[rows]
    b_rows = np.arange(rows.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = sums[b_rows, own] / (counts[own] - 1)  # mean distance to the rest of its cluster
        means = sums / counts
        means[b_rows, own] = np.inf
        b = means.min(axis=1)  # mean distance to the nearest other cluster
        s = (b - a) / np.maximum(a, b)
    s[counts[own] == 1] = 0.0  # singleton clusters score 0, as in sklearn
    return np.nan_to_num(s, nan=0.0)  # a == b == 0 (duplicate points): 0, as in sklearn


def silhouette_report(X: ArrayLike, labels: ArrayLike, *, sample_size: SampleSize = "auto",
                      random_state: int | np.random.Generator | None = 0, chunk_size: int | None = None,
                      device: str | torch.device = "cpu") -> SilhouetteReport:
    """Mean silhouette coefficient plus how it was computed (see :func:`silhouette_score`).

    Returns
    -------
    dict
        ``value`` (float), ``exact`` (bool), ``sample_size`` (rows averaged, None when exact) and
        ``std_error`` (standard error of a sampled mean, with the finite-population correction; None when
        exact).
    """
    _check_sample_size(sample_size)
    _check_chunk_size(chunk_size)
    data = _prepare(X, labels, "silhouette")
    n, d = data.X.shape
    if sample_size == "auto":
        rows_in_budget = int(EXACT_COST_BUDGET // (n * (d + _PAIR_OVERHEAD)))
        sample_size = None if rows_in_budget >= n else max(rows_in_budget, _MIN_SAMPLE)
    if sample_size is None or sample_size >= n:
        with torch.inference_mode():
            s = _silhouette_samples(data, np.arange(n), resolve_device(device), chunk_size)
        return {"value": float(np.mean(s)), "exact": True, "sample_size": None, "std_error": None}
    m = int(sample_size)
    rows = np.sort(check_random_state(random_state).choice(n, size=m, replace=False))
    with torch.inference_mode():
        s = _silhouette_samples(data, rows, resolve_device(device), chunk_size)
    std_error = float(np.std(s, ddof=1) / math.sqrt(m) * math.sqrt((n - m) / (n - 1))) if m > 1 else None
    return {"value": float(np.mean(s)), "exact": False, "sample_size": m, "std_error": std_error}


def silhouette_score(X: ArrayLike, labels: ArrayLike, *, sample_size: SampleSize = "auto",
                     random_state: int | np.random.Generator | None = 0, chunk_size: int | None = None,
                     device: str | torch.device = "cpu") -> float:
    """Mean silhouette coefficient (Rousseeuw 1987) with Euclidean distances, in [-1, 1]; higher is better.

    ``s(i) = (b(i) - a(i)) / max(a(i), b(i))``, with ``a(i)`` the mean distance from i to the other points
    of its cluster and ``b(i)`` the smallest mean distance from i to another cluster; ``s(i) = 0`` for a
    point alone in its cluster. Equals ``sklearn.metrics.silhouette_score`` when exact, without its
    N x N memory.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or images (n_samples, ...)
    labels : array-like of shape (n_samples,), integer cluster ids (2 <= n_clusters <= n_samples - 1).
    sample_size : "auto", None or int, default="auto"
        "auto": exact when the cost is within :data:`EXACT_COST_BUDGET`, else that many rows as the budget
        allows (at least 1000). None: exact. int: the mean of ``s(i)`` over that many random rows, each
        ``s(i)`` exact against all N points (an unbiased estimate).
    random_state : int, Generator or None, default=0
        Seed of the row sample.
    chunk_size : int or None, default=None
        Rows per distance block; None picks about 4M distances per block (at most 16M, 64 MiB).
    device : str or torch.device, default="cpu"
        Where the distances are computed ("cuda", "auto", ...).

    Use :func:`silhouette_report` to learn whether the value was exact.
    """
    return silhouette_report(X, labels, sample_size=sample_size, random_state=random_state,
                             chunk_size=chunk_size, device=device)["value"]


# --------------------------------------------------------------------------------------------- Dunn


def _dunn_exact(data: _Labelled, rows: np.ndarray, codes: np.ndarray, device: torch.device,
                chunk_size: int | None) -> float:
    """Dunn's index over the points ``rows`` of X, grouped by cluster (their ``codes`` ascending)."""
    starts = np.searchsorted(codes, np.arange(data.counts.size))  # every cluster keeps >= 1 point
    ends = np.append(starts[1:], codes.size)
    points = _Points(data.X, rows, device, data.mean)
    n = codes.size
    # Best pair so far, as (distance, row, cluster): the pair's other end is found again in float64 below.
    sep, sep_row, sep_cluster = math.inf, -1, -1
    diam, diam_row = -math.inf, -1
    lo = 0
    while lo < n:
        # Rows [lo, hi) against columns [lo, n): every unordered pair once (the upper triangle).
        hi = min(n, lo + _auto_chunk(n - lo, points.d, chunk_size))
        D = points.distances(slice(lo, hi), slice(lo, None))  # (b, n - lo)
        D.diagonal().zero_()  # d(i, i)
        first = codes[lo]  # clusters before this one have no columns left
        seg = np.maximum(starts[first:] - lo, 0)
        own = codes[lo:hi] - first
        b_rows = np.arange(hi - lo)
        widest = _segment_reduce(D, seg, "max")[b_rows, own]  # (b,) farthest point of the own cluster
        i = int(np.argmax(widest))
        if widest[i] > diam:
            diam, diam_row = float(widest[i]), lo + i
        if seg.size > 1:
            nearest = _segment_reduce(D, seg, "min")  # (b, k') nearest point of each cluster
            nearest[b_rows, own] = np.inf
            i, c = np.unravel_index(int(np.argmin(nearest)), nearest.shape)
            if nearest[i, c] < sep:
                sep, sep_row, sep_cluster = float(nearest[i, c]), lo + int(i), first + int(c)
        lo = hi
    # Recompute the two winning distances in float64 from the original features, so near-duplicate points
    # are not blurred by float32 cancellation: each becomes the exact distance of a real pair.
    X = data.X
    sep = _extreme_distance(X, rows[sep_row], rows[starts[sep_cluster]:ends[sep_cluster]], np.min)
    own = codes[diam_row]
    diam = _extreme_distance(X, rows[diam_row], rows[starts[own]:ends[own]], np.max)
    if sep == 0.0:
        return 0.0
    return math.inf if diam == 0.0 else sep / diam


def _extreme_distance(X: np.ndarray, row: int, members: np.ndarray, reduce) -> float:
    """min or max float64 distance from X[row] to X[members], in blocks."""
    x = X[row].astype(np.float64)
    best = [reduce(np.sqrt(((X[members[lo:lo + _REFINE_ROWS]].astype(np.float64) - x) ** 2).sum(axis=1)))
            for lo in range(0, members.size, _REFINE_ROWS)]
    return float(reduce(best))


def _stratified_rows(data: _Labelled, m: int, rng: np.random.Generator) -> np.ndarray:
    """About ``m`` rows: the same fraction of every cluster, at least 2 each; grouped by cluster and
    ascending within each (one cluster's members are listed at a time, never a sort of all N)."""
    n = data.codes.size
    take = np.clip(np.round(data.counts * (m / n)).astype(np.int64), np.minimum(data.counts, 2), data.counts)
    picks = []
    for cluster, t in enumerate(take.tolist()):
        members = data.members(cluster)
        picks.append(members[np.sort(rng.choice(members.size, size=t, replace=False))])
    return np.concatenate(picks)


def dunn_report(X: ArrayLike, labels: ArrayLike, *, sample_size: SampleSize = "auto",
                random_state: int | np.random.Generator | None = 0, chunk_size: int | None = None,
                device: str | torch.device = "cpu") -> DunnReport:
    """Dunn's index plus how it was computed (see :func:`dunn_index`).

    Returns
    -------
    dict
        ``value`` (float), ``exact`` (bool) and ``sample_size`` (points in the stratified subsample; None
        when exact).
    """
    _check_sample_size(sample_size)
    _check_chunk_size(chunk_size)
    data = _prepare(X, labels, "Dunn's index")
    n, d = data.X.shape
    if sample_size == "auto":
        points_in_budget = int(math.sqrt(2 * EXACT_COST_BUDGET / (d + _PAIR_OVERHEAD)))  # m^2/2 pairs
        sample_size = None if points_in_budget >= n else max(points_in_budget, _MIN_SAMPLE)
    device = resolve_device(device)
    if sample_size is not None and sample_size < n:
        rows = _stratified_rows(data, int(sample_size), check_random_state(random_state))
        codes = data.codes[rows]
    else:
        rows, codes = data.grouped()
    with torch.inference_mode():
        value = _dunn_exact(data, rows, codes, device, chunk_size)
    exact = rows.size == n  # also when "at least 2 per cluster" took every point
    return {"value": value, "exact": exact, "sample_size": None if exact else int(rows.size)}


def dunn_index(X: ArrayLike, labels: ArrayLike, *, sample_size: SampleSize = "auto",
               random_state: int | np.random.Generator | None = 0, chunk_size: int | None = None,
               device: str | torch.device = "cpu") -> float:
    """Dunn's index (Dunn 1974): the smallest distance between two points in different clusters divided
    by the largest distance between two points in the same cluster (the largest diameter). Higher is better.

    Euclidean distances over all pairs of points, as in our seed definition. Distances are computed in
    float32 and the two winning pairs recomputed in float64. ``inf`` when every cluster has diameter 0 but
    the clusters are apart; 0.0 when two clusters share a point.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or images (n_samples, ...)
    labels : array-like of shape (n_samples,), integer cluster ids (2 <= n_clusters <= n_samples - 1).
    sample_size : "auto", None or int, default="auto"
        "auto": exact when the cost is within :data:`EXACT_COST_BUDGET`, else a stratified subsample as
        large as the budget allows (at least 1000 points). None: exact. int: a stratified subsample of
        about that many points (the same fraction of each cluster, at least 2 per cluster). A sampled
        index is an estimate biased upward (see the module docstring).
    random_state : int, Generator or None, default=0
        Seed of the subsample.
    chunk_size : int or None, default=None
        Rows per distance block; None picks about 4M distances per block (at most 16M, 64 MiB).
    device : str or torch.device, default="cpu"
        Where the distances are computed.

    Use :func:`dunn_report` to learn whether the value was exact.
    """
    return dunn_report(X, labels, sample_size=sample_size, random_state=random_state,
                       chunk_size=chunk_size, device=device)["value"]
