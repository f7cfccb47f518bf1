"""Uniform sampling over pseudo-classes: every non-empty cluster is drawn about equally often.

DeepCluster trains on batches drawn this way so that one huge cluster cannot dominate the
cross-entropy and swallow the others (the trivial solution of the paper's section 3.3).
"""

from __future__ import annotations

import numpy as np
import torch


def uniform_label_sampler(labels, n_samples: int, generator: torch.Generator) -> torch.Tensor:
    """``n_samples`` indices into ``labels``, about ``n_samples / n_nonempty`` from each non-empty cluster.

    Each cluster contributes ``n_samples // n_nonempty + 1`` draws, without replacement when it has
    that many members and with replacement otherwise; the pool is shuffled and cut to ``n_samples``.
    Empty clusters are skipped.
    """
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty 1-D array; got shape {tuple(labels.shape)}.")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1; got {n_samples}.")
    order = torch.argsort(labels, stable=True)
    clusters, counts = torch.unique_consecutive(labels[order], return_counts=True)
    per_cluster = n_samples // len(clusters) + 1
    picks = []
    for members in torch.split(order, counts.tolist()):
        if len(members) >= per_cluster:
            draw = torch.randperm(len(members), generator=generator)[:per_cluster]
        else:
            draw = torch.randint(len(members), (per_cluster,), generator=generator)
        picks.append(members[draw])
    pool = torch.cat(picks)
    return pool[torch.randperm(len(pool), generator=generator)][:n_samples]


__all__ = ["uniform_label_sampler"]
