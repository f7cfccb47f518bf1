"""UMAP + Gaussian mixture on feature vectors: the manifold and clustering stages of N2D, on any embedding.

On its own (``--method umap-gmm``) it clusters pixels or pretrained features; N2D runs the same stage on
its autoencoder's embedding. New points are assigned by a distance-weighted vote of their ``n_vote``
nearest training points in the input space: UMAP has no exact out-of-sample map, and a vote keeps a
saved model free of pickled objects. A training point's own label is returned for itself.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.mixture import GaussianMixture

from .._validation import check_features, check_n_clusters, check_positive_int
from ..manifold import umap_embed
from ..traits import MethodTraits
from ._means import cluster_means


class UMAPGMM(MethodTraits, ClusterMixin, BaseEstimator):
    """UMAP of ``X`` to ``manifold_dim`` dimensions (default n_clusters), then a full-covariance GMM.

    Parameters
    ----------
    n_clusters : int, default=10
    n_neighbors : int, default=20
        UMAP's neighbourhood size (N2D's 20; fewer keeps finer structure).
    min_dist : float, default=0.0
        0 packs each cluster tightly, which is what a clustering wants (N2D).
    manifold_dim : int or None, default=None (n_clusters)
    metric : str, default="euclidean"
        UMAP's metric ("cosine" suits pretrained features).
    n_vote : int, default=10
        Nearest training points that vote on a new point's cluster.
    gmm_n_init : int, default=10
        Gaussian-mixture restarts; the one with the highest likelihood is kept. One restart often lands
        in a local optimum that merges two classes and splits another (USPS, one UMAP: ACC 0.83 with 1
        restart, 0.95 with 10), and restarts cost seconds next to UMAP.
    random_state : int or None
        Seeds UMAP and the mixture.

    Attributes
    ----------
    labels_, cluster_centers_ (mean input vector per cluster), manifold_ (n, manifold_dim),
    posterior_ (n, n_clusters: the mixture's probabilities of the training points), n_features_in_.
    """

    method_name = "umap-gmm"
    summary = "UMAP, then a Gaussian mixture, on the pixels or features (N2D without the autoencoder)"
    option_groups = ("manifold",)
    saves_model = True

    def __init__(self, n_clusters: int = 10, *, n_neighbors: int = 20, min_dist: float = 0.0,
                 manifold_dim: int | None = None, metric: str = "euclidean", n_vote: int = 10,
                 gmm_n_init: int = 10, device: str = "cpu", random_state=None, verbose=None):
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.manifold_dim = manifold_dim
        self.metric = metric
        self.n_vote = n_vote
        self.gmm_n_init = gmm_n_init
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        """Map ``X`` (n, d) with UMAP and fit the mixture there; ``y`` is ignored."""
        X = check_features(X)
        k = check_n_clusters(self.n_clusters, X.shape[0])
        seed = 0 if self.random_state is None else int(self.random_state)
        n_neighbors = check_positive_int(self.n_neighbors, "n_neighbors")
        self.manifold_ = umap_embed(X, self.manifold_dim or k, n_neighbors, self.min_dist, seed,
                                    metric=self.metric)
        gmm = GaussianMixture(k, covariance_type="full", random_state=seed,
                              n_init=check_positive_int(self.gmm_n_init, "gmm_n_init"))
        self.labels_ = gmm.fit_predict(self.manifold_).astype(np.int64)
        self.posterior_ = gmm.predict_proba(self.manifold_).astype(np.float32)
        self.cluster_centers_ = cluster_means(X, self.labels_, k)
        self._train = torch.as_tensor(X)
        self.n_features_in_ = int(X.shape[1])
        return self

    def predict(self, X) -> np.ndarray:
        """Cluster of each row of ``X``: the nearest training points' vote (a training point: its own)."""
        shares, own = neighbour_votes(self._fitted_input(X), self._train, self.labels_, self.n_clusters,
                                      self.n_vote)
        pred = shares.argmax(1)
        exact = own >= 0
        pred[exact] = own[exact]
        return pred.numpy()

    def predict_proba(self, X) -> np.ndarray:
        """Each cluster's share of the nearest training points' vote, (n, n_clusters); rows sum to 1."""
        return neighbour_votes(self._fitted_input(X), self._train, self.labels_, self.n_clusters,
                               self.n_vote)[0].numpy()

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X).labels_

    # ------------------------------------------------------------- saving (deepclust.deep.checkpoint)
    _network_attr = None  # nothing but tensors to save

    def _extra_tensors(self) -> dict:
        return {"cluster_centers": self.cluster_centers_, "train_input": self._train,
                "train_labels": self.labels_}

    def _restore_extra_tensors(self, tensors: dict) -> None:
        self.cluster_centers_ = tensors["cluster_centers"].numpy()
        self._train = tensors["train_input"]
        self.labels_ = tensors["train_labels"].numpy()

    def _fitted_input(self, X) -> torch.Tensor:
        if not hasattr(self, "_train"):
            raise RuntimeError("This UMAPGMM instance is not fitted yet; call fit(X) first.")
        X = check_features(X)
        if X.shape[1] != self._train.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features; the model was fitted on {self._train.shape[1]}.")
        return torch.as_tensor(X)


def neighbour_votes(Z: torch.Tensor, train: torch.Tensor, train_labels: np.ndarray, n_clusters: int,
                    n_vote: int, *, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Vote shares (n, k) of the ``n_vote`` nearest training points, weighted by 1 / distance, and each
    point's own label where it is a training point (distance <= 1e-6), else -1. Memory: chunk x n_train."""
    labels = torch.as_tensor(train_labels)
    shares = torch.empty(Z.shape[0], n_clusters)
    own = torch.full((Z.shape[0],), -1, dtype=torch.int64)
    k = min(n_vote, train.shape[0])
    for start in range(0, Z.shape[0], chunk):
        dist = torch.cdist(Z[start:start + chunk], train)  # (b, n_train)
        d, idx = dist.topk(k, largest=False)
        weight = 1.0 / (d + 1e-8)
        votes = torch.zeros(d.shape[0], n_clusters).scatter_add_(1, labels[idx], weight)
        shares[start:start + d.shape[0]] = votes / votes.sum(dim=1, keepdim=True)
        exact = d[:, 0] <= 1e-6
        own[start:start + d.shape[0]][exact] = labels[idx[exact, 0]]
    return shares, own
