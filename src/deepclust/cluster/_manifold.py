"""What the clusterers of a UMAP map share: new points are assigned by their nearest training points.

UMAP has no exact out-of-sample map, so a new point gets the distance-weighted vote of its ``n_vote``
nearest training points in the input space, and a training point its own label. Saving keeps only
tensors (the training input and labels), so a saved model holds no pickled objects.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_features


class ManifoldClusterer:
    """Prediction and saving for an estimator whose ``fit`` sets ``labels_``, ``cluster_centers_``,
    ``n_features_in_`` and ``_train`` (the training input as a tensor), and has ``n_clusters``, ``n_vote``."""

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
            raise RuntimeError(f"This {type(self).__name__} instance is not fitted yet; call fit(X) first.")
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
