"""N2D: the autoencoder embedding, then UMAP to a few dimensions, then a Gaussian mixture.

Reference: McConville, Santos-Rodriguez, Piechocki & Craddock, "N2D: (not too) deep clustering via
clustering the local manifold of an autoencoded embedding", ICPR 2020 (UMAP to n_clusters dimensions,
n_neighbors 20, min_dist 0, then a GMM).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from .._validation import check_positive_int
from .base import DeepClusterer, Initialization, as_image_tensor


def umap_embed(Z: np.ndarray, n_components: int, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    """The manifold stage: UMAP of the embedding (needs ``pip install 'deepclust[umap]'``)."""
    try:
        import umap
    except ImportError:
        raise ImportError("N2D needs umap-learn: pip install 'deepclust[umap]' (or umap-learn).") from None
    n_neighbors = min(n_neighbors, Z.shape[0] - 1)
    reducer = umap.UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist,
                        metric="euclidean", random_state=seed, n_jobs=1)
    return reducer.fit_transform(Z).astype(np.float32)


class N2D(DeepClusterer):
    """Autoencoder embedding -> UMAP (``manifold_dim`` dims, default n_clusters) -> Gaussian mixture.

    New points are assigned by a distance-weighted vote of their ``n_vote`` nearest training points in
    the autoencoder embedding (UMAP has no exact out-of-sample map; a vote keeps saved models free of
    pickled objects). A training point's own label is returned for itself.

    Parameters (besides :class:`~deepclust.deep.base.DeepClusterer`'s)
    ----------
    n_neighbors : int, default=20
    min_dist : float, default=0.0
    manifold_dim : int or None, default=None (n_clusters)
    n_vote : int, default=10
    gmm_n_init : int, default=10
        Gaussian-mixture restarts; the one with the highest likelihood is kept. One restart often
        lands in a local optimum that merges two classes and splits another (USPS, one UMAP: ACC
        0.83 with 1 restart, 0.95 with 10), and restarts cost seconds next to UMAP.
    """

    def __init__(self, n_clusters: int = 10, *, n_neighbors: int = 20, min_dist: float = 0.0,
                 manifold_dim: int | None = None, n_vote: int = 10, gmm_n_init: int = 10, **kwargs):
        super().__init__(n_clusters, **kwargs)
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.manifold_dim = manifold_dim
        self.n_vote = n_vote
        self.gmm_n_init = gmm_n_init

    def _fit_clusters(self, X, init: Initialization, y=None) -> None:
        Z = init.embedding.numpy()
        seed = self._seed()
        dim = self.manifold_dim or self.n_clusters
        self.manifold_ = umap_embed(Z, dim, self.n_neighbors, self.min_dist, seed)
        gmm = GaussianMixture(self.n_clusters, covariance_type="full", random_state=seed,
                              n_init=check_positive_int(self.gmm_n_init, "gmm_n_init"))
        self.labels_ = gmm.fit_predict(self.manifold_).astype(np.int64)
        # Centres in embedding space (for plots and nearest-centre views): mean embedding per cluster.
        self.cluster_centers_ = np.stack([Z[self.labels_ == c].mean(0) if np.any(self.labels_ == c)
                                          else np.zeros(Z.shape[1], np.float32)
                                          for c in range(self.n_clusters)]).astype(np.float32)
        self._train_embedding = torch.as_tensor(Z)
        self._log({"stage": "cluster", "iteration": 0}, y, self.labels_)

    def predict_proba(self, X) -> np.ndarray:
        """Each cluster's share of the distance-weighted vote of the ``n_vote`` nearest training points,
        (n_samples, n_clusters); rows sum to 1."""
        self._check_fitted()
        return self._votes(self._embed(as_image_tensor(X)))[0].numpy()

    def _assign(self, Z: torch.Tensor) -> np.ndarray:
        shares, own = self._votes(Z)
        pred = shares.argmax(1)
        exact = own >= 0  # a training point keeps its own label
        pred[exact] = own[exact]
        return pred.numpy()

    def _votes(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised vote shares (n, k), and each point's own label if it is a training point, else -1."""
        train, labels = self._train_embedding, torch.as_tensor(self.labels_)
        shares = torch.empty(Z.shape[0], self.n_clusters)
        own = torch.full((Z.shape[0],), -1, dtype=torch.int64)
        k = min(self.n_vote, train.shape[0])
        for start in range(0, Z.shape[0], 2048):
            dist = torch.cdist(Z[start:start + 2048], train)  # (b, n_train)
            d, idx = dist.topk(k, largest=False)
            weight = 1.0 / (d + 1e-8)
            votes = torch.zeros(d.shape[0], self.n_clusters).scatter_add_(1, labels[idx], weight)
            shares[start:start + d.shape[0]] = votes / votes.sum(dim=1, keepdim=True)
            exact = d[:, 0] <= 1e-6
            own[start:start + d.shape[0]][exact] = labels[idx[exact, 0]]
        return shares, own

    def _extra_tensors(self) -> dict:
        return {"cluster_centers": self.cluster_centers_, "train_embedding": self._train_embedding,
                "train_labels": self.labels_}

    def _restore_extra_tensors(self, tensors: dict) -> None:
        self.cluster_centers_ = tensors["cluster_centers"].numpy()
        self._train_embedding = tensors["train_embedding"]
        self.labels_ = tensors["train_labels"].numpy()
