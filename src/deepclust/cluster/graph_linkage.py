"""Graph degree linkage: agglomerative clustering on a directed nearest-neighbour graph of the input.

Images of objects seen from many angles (COIL-20's 72 turntable views per object) lie on thin, curved
manifolds: each view's nearest neighbours are the adjacent views of the same object (on COIL-20's pixels
at 64 x 64: 100 % for the first neighbour), but two objects' loops can pass closer to each other than a
loop's far ends. Centroid and density methods cut such loops apart; linking along the graph follows
them. Graph degree linkage (Zhang, Wang, Zhao & Tang, ECCV 2012) starts from small clusters (each
point with its nearest neighbour) and repeatedly merges the two clusters with the largest affinity

    A(a, b) = 1/|a|^2 * 1' W[a, b] W[b, a] 1  +  1/|b|^2 * 1' W[b, a] W[a, b] 1,

the weight of the two-step paths that leave a cluster into the other and come back (in-degree times
out-degree), where ``W[i, j] = exp(-d_ij^2 / sigma^2)`` on each point's ``n_neighbors`` nearest
neighbours. A cluster of stray views that no loop links to would stay a cluster of its own to the end,
taking one of the k places; so while any cluster holds fewer than ``min_cluster_fraction`` of the mean
cluster size (n / k), the smallest of them merges first, into its closest cluster. On COIL-20 (64 x 64)
that rule takes ACC from 0.89 to 0.99 (benchmarks/RESULTS.md, "COIL-20: graph degree linkage").

Nothing is random: the same input gives the same clusters (ties go to the lower cluster numbers). New
points get the vote of their nearest training points, as the manifold methods' do.
"""

from __future__ import annotations

import heapq

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.base import BaseEstimator, ClusterMixin

from .._validation import check_features, check_n_clusters, check_positive_int
from ..progress import progress
from ..recipes import LARGE_GREY, Recipe
from ..traits import MethodTraits
from ._manifold import ManifoldClusterer
from ._means import cluster_means


class GraphDegreeLinkage(ManifoldClusterer, MethodTraits, ClusterMixin, BaseEstimator):
    """Agglomerative clustering of ``X``'s directed ``n_neighbors``-nearest-neighbour graph by graph
    degree linkage, small clusters merged first.

    Parameters
    ----------
    n_clusters : int, default=10
    n_neighbors : int, default=5
        Out-edges of each point. Few edges keep the graph on each object's manifold (COIL-20: 5 gave
        ACC 0.997, 10 gave 0.953; benchmarks/RESULTS.md).
    bandwidth : float, default=1.0
        ``sigma^2`` of the edge weights, as a multiple of the mean squared distance of the edges.
    min_cluster_fraction : float, default=0.5
        While a cluster holds fewer than this fraction of n / n_clusters points, the smallest such cluster
        merges before any other pair. 0 turns the rule off (the paper's algorithm).
    n_vote : int, default=10
        Nearest training points that vote on a new point's cluster.
    verbose : bool or None
        Progress bars for the neighbour search and the merges (None: on a terminal).
    device, random_state
        Taken for a common interface with the other methods; the algorithm is not random and runs on
        the CPU.

    Attributes
    ----------
    labels_, cluster_centers_ (mean input vector per cluster), posterior_ (n, n_clusters: each
    cluster's share of the edge weight at a point, its own weight included), n_initial_clusters_
    (clusters after joining each point to its nearest neighbour), n_features_in_.
    """

    method_name = "graph-linkage"
    summary = "agglomerative clustering of the nearest-neighbour graph (graph degree linkage)"
    option_groups = ("graph_linkage",)
    saves_model = True
    # Larger grey images at 64 x 64: on COIL-20, 5 neighbours at 128 x 128 give 0.943; at 32 to 96 pixels
    # and 3 to 7 neighbours, 0.978-1.000, 17 of 20 above 0.99 (not random: one figure per setting).
    recipes = {LARGE_GREY: Recipe({}, "COIL-20 at 64 x 64: ACC 0.997, NMI 0.996 (deterministic)",
                                  resize_to=64)}

    def __init__(self, n_clusters: int = 10, *, n_neighbors: int = 5, bandwidth: float = 1.0,
                 min_cluster_fraction: float = 0.5, n_vote: int = 10, device: str = "cpu",
                 random_state=None, verbose=None):
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.bandwidth = bandwidth
        self.min_cluster_fraction = min_cluster_fraction
        self.n_vote = n_vote
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        """Cluster the rows of ``X`` (n, d) into ``n_clusters``; ``y`` is ignored."""
        X = check_features(X)
        n = X.shape[0]
        k = check_n_clusters(self.n_clusters, n)
        n_neighbors = min(check_positive_int(self.n_neighbors, "n_neighbors"), max(n - 1, 1))
        if not float(self.bandwidth) > 0:
            raise ValueError(f"bandwidth must be > 0; got {self.bandwidth!r}.")
        if not 0 <= float(self.min_cluster_fraction) <= 1:
            raise ValueError(f"min_cluster_fraction must be in [0, 1]; got {self.min_cluster_fraction!r}.")
        weights = (neighbour_graph(X, n_neighbors, float(self.bandwidth), verbose=self.verbose) if n > 1
                   else csr_matrix((n, n)))
        start = initial_clusters(weights, k)
        self.n_initial_clusters_ = int(start.max()) + 1
        labels = _Agglomeration(weights, start, X).merge_to(k, self.min_cluster_fraction * n / k,
                                                            verbose=self.verbose)
        self.labels_ = labels
        self.posterior_ = _edge_shares(weights, labels, k)
        self.cluster_centers_ = cluster_means(X, labels, k)
        self._train = torch.as_tensor(X)
        self.n_features_in_ = int(X.shape[1])
        return self


def neighbour_graph(X: np.ndarray, n_neighbors: int, bandwidth: float = 1.0, *,
                    chunk: int | None = None, verbose: bool | None = False) -> csr_matrix:
    """(n, n) sparse directed graph: ``exp(-d^2 / sigma^2)`` from each row of ``X`` to its ``n_neighbors``
    nearest other rows (exact Euclidean; ties to the lower index), ``sigma^2 = bandwidth`` x the mean
    squared distance of those edges. Memory: ``chunk`` x n distances at a time (None: 2^22 in all)."""
    n = X.shape[0]
    chunk = chunk or max(1, (1 << 22) // max(n, 1))
    Xt = torch.as_tensor(X, dtype=torch.float64)
    norms = (Xt * Xt).sum(1)
    dist = np.empty((n, n_neighbors))
    index = np.empty((n, n_neighbors), dtype=np.int64)
    for start in progress(range(0, n, chunk), desc="nearest neighbours", unit="chunk", enabled=verbose):
        rows = slice(start, min(start + chunk, n))
        d2 = (norms[rows, None] - 2 * Xt[rows] @ Xt.T + norms[None, :]).clamp_min_(0)
        d2[torch.arange(d2.shape[0]), torch.arange(rows.start, rows.stop)] = float("inf")  # not itself
        # a stable sort breaks equal distances by index, the same on every machine
        order = torch.sort(d2, dim=1, stable=True).indices[:, :n_neighbors]
        index[rows] = order.numpy()
        dist[rows] = torch.gather(d2, 1, order).numpy()
    scale = bandwidth * float(dist.mean())
    values = np.exp(-dist / scale) if scale > 0 else np.ones_like(dist)  # all rows equal: all edges 1
    return csr_matrix((values.ravel(), index.ravel(), np.arange(0, n * n_neighbors + 1, n_neighbors)),
                      shape=(n, n))


def initial_clusters(weights: csr_matrix, n_clusters: int) -> np.ndarray:
    """Labels 0..c-1 of the pieces that joining each point to its nearest neighbour makes (the
    paper's start); every point on its own where that leaves fewer than ``n_clusters`` pieces."""
    n = weights.shape[0]
    if n > 1 and np.all(np.diff(weights.indptr) > 0):
        nearest = np.asarray([weights.indices[a:b][np.argmax(weights.data[a:b])]
                              for a, b in zip(weights.indptr[:-1], weights.indptr[1:], strict=True)])
        pairs = csr_matrix((np.ones(n), (np.arange(n), nearest)), shape=(n, n))
        count, labels = connected_components(pairs, directed=False)
        if count >= n_clusters:
            return labels.astype(np.int64)
    return np.arange(n, dtype=np.int64)


class _Agglomeration:
    """Greedy merging by graph degree linkage, with affinities updated only where a merge changes them.

    ``to[a][c]`` is ``1/|a|^2 1' W[a, c] W[c, a] 1`` (the paths from a through c back to a) and
    ``frm[a][c]`` the same seen from c (``to[c][a]``); A(a, c) = to[a][c] + frm[a][c]. Merging b into a
    adds ``frm`` (sums over the merged cluster's points) and recomputes ``to[a]`` from the graph.
    """

    def __init__(self, weights: csr_matrix, labels: np.ndarray, X: np.ndarray):
        self.W = weights.tocsr()
        self.Wt = weights.T.tocsr()  # in-edges of each point
        self.X = X
        self.labels = labels.copy()
        count = int(labels.max()) + 1
        self.members = [list(np.flatnonzero(labels == c)) for c in range(count)]
        self.alive = np.ones(count, dtype=bool)
        self.stamp = np.zeros(count, dtype=np.int64)
        # all initial affinities at once: P[c, a] = sum over j in c of in(j, a) * out(j, a)
        one_hot = csr_matrix((np.ones(len(labels)), (np.arange(len(labels)), labels)),
                             shape=(len(labels), count))
        paths = one_hot.T @ (self.Wt @ one_hot).multiply(self.W @ one_hot)
        sizes = np.bincount(labels, minlength=count).astype(np.float64)
        seen = paths.T.tocoo()  # [a, c]: paths from a through c
        self.to: list[dict[int, float]] = [{} for _ in range(count)]
        self.frm: list[dict[int, float]] = [{} for _ in range(count)]
        for a, c, v in zip(seen.row, seen.col, seen.data, strict=True):
            if a != c and v > 0:
                self.to[a][int(c)] = v / sizes[a] ** 2
                self.frm[c][int(a)] = v / sizes[a] ** 2
        self.heap: list = []
        for a in range(count):
            self._push_pairs(a, higher_only=True)  # each pair once

    def affinity(self, a: int, c: int) -> float:
        return self.to[a].get(c, 0.0) + self.frm[a].get(c, 0.0)

    def _push_pairs(self, a: int, *, higher_only: bool = False) -> None:
        """Queue every pair of ``a`` with a path (``higher_only``: the partners numbered above ``a``)."""
        for c in set(self.to[a]) | set(self.frm[a]):
            if higher_only and c < a:
                continue
            lo, hi = min(a, c), max(a, c)
            heapq.heappush(self.heap, (-self.affinity(a, c), lo, hi, self.stamp[lo], self.stamp[hi]))

    def merge_to(self, n_clusters: int, min_size: float, *, verbose: bool | None = False) -> np.ndarray:
        """Labels 0..n_clusters-1 (numbered by their first point) once ``n_clusters`` clusters are left.

        While a cluster of fewer than ``min_size`` points is left, the best pair that holds one merges:
        two clusters of ``min_size`` or more wait."""
        sizes = np.array([len(m) for m in self.members])
        self.n_small = int(np.sum(sizes < min_size))
        left = int(self.alive.sum())
        with progress(total=max(left - n_clusters, 0), desc="merging", unit="merge", enabled=verbose) as bar:
            while left > n_clusters:
                a, b = self._best_pair(min_size)
                self._merge(a, b, min_size)
                left -= 1
                bar.update()
        _, labels = np.unique(self.labels, return_inverse=True)
        first = np.full(labels.max() + 1, len(labels))
        np.minimum.at(first, labels, np.arange(len(labels)))
        return np.argsort(np.argsort(first))[labels].astype(np.int64)

    def _best_pair(self, min_size: float) -> tuple[int, int]:
        """The valid pair of largest affinity (lower numbers first on ties), one of them small while
        small clusters are left."""
        waiting = []
        found = None
        while self.heap:
            entry = heapq.heappop(self.heap)
            _, lo, hi, s_lo, s_hi = entry
            if not (self.alive[lo] and self.alive[hi] and self.stamp[lo] == s_lo and self.stamp[hi] == s_hi):
                continue  # a merge changed it since
            if self.n_small and min(len(self.members[lo]), len(self.members[hi])) >= min_size:
                waiting.append(entry)
                continue
            found = (lo, hi)
            break
        for entry in waiting:
            heapq.heappush(self.heap, entry)
        if found is not None:
            return found
        # no two clusters share a path (or only large ones do): the closest means merge
        small = [c for c in np.flatnonzero(self.alive) if len(self.members[c]) < min_size]
        if small:
            return self._closest(int(small[0]))
        return self._nearest_centres()

    def _closest(self, a: int) -> tuple[int, int]:
        """``a`` and the cluster most of its out-edges reach (else the nearest mean), in order."""
        rows = self.W[self.members[a]].tocoo()
        targets = self.labels[rows.col]
        outside = targets != a
        if outside.any():
            c = int(np.argmax(np.bincount(targets[outside], weights=rows.data[outside])))
            return min(a, c), max(a, c)
        return self._nearest_centres(a)

    def _nearest_centres(self, a: int | None = None) -> tuple[int, int]:
        """The pair of clusters (one of them ``a`` if given) whose means are closest."""
        ids = np.flatnonzero(self.alive)
        means = np.stack([self.X[self.members[c]].mean(0, dtype=np.float64) for c in ids])
        squares = (means * means).sum(1)
        d = squares[:, None] - 2 * means @ means.T + squares[None, :]
        np.fill_diagonal(d, np.inf)
        if a is not None:
            c = int(ids[np.argmin(d[int(np.flatnonzero(ids == a)[0])])])
            return min(a, c), max(a, c)
        i, j = np.unravel_index(np.argmin(d), d.shape)
        return int(ids[i]), int(ids[j])

    def _merge(self, a: int, b: int, min_size: float) -> None:
        """Merge cluster ``b`` into ``a`` and update the affinities that change."""
        self.n_small -= (len(self.members[a]) < min_size) + (len(self.members[b]) < min_size)
        self.n_small += len(self.members[a]) + len(self.members[b]) < min_size
        for c in set(self.to[a]) | set(self.to[b]):
            self.frm[c].pop(a, None)
            self.frm[c].pop(b, None)
        for c in set(self.frm[a]) | set(self.frm[b]):
            self.to[c].pop(a, None)
            self.to[c].pop(b, None)
        seen_from = {c: self.frm[a].get(c, 0.0) + self.frm[b].get(c, 0.0)
                     for c in set(self.frm[a]) | set(self.frm[b])}  # paths from c through a or b: they add
        seen_from.pop(a, None), seen_from.pop(b, None)
        self.members[a] = self.members[a] + self.members[b]
        self.members[b] = []
        self.labels[self.members[a]] = a
        self.alive[b] = False
        self.to[b], self.frm[b] = {}, {}
        self.stamp[a] += 1
        self.frm[a] = seen_from
        for c, v in seen_from.items():
            self.to[c][a] = v
        self.to[a] = self._paths_from(a)
        for c, v in self.to[a].items():
            self.frm[c][a] = v
        self._push_pairs(a)

    def _paths_from(self, a: int) -> dict[int, float]:
        """``1/|a|^2 1' W[a, c] W[c, a] 1`` for every cluster c != a that has such a path."""
        members = self.members[a]
        into = np.asarray(self.W[members].sum(axis=0)).ravel()  # weight from a into each point
        back = np.asarray(self.Wt[members].sum(axis=0)).ravel()  # weight from each point into a
        both = np.flatnonzero((into > 0) & (back > 0))
        both = both[self.labels[both] != a]
        sums = np.bincount(self.labels[both], weights=into[both] * back[both], minlength=len(self.alive))
        size2 = float(len(members)) ** 2
        return {int(c): float(sums[c] / size2) for c in np.flatnonzero(sums > 0)}


def _edge_shares(weights: csr_matrix, labels: np.ndarray, k: int) -> np.ndarray:
    """(n, k) float32: each cluster's share of the edge weight at each point, in and out, plus the
    point's own label with weight 1."""
    one_hot = np.eye(k, dtype=np.float64)[labels]
    shares = (weights @ one_hot) + (weights.T @ one_hot) + one_hot
    return (shares / shares.sum(1, keepdims=True)).astype(np.float32)


__all__ = ["GraphDegreeLinkage", "initial_clusters", "neighbour_graph"]
