"""Clustering metrics: pure functions returning plain floats.

External metrics compare predicted clusters with true classes (:mod:`.external`); internal metrics judge
a clustering from the features alone (:mod:`.internal`). :func:`evaluate_clustering` computes whichever
apply and returns one flat, JSON-serialisable dict.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from numpy.typing import ArrayLike

from .._validation import check_features
from ._labels import check_clusterings, check_labels, unique_codes
from .external import (
    Contingency,
    adjusted_rand_index,
    cluster_to_class_mapping,
    clustering_accuracy,
    confusion_matrix,
    contingency_matrix,
    normalized_mutual_info,
)
from .internal import (
    EXACT_COST_BUDGET,
    dunn_index,
    dunn_report,
    silhouette_report,
    silhouette_score,
)

__all__ = [
    "EXACT_COST_BUDGET",
    "METRICS",
    "Contingency",
    "adjusted_rand_index",
    "check_clusterings",
    "check_labels",
    "cluster_to_class_mapping",
    "clustering_accuracy",
    "confusion_matrix",
    "contingency_matrix",
    "dunn_index",
    "dunn_report",
    "evaluate_clustering",
    "normalized_mutual_info",
    "silhouette_report",
    "silhouette_score",
]

#: External metrics by short name: ``METRICS[name](labels_true, labels_pred) -> float``.
METRICS: dict[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "acc": clustering_accuracy,
    "nmi": normalized_mutual_info,
    "ari": adjusted_rand_index,
}


def evaluate_clustering(labels_pred: ArrayLike, labels_true: ArrayLike | None = None,
                        X: ArrayLike | None = None, *,
                        random_state: int | None = 0) -> dict[str, float | int | bool | None]:
    """Score a clustering with every metric that applies; returns a flat dict of plain Python values.

    Always ``n_samples`` and ``n_clusters`` (distinct predicted clusters). With ``labels_true``: ``acc``,
    ``nmi``, ``ari``. With ``X``: ``silhouette``, ``silhouette_exact``, ``silhouette_sample_size``,
    ``dunn``, ``dunn_exact``, ``dunn_sample_size`` (``sample_size="auto"``, see
    :mod:`deepclust.metrics.internal`). When the internal metrics are undefined (fewer than 2 clusters, or
    one cluster per sample, e.g. a collapsed deep clustering) their entries are None and a
    ``RuntimeWarning`` says why, so a degenerate run can still be reported.
    """
    labels_pred = check_labels(labels_pred, name="labels_pred")
    n_samples = int(labels_pred.shape[0])
    n_clusters = int(unique_codes(labels_pred)[0].size)
    out: dict[str, float | int | bool | None] = {"n_samples": n_samples, "n_clusters": n_clusters}
    if labels_true is not None:
        labels_true, labels_pred = check_clusterings(labels_true, labels_pred)
        for name, metric in METRICS.items():
            out[name] = metric(labels_true, labels_pred)
    if X is not None:
        X = check_features(X)
        if X.shape[0] != n_samples:
            raise ValueError(f"X must have one row per label; got {X.shape[0]} rows for {n_samples} labels.")
        if 2 <= n_clusters <= n_samples - 1:
            sil = silhouette_report(X, labels_pred, random_state=random_state)
            dunn = dunn_report(X, labels_pred, random_state=random_state)
        else:
            warnings.warn(f"Silhouette and Dunn's index need 2 <= n_clusters <= n_samples - 1; got "
                          f"n_clusters={n_clusters} for n_samples={n_samples}. They are reported as None.",
                          RuntimeWarning, stacklevel=2)
            sil = {"value": None, "exact": None, "sample_size": None}
            dunn = {"value": None, "exact": None, "sample_size": None}
        out.update(silhouette=sil["value"], silhouette_exact=sil["exact"],
                   silhouette_sample_size=sil["sample_size"], dunn=dunn["value"], dunn_exact=dunn["exact"],
                   dunn_sample_size=dunn["sample_size"])
    return out
