"""Internal metrics: judge a clustering from the features alone (no true labels).

Both metrics need Euclidean distances between (many) pairs of points. They never build an N x N matrix:
points are sorted by cluster, distances are computed for a block of rows at a time with one float32 GEMM
(``||x||^2 - 2 x.y + ||y||^2`` folded into the product, clamped at 0, on mean-centred data to limit
cancellation), and each block
is reduced at once over the contiguous column segment of every cluster (sum, min or max). Memory beyond
a sorted copy of ``X`` is ``chunk_size x N`` floats (at most 16M, 64 MiB, by default).

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
class _Sorted:
    """The input validated and ordered by cluster, so each cluster is a contiguous block."""

    X: np.ndarray  # (n, d) float32, the validated features in their original order
    order: np.ndarray  # (n,) positions in X, sorted by cluster
    codes: np.ndarray  # (n,) cluster codes 0..k-1 of X[order], ascending
    counts: np.ndarray  # (k,) cluster sizes
    starts: np.ndarray  # (k,) first sorted position of each cluster


def _prepare(X: ArrayLike, labels: ArrayLike, metric: str) -> _Sorted:
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
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return _Sorted(X, order, codes[order], counts, starts)


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
    (halving -2y is exact). The points are mean-centred first (in float64), which keeps ``||x||^2`` small
    next to the distances and so limits float32 cancellation. Folding the norms into the GEMM saves two
    passes over every distance block.
    """

    def __init__(self, X: np.ndarray, rows: np.ndarray, device: torch.device):
        n, d = rows.size, X.shape[1]
        cols = np.empty((n, d + 2), dtype=np.float32)
        points = cols[:, :d]
        np.take(X, rows, axis=0, out=points, mode="clip")  # "clip": unbuffered (indices are valid)
        points -= X.mean(axis=0, dtype=np.float64).astype(np.float32)
        cols[:, d] = 1.0
        cols[:, d + 1] = np.einsum("ij,ij->i", points, points, dtype=np.float64)
        points *= -2.0
        self.d = d
        self.cols = torch.from_numpy(cols).to(device)  # (n, d + 2)

    def __len__(self) -> int:
        return self.cols.shape[0]

    def distances(self, rows: torch.Tensor | slice, cols: slice = slice(None)) -> torch.Tensor:
        """Euclidean distances from the points ``rows`` to the points ``cols``: (b, m) float32."""
        c = self.cols[rows]  # (b, d + 2)
        r = torch.cat([c[:, :self.d] * -0.5, c[:, self.d + 1:], c[:, self.d:self.d + 1]], dim=1)
        D = torch.mm(r, self.cols[cols].T)  # (b, m) squared distances, up to rounding
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


def _silhouette_samples(data: _Sorted, rows: np.ndarray, device: torch.device,
                        chunk_size: int | None) -> np.ndarray:
    """s(i) for the sorted positions ``rows``, each computed exactly against all N points: (len(rows),)."""
    points = _Points(data.X, data.order, device)
    counts = data.counts.astype(np.float64)
    step = _auto_chunk(len(points), points.d, chunk_size)
    out = np.empty(rows.size)
    for lo in range(0, rows.size, step):
        idx = rows[lo:lo + step]
        idx_t = torch.as_tensor(idx, device=device)
        D = points.distances(idx_t)  # (b, n)
        D[torch.arange(idx.size, device=device), idx_t] = 0.0  # d(i, i), otherwise a rounding residue
        sums = _segment_reduce(D, data.starts, "sum").astype(np.float64)  # (b, k) distance sum per cluster
        own = data.codes[idx]
        b_rows = np.arange(idx.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = sums[b_rows, own] / (counts[own] - 1)  # mean distance to the rest of its cluster
            means = sums / counts
            means[b_rows, own] = np.inf
            b = means.min(axis=1)  # mean distance to the nearest other cluster
            s = (b - a) / np.maximum(a, b)
        s[counts[own] == 1] = 0.0  # singleton clusters score 0, as in sklearn
        out[lo:lo + step] = np.nan_to_num(s, nan=0.0)  # a == b == 0 (duplicate points): 0, as in sklearn
    return out


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


def _dunn_exact(data: _Sorted, positions: np.ndarray, device: torch.device,
                chunk_size: int | None) -> float:
    """Dunn's index over the points at sorted ``positions`` (ascending, so still grouped by cluster)."""
    codes = data.codes[positions]
    starts = np.searchsorted(codes, np.arange(data.counts.size))  # every cluster keeps >= 1 point
    ends = np.append(starts[1:], codes.size)
    points = _Points(data.X, data.order[positions], device)
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
    rows = data.order[positions]
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


def _stratified_positions(data: _Sorted, m: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of about ``m`` points: the same fraction of every cluster, at least 2 each."""
    n = data.codes.size
    take = np.clip(np.round(data.counts * (m / n)).astype(np.int64), np.minimum(data.counts, 2), data.counts)
    picks = [start + rng.choice(size, size=t, replace=False)
             for start, size, t in zip(data.starts, data.counts, take, strict=True)]
    return np.sort(np.concatenate(picks))


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
    positions = np.arange(n)
    if sample_size is not None and sample_size < n:
        positions = _stratified_positions(data, int(sample_size), check_random_state(random_state))
    with torch.inference_mode():
        value = _dunn_exact(data, positions, device, chunk_size)
    exact = positions.size == n  # also when "at least 2 per cluster" took every point
    return {"value": value, "exact": exact, "sample_size": None if exact else int(positions.size)}


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
