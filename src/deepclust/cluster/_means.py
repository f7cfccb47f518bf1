"""Cluster centres as the mean of each cluster's rows, for methods whose clusters are not centroids."""

from __future__ import annotations

import numpy as np


def cluster_means(X: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(k, d) float32: the mean of each cluster's rows of ``X``.

    An empty cluster gets zeros, not NaN: centres are saved with the model and a saved model with a
    NaN centre is refused as damaged when it is loaded again.
    """
    return np.stack([X[labels == c].mean(0) if np.any(labels == c) else np.zeros(X.shape[1], np.float32)
                     for c in range(k)]).astype(np.float32)
