"""Empty-cluster repair: no cluster may be empty after a clustering step.

The remedy of DeepCluster's section 3.3 (and of faiss's ``split_clusters``): give an empty
cluster the centroid of a non-empty one, chosen with probability proportional to its size minus
one, perturb the two copies symmetrically by a small random step, and split the donor's members
between them. If the split leaves a side empty (e.g. duplicate points), the donor's member farthest
from its centre moves to the empty cluster.
"""

from __future__ import annotations

import numpy as np
import torch


def repair_empty_clusters(X, labels, centers, generator: torch.Generator, *,
                          eps: float = 1.0 / 1024) -> tuple[np.ndarray, np.ndarray, int]:
    """Return ``(labels, centers, n_repaired)`` with every one of the k clusters non-empty.

    ``X`` (n, d) features, ``labels`` (n,) in [0, k), ``centers`` (k, d). Needs n >= k.
    """
    X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long).clone()
    centers = torch.as_tensor(np.asarray(centers, dtype=np.float32)).clone()
    k = centers.shape[0]
    if X.shape[0] < k:
        raise ValueError(f"Cannot fill {k} clusters with {X.shape[0]} samples; use fewer clusters.")
    repaired = 0
    while True:
        sizes = torch.bincount(labels, minlength=k)
        empty = torch.nonzero(sizes == 0).flatten()
        if len(empty) == 0:
            break
        target = int(empty[0])
        weights = (sizes - 1).clamp_min(0).double()
        donor = int(torch.multinomial(weights, 1, generator=generator))
        step = (torch.rand(centers.shape[1], generator=generator) * 2 - 1) * eps
        base = centers[donor].clone()
        scale = base.abs().clamp_min(1e-6)
        centers[target], centers[donor] = base + step * scale, base - step * scale
        members = torch.nonzero(labels == donor).flatten()
        pts = X[members]
        to_target = (pts - centers[target]).pow(2).sum(1) < (pts - centers[donor]).pow(2).sum(1)
        if bool(to_target.all()) or not bool(to_target.any()):  # the split failed: move one point
            far = members[(pts - base).pow(2).sum(1).argmax()]
            labels[members] = donor
            labels[far] = target
            centers[donor] = X[labels == donor].mean(0)
            centers[target] = X[far]
        else:
            labels[members[to_target]] = target
        repaired += 1
    return labels.numpy(), centers.numpy(), repaired


__all__ = ["repair_empty_clusters"]
