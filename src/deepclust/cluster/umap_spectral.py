"""UMAP, then spectral clustering of the map's nearest-neighbour graph: a graph cut where a mixture merges.

On the 1,797 bundled digits every Gaussian mixture on a UMAP map of the pixels makes the same mistake
(the ones fall into two groups, and the eights share a cluster with the larger one: ACC ~0.88), while a
normalised cut of a wide neighbour graph of the same map (80 neighbours, about half a class) gives the
eights their own cluster: ACC 0.95-0.97 over 8 UMAP seeds (benchmarks/RESULTS.md, "The digits' default:
UMAP + spectral clustering"). Narrow graphs (20-50 neighbours) cut off small dense
groups instead and are not stable across seeds.

Spectral clustering: Shi & Malik 2000 (normalised cut), Ng, Jordan & Weiss 2002; the labels are read
from the spectral embedding by QR with column pivoting (Damle, Minden & Ying 2019), which has no
random start. New points get the vote of their nearest training points, as :class:`UMAPGMM`'s do.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import SpectralClustering

from .._validation import check_features, check_n_clusters, check_positive_int
from ..manifold import umap_embed
from ..traits import MethodTraits
from ._manifold import ManifoldClusterer
from ._means import cluster_means


class UMAPSpectral(ManifoldClusterer, MethodTraits, ClusterMixin, BaseEstimator):
    """UMAP of ``X`` to ``manifold_dim`` dimensions (default n_clusters), then spectral clustering of the
    map's ``graph_neighbors``-nearest-neighbour graph.

    Parameters
    ----------
    n_clusters : int, default=10
    n_neighbors : int, default=20
        UMAP's neighbourhood size (as N2D).
    min_dist : float, default=0.0
        0 packs each cluster tightly.
    manifold_dim : int or None, default=None (n_clusters)
    metric : str, default="euclidean"
        UMAP's metric ("cosine" suits pretrained features).
    n_epochs : int or None, default=200
        UMAP's layout epochs (None: umap-learn's, 500 below 10,000 points). 200 gave the same clusters'
        accuracy on the digits as 500 (benchmarks/RESULTS.md) in less time.
    graph_neighbors : int or None, default=None
        Neighbours of each point in the graph that is cut, on the map. None: 80, but at most half the
        mean cluster size (n / (2 n_clusters)), so that most of a point's neighbours can share its
        cluster (the digits: 80, about half a class). The graph is symmetrised (A + A.T) / 2 with 0/1
        edges, as scikit-learn's ``affinity="nearest_neighbors"``.
    n_vote : int, default=10
        Nearest training points that vote on a new point's cluster.
    random_state : int or None
        Seeds UMAP and the eigen-solver's start.

    Attributes
    ----------
    labels_, cluster_centers_ (mean input vector per cluster), manifold_ (n, manifold_dim),
    posterior_ (n, n_clusters: each cluster's share of a point's graph neighbours, itself included),
    graph_neighbors_ (the graph's neighbours per point), n_features_in_.
    """

    method_name = "umap-spectral"
    summary = "UMAP of the pixels or features, then spectral clustering of the map's neighbour graph"
    option_groups = ("manifold",)
    saves_model = True
    GRAPH_NEIGHBORS = 80  # graph_neighbors=None on large enough data (benchmarks/RESULTS.md)

    def __init__(self, n_clusters: int = 10, *, n_neighbors: int = 20, min_dist: float = 0.0,
                 manifold_dim: int | None = None, metric: str = "euclidean", n_epochs: int | None = 200,
                 graph_neighbors: int | None = None, n_vote: int = 10, device: str = "cpu", random_state=None,
                 verbose=None):
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.manifold_dim = manifold_dim
        self.metric = metric
        self.n_epochs = n_epochs
        self.graph_neighbors = graph_neighbors
        self.n_vote = n_vote
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        """Map ``X`` (n, d) with UMAP and cut the map's neighbour graph into ``n_clusters``; ``y`` is
        ignored."""
        X = check_features(X)
        k = check_n_clusters(self.n_clusters, X.shape[0])
        seed = 0 if self.random_state is None else int(self.random_state)
        n_neighbors = check_positive_int(self.n_neighbors, "n_neighbors")
        if self.graph_neighbors is None:
            graph_neighbors = max(2, min(self.GRAPH_NEIGHBORS, X.shape[0] // (2 * k)))
        else:
            graph_neighbors = min(check_positive_int(self.graph_neighbors, "graph_neighbors"), X.shape[0] - 1)
        n_epochs = None if self.n_epochs is None else check_positive_int(self.n_epochs, "n_epochs")
        self.manifold_ = umap_embed(X, self.manifold_dim or k, n_neighbors, self.min_dist, seed,
                                    metric=self.metric, n_epochs=n_epochs)
        self.graph_neighbors_ = graph_neighbors
        cut = SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=graph_neighbors,
                                 assign_labels="cluster_qr", random_state=seed)
        with warnings.catch_warnings():  # a map whose clusters are apart has a graph in several pieces:
            warnings.filterwarnings("ignore", "Graph is not fully connected")  # each piece is cut alone
            self.labels_ = cut.fit_predict(self.manifold_).astype(np.int64)
        self.posterior_ = _neighbour_shares(cut.affinity_matrix_, self.labels_, k)
        self.cluster_centers_ = cluster_means(X, self.labels_, k)
        self._train = torch.as_tensor(X)
        self.n_features_in_ = int(X.shape[1])
        return self


def _neighbour_shares(graph, labels: np.ndarray, k: int) -> np.ndarray:
    """(n, k) float32: each cluster's share of the edge weight at every node of the sparse ``graph``."""
    weights = graph @ np.eye(k, dtype=np.float64)[labels]  # (n, k): edge weight into each cluster
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


__all__ = ["UMAPSpectral"]
