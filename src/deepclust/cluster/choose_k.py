"""Choose the number of clusters when no labels say it: k-means for each k, keep the best silhouette.

The silhouette coefficient (Rousseeuw 1987) rewards tight clusters far from their neighbours and, unlike
the inertia, does not improve just because k grows, so its maximum over a range of k is a usable guess.
Every k is scored on the *same* random subset of points (at most ``sample_size``), so the curve compares
like with like and stays cheap on large data sets; k-means itself always runs on all points.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .._validation import check_features, check_positive_int, check_random_state
from ..metrics import silhouette_score
from ..progress import progress
from .kmeans import KMeans

DEFAULT_K_MAX = 20


@dataclass(frozen=True)
class KSelection:
    """The curve of a k search: ``scores[i]`` is the silhouette of k-means with ``ks[i]`` clusters
    (NaN where it is undefined, e.g. k-means found fewer than 2 distinct clusters)."""

    ks: list[int]
    scores: list[float]
    inertias: list[float]
    best_k: int
    criterion: str = "silhouette"
    n_samples: int = 0
    sample_size: int | None = None  # points the silhouette was computed on; None: all of them

    def to_dict(self) -> dict:
        """Plain JSON values; NaN scores become None (JSON has no NaN)."""
        out = asdict(self)
        out["scores"] = [None if math.isnan(s) else s for s in self.scores]
        return out


def default_k_values(n_samples: int, k_min: int = 2, k_max: int | None = None) -> list[int]:
    """``k_min .. k_max`` (inclusive), with ``k_max`` defaulting to ``min(20, n_samples - 1)`` and
    capped at ``n_samples - 1`` (the silhouette needs at least one cluster with two points)."""
    k_min = check_positive_int(k_min, "k_min", minimum=2)
    k_max = DEFAULT_K_MAX if k_max is None else check_positive_int(k_max, "k_max", minimum=2)
    k_max = min(k_max, n_samples - 1)
    if k_min > k_max:
        raise ValueError(f"No k to try: the range {k_min}..{k_max} is empty for {n_samples} samples; the "
                         f"silhouette needs 2 <= k <= n_samples - 1. Pass a smaller minimum (--k-range).")
    return list(range(k_min, k_max + 1))


def parse_k_range(text: str) -> tuple[int, int | None]:
    """``"MIN:MAX"`` (or ``"MIN:"`` for the default maximum) as integers, for ``--k-range``."""
    lo, sep, hi = str(text).partition(":")
    try:
        k_min = int(lo)
        k_max = int(hi) if hi.strip() else None
    except ValueError:
        raise ValueError(f"--k-range must look like MIN:MAX, e.g. 2:15; got {text!r}.") from None
    if not sep or k_min < 2 or (k_max is not None and k_max < k_min):
        raise ValueError(f"--k-range must be MIN:MAX with 2 <= MIN <= MAX, e.g. 2:15; got {text!r}.")
    return k_min, k_max


def choose_n_clusters(X, k_values: Sequence[int], random_state: int | None = 0, *, n_init: int = 10,
                      max_iter: int = 300, backend: str = "torch", device: str = "cpu",
                      sample_size: int | None = 5000, verbose: bool = False) -> KSelection:
    """Run k-means on ``X`` for every k in ``k_values`` and pick the k with the highest silhouette.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) (images are flattened)
    k_values : sequence of int, each with 2 <= k <= n_samples - 1
    random_state : int or None
        Seeds k-means (the same seed for every k) and the silhouette subset.
    n_init, max_iter, backend, device
        Passed to :class:`~deepclust.cluster.KMeans`.
    sample_size : int or None, default=5000
        The silhouette of every k is computed exactly on the same random subset of this many points
        (None: all points, quadratic in n_samples).

    Ties go to the smallest k. Raises ValueError when no k gives a defined silhouette.
    """
    X = check_features(X)
    n = X.shape[0]
    ks = _check_k_values(k_values, n)
    if sample_size is not None:
        sample_size = check_positive_int(sample_size, "sample_size", minimum=2)
    rng = check_random_state(random_state)
    seed = int(rng.integers(2**31 - 1))
    subset = None if sample_size is None or sample_size >= n else np.sort(rng.choice(n, sample_size,
                                                                                     replace=False))
    X_sub = X if subset is None else X[subset]
    scores, inertias = [], []
    for k in progress(ks, desc="choosing k", enabled=verbose):
        km = KMeans(k, n_init=n_init, max_iter=max_iter, backend=backend, device=device,
                    random_state=seed).fit(X)
        labels = km.labels_ if subset is None else km.labels_[subset]
        n_found = np.unique(labels).size
        score = (silhouette_score(X_sub, labels, sample_size=None) if 2 <= n_found < labels.size
                 else float("nan"))
        scores.append(float(score))
        inertias.append(float(km.inertia_))
    finite = [i for i, s in enumerate(scores) if not math.isnan(s)]
    if not finite:
        raise ValueError(f"The silhouette is undefined for every k in {ks[0]}..{ks[-1]}: k-means found fewer "
                         "than 2 distinct clusters (are the samples all identical?). Pass --clusters K.")
    best = max(finite, key=lambda i: (scores[i], -ks[i]))
    return KSelection(ks=ks, scores=scores, inertias=inertias, best_k=ks[best], n_samples=n,
                      sample_size=None if subset is None else int(subset.size))


def _check_k_values(k_values, n_samples: int) -> list[int]:
    if isinstance(k_values, (str, bytes)) or not isinstance(k_values, Sequence) or len(k_values) == 0:
        raise ValueError(f"k_values must be a non-empty sequence of integers; got {k_values!r}.")
    ks = []
    for k in k_values:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 2 <= k <= n_samples - 1:
            raise ValueError(f"Every k to try must be an integer with 2 <= k <= n_samples - 1 = "
                             f"{n_samples - 1} (the silhouette is undefined otherwise); got {k!r}.")
        ks.append(int(k))
    return sorted(set(ks))
