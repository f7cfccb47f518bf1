"""External metrics: compare predicted clusters with true classes.

Every function takes ``(labels_true, labels_pred)``, two 1-D integer arrays of the same length, and
checks them with one validator (:func:`~deepclust.metrics._labels.check_clusterings`). Cluster ids are
arbitrary: every score is invariant to renaming the clusters (and the classes).

NMI and ARI follow scikit-learn's definitions (NMI with arithmetic normalisation, its default) and agree
with ``sklearn.metrics`` to floating-point rounding; they are computed from the non-zero cells of the
contingency table only, so they never build a dense ``n_classes x n_clusters`` matrix.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

from ._labels import check_clusterings, unique_codes

# Contingency cells counted with one bincount when there are no more than this many.
_COUNTED_CELLS = 2**22
# A dense contingency matrix larger than this (int64 cells, ~1 GiB) is refused: two labelings with
# that many distinct values are almost certainly not labels.
_MAX_DENSE_CELLS = 2**27


class Contingency(NamedTuple):
    """A labelled count matrix: ``matrix[i, j]`` = number of samples of class ``classes[i]`` in cluster
    ``clusters[j]``. Unpacks as ``matrix, classes, clusters = ...``."""

    matrix: np.ndarray  # (n_classes, n_clusters) int64
    classes: np.ndarray  # (n_classes,) int64, the row labels
    clusters: np.ndarray  # (n_clusters,) int64, the column labels


def _encode(labels_true: np.ndarray, labels_pred: np.ndarray):
    """Map both labelings to 0..k-1: classes, class codes, clusters, cluster codes."""
    classes, t = unique_codes(labels_true)
    clusters, p = unique_codes(labels_pred)
    return classes, t, clusters, p


def _sparse_counts(labels_true: np.ndarray, labels_pred: np.ndarray):
    """Non-zero contingency cells (counts, row codes, column codes) and the two marginals."""
    classes, t, clusters, p = _encode(labels_true, labels_pred)
    class_sizes = np.bincount(t, minlength=classes.size)
    cluster_sizes = np.bincount(p, minlength=clusters.size)
    t *= clusters.size  # ``t`` is this function's own array: each sample's cell id is built in place
    t += p
    if classes.size * clusters.size <= _COUNTED_CELLS:
        dense = np.bincount(t, minlength=classes.size * clusters.size)
        cells = np.flatnonzero(dense)
        counts = dense[cells]
    else:
        cells, counts = np.unique(t, return_counts=True)
    rows, cols = np.divmod(cells, clusters.size)
    return counts, rows, cols, class_sizes, cluster_sizes


def contingency_matrix(labels_true: ArrayLike, labels_pred: ArrayLike) -> Contingency:
    """Count the samples of each class in each cluster.

    Returns
    -------
    Contingency
        ``(matrix, classes, clusters)``: ``matrix`` of shape (n_classes, n_clusters), int64, rows in
        ascending class id, columns in ascending cluster id; ``classes`` and ``clusters`` are those ids.
    """
    labels_true, labels_pred = check_clusterings(labels_true, labels_pred)
    classes, t, clusters, p = _encode(labels_true, labels_pred)
    cells = classes.size * clusters.size
    if cells > _MAX_DENSE_CELLS:
        raise ValueError(
            f"The contingency matrix would have {classes.size} classes x {clusters.size} clusters = {cells} "
            f"cells (limit {_MAX_DENSE_CELLS}). Are labels_true and labels_pred really labels?"
        )
    t *= clusters.size  # ``t`` is this function's own array: each sample's cell id is built in place
    t += p
    matrix = np.bincount(t, minlength=cells).reshape(classes.size, clusters.size)
    return Contingency(matrix.astype(np.int64, copy=False), classes, clusters)


def _hungarian(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the one-to-one matching with the largest total count (rows ascending).

    With more clusters than classes some clusters stay unmatched, and vice versa.
    """
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    return rows, cols


def clustering_accuracy(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Unsupervised clustering accuracy (ACC): the accuracy under the best one-to-one cluster -> class map.

    The map is found with the Hungarian algorithm on the contingency matrix. When the numbers of clusters
    and classes differ, the extra clusters (or classes) stay unmatched and their samples count as wrong,
    so over-clustering cannot reach 1.0 by splitting classes. Symmetric in its two arguments.
    """
    contingency = contingency_matrix(labels_true, labels_pred)
    rows, cols = _hungarian(contingency.matrix)
    n_samples = int(contingency.matrix.sum())
    return float(contingency.matrix[rows, cols].sum() / n_samples)


def normalized_mutual_info(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Normalized mutual information, ``MI / mean(H(true), H(pred))`` (natural log; in [0, 1]).

    Same as ``sklearn.metrics.normalized_mutual_info_score`` with ``average_method="arithmetic"``: 1.0
    when both labelings put everything in one group, 0.0 when only one of them does.
    """
    labels_true, labels_pred = check_clusterings(labels_true, labels_pred)
    counts, rows, cols, class_sizes, cluster_sizes = _sparse_counts(labels_true, labels_pred)
    if counts.size == class_sizes.size == cluster_sizes.size:
        return 1.0  # identical partitions up to renaming (also both single groups): skip the rounding
    if class_sizes.size == 1 or cluster_sizes.size == 1:
        return 0.0  # MI <= min(H_true, H_pred) = 0 while the normaliser is positive
    n = float(labels_true.shape[0])
    counts = counts.astype(np.float64)
    # MI = sum_ij p_ij log(p_ij / (p_i p_j)) = sum_ij (n_ij / n) log(n n_ij / (n_i n_j)), non-zero cells only
    mi = np.sum(counts / n * (np.log(counts) + np.log(n) - np.log(class_sizes[rows].astype(np.float64))
                              - np.log(cluster_sizes[cols].astype(np.float64))))
    mi = max(float(mi), 0.0)  # rounding can push an independent pair just below 0
    if mi == 0.0:
        return 0.0
    normaliser = (_entropy(class_sizes) + _entropy(cluster_sizes)) / 2.0
    return min(float(mi / normaliser), 1.0)  # MI <= mean entropy; rounding may not know it


def _entropy(sizes: np.ndarray) -> float:
    """Shannon entropy (nats) of a labeling, from its group sizes."""
    p = sizes[sizes > 0].astype(np.float64) / sizes.sum()
    return float(-np.sum(p * np.log(p)))


def adjusted_rand_index(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985): pair-counting agreement corrected for chance.

    1.0 for identical partitions, about 0 for independent ones, down to -0.5. Same as
    ``sklearn.metrics.adjusted_rand_score``; the pair counts are exact Python integers.
    """
    labels_true, labels_pred = check_clusterings(labels_true, labels_pred)
    counts, _, _, class_sizes, cluster_sizes = _sparse_counts(labels_true, labels_pred)
    n = int(labels_true.shape[0])
    sum_cells = int(np.sum(counts.astype(object) ** 2))
    sum_classes = int(np.sum(class_sizes.astype(object) ** 2))
    sum_clusters = int(np.sum(cluster_sizes.astype(object) ** 2))
    # Ordered pairs (i != j): together in both / in the cluster only / in the class only / in neither.
    tp = sum_cells - n
    fp = sum_clusters - sum_cells
    fn = sum_classes - sum_cells
    tn = n * n - fp - fn - sum_cells
    if fp == 0 and fn == 0:
        return 1.0
    return float(2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))


def confusion_matrix(labels_true: ArrayLike, labels_pred: ArrayLike) -> Contingency:
    """The contingency matrix with rows and columns reordered so the diagonal holds the Hungarian matches.

    Rows: the matched classes in ascending id, then any unmatched classes (only when there are fewer
    clusters than classes). Columns: the cluster matched to each of those rows, then the unmatched clusters
    in ascending id. So ``matrix[i, i]`` for ``i < min(n_classes, n_clusters)`` is the i-th matched pair and
    ``trace(matrix) / n_samples == clustering_accuracy(labels_true, labels_pred)``.

    Returns
    -------
    Contingency
        ``(matrix, classes, clusters)`` with ``classes``/``clusters`` the row/column ids in display order.
    """
    contingency = contingency_matrix(labels_true, labels_pred)
    rows, cols = _hungarian(contingency.matrix)
    n_classes, n_clusters = contingency.matrix.shape
    row_order = np.concatenate([rows, np.setdiff1d(np.arange(n_classes), rows)])
    col_order = np.concatenate([cols, np.setdiff1d(np.arange(n_clusters), cols)])
    return Contingency(contingency.matrix[np.ix_(row_order, col_order)],
                       contingency.classes[row_order], contingency.clusters[col_order])


def cluster_to_class_mapping(labels_true: ArrayLike, labels_pred: ArrayLike, *,
                             method: Literal["hungarian", "majority"] = "hungarian") -> dict[int, int]:
    """Map cluster ids to class ids, ``{cluster: class}``, keys in ascending cluster id.

    ``method="hungarian"``: the one-to-one matching that :func:`clustering_accuracy` uses. With more
    clusters than classes, the unmatched clusters are *absent* from the dict.
    ``method="majority"``: every cluster maps to its most frequent class (several clusters may share a
    class; this is the map behind purity). Ties go to the smallest class id.
    """
    if method not in ("hungarian", "majority"):
        raise ValueError(f"method must be 'hungarian' or 'majority'; got {method!r}.")
    matrix, classes, clusters = contingency_matrix(labels_true, labels_pred)
    if method == "majority":
        best = np.argmax(matrix, axis=0)  # argmax returns the first maximum: the smallest class id
        return {int(c): int(classes[r]) for c, r in zip(clusters, best, strict=True)}
    rows, cols = _hungarian(matrix)
    order = np.argsort(cols)
    return {int(clusters[cols[i]]): int(classes[rows[i]]) for i in order}
