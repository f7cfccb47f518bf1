"""PNG plots of a clustering run: embeddings, reconstructions, loss curves, confusion matrix, montages.

Every function draws one :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot, so no global
figure registry and no display needed), writes it atomically with :func:`deepclust._io.atomic_open`
(creating parent folders), drops the figure, and returns the path of the PNG.

Images may be (N, H, W, C) with C = 1 (grey) or 3 (RGB), (N, H, W) grey, or torch-layout
(N, C, H, W) when C is 1 or 3 and the last dimension is not; uint8 values are divided by 255, floats are
clipped to [0, 1].
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .._io import atomic_open
from .._validation import check_features, check_positive_int, check_random_state
from ..metrics import check_clusterings, check_labels, confusion_matrix

__all__ = [
    "plot_cluster_montage",
    "plot_confusion_matrix",
    "plot_deepcluster_history",
    "plot_embedding",
    "plot_history",
    "plot_reconstructions",
]

_DPI = 100
_STAGE_ORDER = ("layerwise", "pretrain", "cluster")  # training order; unknown stages follow, first seen
_CLUSTER_METRICS = ("acc", "nmi", "delta_label")  # drawn on the cluster subplot's twin axis


# ------------------------------------------------------------------------------------------ embedding
def plot_embedding(Z: np.ndarray, labels: np.ndarray, path: str | os.PathLike, *,
                   true_labels: np.ndarray | None = None, title: str = "", method: str = "pca",
                   max_points: int = 5000, random_state: int = 0) -> Path:
    """Scatter an embedding in 2-D, coloured by cluster (and, beside it, by true class).

    Parameters
    ----------
    Z : array of shape (n_samples, d)
        d > 2 is reduced with PCA (``method="pca"``) or t-SNE (``method="tsne"``); d == 2 is drawn as
        is; d == 1 is drawn against zero.
    labels, true_labels : arrays of shape (n_samples,)
        Cluster ids, and optionally true classes for a second panel.
    max_points : int, default=5000
        At most this many points, drawn with ``random_state``, are reduced and drawn (t-SNE is
        quadratic in the number of points); both panels show the same points.
    """
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne'; got {method!r}.")
    max_points = check_positive_int(max_points, "max_points")
    if not (isinstance(Z, np.ndarray) and Z.ndim == 2):  # an array (e.g. memory-mapped) is checked below,
        Z = check_features(Z, name="Z", dtype=np.float64)  # only in the rows drawn
    labels = check_labels(labels, name="labels")
    _check_same_length(Z, "Z", labels, "labels")
    if true_labels is not None:
        true_labels = check_labels(true_labels, name="true_labels")
        _check_same_length(Z, "Z", true_labels, "true_labels")

    # A random order (not sorted) so that no cluster is always drawn on top of the others.
    keep = check_random_state(random_state).permutation(Z.shape[0])[:max_points]
    xy, axis_names = _to_2d(check_features(Z[keep], name="Z", dtype=np.float64), method, random_state)

    panels = [("clusters", labels[keep])]
    if true_labels is not None:
        panels.append(("true classes", true_labels[keep]))
    fig = Figure(figsize=(5.2 * len(panels) + 0.8, 4.6), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    size = float(np.clip(4000.0 / len(keep), 1.0, 12.0))  # small markers, a little larger for few points
    for ax, (name, group) in zip(axes, panels, strict=True):
        ids, codes = np.unique(group, return_inverse=True)
        colors = _group_colors(ids.size)
        ax.scatter(xy[:, 0], xy[:, 1], c=colors[codes.reshape(-1)], s=size, linewidths=0, alpha=0.8)
        ax.set_title(name)
        ax.set_xlabel(axis_names[0])
        if axis_names[1]:
            ax.set_ylabel(axis_names[1])
        else:
            ax.set_yticks([])
        if ids.size <= 20:
            handles = [Line2D([], [], marker="o", linestyle="", color=colors[i], label=str(g))
                       for i, g in enumerate(ids)]
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small",
                      frameon=False, handletextpad=0.1)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _to_2d(Z: np.ndarray, method: str, random_state: int) -> tuple[np.ndarray, tuple[str, str]]:
    """Coordinates (n, 2) and axis names; the second name is empty for a 1-D embedding."""
    n, d = Z.shape
    if d == 1:
        return np.column_stack([Z[:, 0], np.zeros(n)]), ("z1", "")
    if d == 2:
        return Z, ("z1", "z2")
    if n < 2:
        raise ValueError(f"Reducing a {d}-D embedding to 2-D needs at least 2 points; got {n}.")
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=random_state)
        xy = pca.fit_transform(Z)
        ratio = pca.explained_variance_ratio_
        return xy, (f"PC 1 ({ratio[0]:.0%})", f"PC 2 ({ratio[1]:.0%})")
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(1.0, (n - 1) / 3.0))  # sklearn needs perplexity < n_samples
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
              random_state=random_state).fit_transform(Z)
    return xy, ("t-SNE 1", "t-SNE 2")


def _group_colors(n_groups: int) -> np.ndarray:
    """RGBA rows, one per group: tab10/tab20 for up to 20 groups, an evenly sampled viridis beyond."""
    import matplotlib

    if n_groups <= 20:
        cmap: Colormap = matplotlib.colormaps["tab10" if n_groups <= 10 else "tab20"]
        return np.asarray(cmap(np.arange(n_groups)))
    return np.asarray(matplotlib.colormaps["viridis"](np.linspace(0.0, 1.0, n_groups)))


# ------------------------------------------------------------------------------------ reconstructions
def plot_reconstructions(images: np.ndarray, reconstructions: np.ndarray, path: str | os.PathLike, *,
                         n: int = 25, random_state: int = 0) -> Path:
    """A grid of ``n`` randomly chosen images (left) beside the same grid of their reconstructions
    (right), to judge an autoencoder by eye. ``n=25`` gives two 5x5 grids; all images if fewer."""
    images = _as_images(images, "images")
    reconstructions = _as_images(reconstructions, "reconstructions")
    if images.shape != reconstructions.shape:
        raise ValueError(f"images and reconstructions must have the same shape (N, H, W, C); got "
                         f"{images.shape} and {reconstructions.shape}.")
    n = min(check_positive_int(n, "n"), images.shape[0])
    pick = np.sort(check_random_state(random_state).choice(images.shape[0], size=n, replace=False))

    rows = math.ceil(math.sqrt(n))
    cols = math.ceil(n / rows)
    cell = 0.9 if max(images.shape[1:3]) > 16 else 0.6
    fig = Figure(figsize=(2 * cols * cell + 0.6, rows * cell + 0.5), dpi=_DPI, layout="constrained")
    for subfig, name, batch in zip(fig.subfigures(1, 2, wspace=0.04), ("original", "reconstruction"),
                                   (images[pick], reconstructions[pick]), strict=True):
        subfig.suptitle(name)
        axes = subfig.subplots(rows, cols, squeeze=False).reshape(-1)
        for i, ax in enumerate(axes):
            ax.set_axis_off()
            if i < n:
                _show(ax, batch[i])
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- history
def plot_history(history: Sequence[dict], path: str | os.PathLike) -> Path:
    """Loss curves, one subplot per training stage, from a fitted method's ``history_`` rows.

    Each row is a dict such as ``{"stage": "pretrain", "epoch": 3, "loss": 0.02}``; missing keys mean
    absent and rows without a numeric ``loss`` are skipped. The x axis is ``epoch``, or ``iteration``
    for cluster rows that all have one; layer-wise rows get one line per ``layer``. The cluster subplot
    also draws any of ``acc``, ``nmi`` and ``delta_label`` on a second y axis.
    """
    if isinstance(history, (str, bytes, dict)) or not isinstance(history, Sequence):
        raise ValueError(f"history must be a list of dicts; got {type(history).__name__}.")
    if len(history) == 0:
        raise ValueError("no history rows to plot")
    stages: dict[str, list[dict]] = {}
    for i, row in enumerate(history):
        if not isinstance(row, dict):
            raise ValueError(f"history rows must be dicts; row {i} is a {type(row).__name__}.")
        if _is_number(row.get("loss")):
            stages.setdefault(str(row.get("stage", "training")), []).append(row)
    if not stages:
        raise ValueError(f"no history rows to plot: none of the {len(history)} rows has a numeric 'loss'.")
    order = [s for s in _STAGE_ORDER if s in stages] + [s for s in stages if s not in _STAGE_ORDER]

    fig = Figure(figsize=(4.8 * len(order), 3.8), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, len(order), squeeze=False)[0]
    for ax, stage in zip(axes, order, strict=True):
        rows = stages[stage]
        x_key = _x_key(rows, prefer_iteration=stage == "cluster")
        layers = sorted({r["layer"] for r in rows if _is_number(r.get("layer"))})
        groups = [(f"layer {layer:g}", [r for r in rows if r.get("layer") == layer]) for layer in layers]
        if not groups or sum(len(g) for _, g in groups) != len(rows):
            groups = [("loss", rows)]
        for name, group in groups:
            _line(ax, group, x_key, "loss", label=name)
        losses = np.array([r["loss"] for r in rows], dtype=np.float64)
        finite = losses[np.isfinite(losses)]
        if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
            ax.set_yscale("log")  # reconstruction losses fall by orders of magnitude
        ax.set_title(stage)
        ax.set_xlabel(x_key or "logged step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and iterations are counts
        ax.set_ylabel("loss")
        handles, names = ax.get_legend_handles_labels()
        if stage == "cluster":
            twin = None
            for key, style in zip(_CLUSTER_METRICS, ("--", ":", "-."), strict=True):
                if any(_is_number(r.get(key)) for r in rows):
                    twin = twin or ax.twinx()
                    _line(twin, [r for r in rows if _is_number(r.get(key))], x_key, key, label=key,
                          linestyle=style, color=f"C{1 + _CLUSTER_METRICS.index(key)}")
            if twin is not None:
                twin.set_ylabel("acc / nmi / delta_label")
                more_handles, more_names = twin.get_legend_handles_labels()
                handles, names = handles + more_handles, names + more_names
        if stage == "cluster" and len(handles) > 1:  # below the axes: "best" cannot see the twin's lines
            ax.legend(handles, names, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16),
                      ncol=len(handles), frameon=False)
        elif len(handles) > 1:
            ax.legend(handles, names, fontsize="small")
    return _save(fig, path)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _x_key(rows: list[dict], *, prefer_iteration: bool) -> str | None:
    """The row key to plot against: iteration (if preferred and always present), epoch, else None
    (the row's position)."""
    for key in ("iteration", "epoch") if prefer_iteration else ("epoch",):
        if all(_is_number(r.get(key)) for r in rows):
            return key
    return None


def _line(ax, rows: list[dict], x_key: str | None, y_key: str, **style) -> None:
    x = [r[x_key] for r in rows] if x_key else list(range(1, len(rows) + 1))
    y = [r[y_key] for r in rows]
    marker = "o" if len(rows) <= 50 else None  # single points (or few) stay visible
    ax.plot(x, y, marker=marker, markersize=3, **style)


def plot_deepcluster_history(history: Sequence[dict], path: str | os.PathLike) -> Path:
    """DeepCluster's per-epoch curves from its ``history_``: the k-means objective, the cross-entropy,
    and the NMI between successive clusterings (t-1/t) with ACC and NMI against the truth when logged."""
    rows = [r for r in history if isinstance(r, dict) and _is_number(r.get("epoch"))]
    if not rows:
        raise ValueError("no DeepCluster history rows to plot: none has a numeric 'epoch'.")
    fig = Figure(figsize=(14.4, 3.8), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (("clustering loss (k-means objective)", ("clustering_loss",)),
              ("cross-entropy on pseudo-labels", ("cross_entropy",)),
              ("agreement", ("nmi_prev", "acc", "nmi")))
    names = {"nmi_prev": "NMI t-1/t", "acc": "ACC vs truth", "nmi": "NMI vs truth"}
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for i, key in enumerate(keys):
            points = [r for r in rows if _is_number(r.get(key))]
            if points:
                _line(ax, points, "epoch", key, label=names.get(key, key), color=f"C{i}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(keys) > 1:
            ax.set_ylim(0, 1.02)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small", loc="lower right")
    return _save(fig, path)


# ------------------------------------------------------------------------------------------ confusion
def plot_confusion_matrix(labels_true: np.ndarray, labels_pred: np.ndarray, path: str | os.PathLike, *,
                          class_names: list[str] | None = None) -> Path:
    """The class x cluster count matrix, columns in Hungarian-matched order so the diagonal holds the
    matched pairs (see :func:`deepclust.metrics.confusion_matrix`); counts are written in the cells
    when it is at most 20x20.

    ``class_names[k]`` names class id ``k``; None or an empty list shows the ids.
    """
    labels_true, labels_pred = check_clusterings(labels_true, labels_pred)
    matrix, classes, clusters = confusion_matrix(labels_true, labels_pred)
    if class_names:
        if classes.min() < 0 or classes.max() >= len(class_names):
            raise ValueError(f"class_names must name every class id; got {len(class_names)} names for class "
                             f"ids {classes.min()}..{classes.max()}.")
        row_names = [str(class_names[c]) for c in classes]
    else:
        row_names = [str(c) for c in classes]
    n_rows, n_cols = matrix.shape
    accuracy = np.trace(matrix) / matrix.sum()  # equals clustering_accuracy by construction

    width = min(max(4.5, 0.45 * n_cols + 2.5), 24.0)
    height = min(max(3.8, 0.4 * n_rows + 1.8), 24.0)
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="samples")
    _label_ticks(ax.set_xticks, n_cols, [str(c) for c in clusters])
    _label_ticks(ax.set_yticks, n_rows, row_names)
    ax.set_xlabel("cluster")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix (ACC {accuracy:.3f}; diagonal = matched pairs)", fontsize="medium")
    if n_rows <= 20 and n_cols <= 20:
        threshold = matrix.max() / 2.0
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", fontsize="small",
                    color="white" if count > threshold else "black")
    return _save(fig, path)


def _label_ticks(set_ticks, n: int, names: list[str], most: int = 40) -> None:
    """Ticks at matrix positions with their ids; every k-th one when there are too many to read."""
    positions = np.arange(0, n, max(1, math.ceil(n / most)))
    set_ticks(positions, [names[p] for p in positions])


# -------------------------------------------------------------------------------------------- montage
def plot_cluster_montage(images: np.ndarray, labels: np.ndarray, path: str | os.PathLike, *,
                         scores: np.ndarray | None = None, per_cluster: int = 10,
                         random_state: int = 0) -> Path:
    """One row per cluster (ascending id) of up to ``per_cluster`` of its images, labelled
    "cluster k (n)" with n its size: the highest ``scores`` first (e.g. confidence, or minus the
    distance to the centre) when given, else a random choice drawn with ``random_state``."""
    images = _as_images(images, "images")
    labels = check_labels(labels, name="labels")
    _check_same_length(images, "images", labels, "labels")
    per_cluster = check_positive_int(per_cluster, "per_cluster")
    if scores is not None:
        if isinstance(scores, torch.Tensor):
            scores = scores.detach().cpu().numpy()
        scores = np.asarray(scores)
        if scores.ndim != 1 or not (np.issubdtype(scores.dtype, np.number) or scores.dtype == bool):
            raise ValueError(f"scores must be a 1-D array of numbers (n_samples,); got shape {scores.shape} "
                             f"and dtype {scores.dtype}.")
        _check_same_length(images, "images", scores, "scores")
        scores = scores.astype(np.float64)
        if np.isnan(scores).any():
            raise ValueError(f"scores contains NaN at {int(np.isnan(scores).sum())} positions; every image "
                             "needs a score to be ranked.")
    rng = check_random_state(random_state)

    ids, sizes = np.unique(labels, return_counts=True)
    n_cols = int(min(per_cluster, sizes.max()))  # no empty columns when every cluster is small
    fig = Figure(figsize=(0.75 * n_cols + 1.6, 0.75 * ids.size + 0.3), dpi=_DPI, layout="constrained")
    axes = fig.subplots(ids.size, n_cols, squeeze=False)
    for row, k in zip(axes, ids, strict=True):
        members = np.flatnonzero(labels == k)
        if scores is not None:
            shown = members[np.argsort(-scores[members], kind="stable")[:n_cols]]
        else:
            shown = rng.choice(members, size=min(n_cols, members.size), replace=False)
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < shown.size:
                _show(ax, images[shown[j]])
            else:
                ax.set_frame_on(False)
        row[0].set_ylabel(f"cluster {k} ({members.size})", rotation=0, ha="right", va="center")
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- helpers
def _as_images(images, name: str) -> np.ndarray:
    """``images`` as float (N, H, W, C) in [0, 1] with C in (1, 3), or a ValueError saying why not."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    arr = np.asarray(images)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must hold numbers; got an array of dtype {arr.dtype}.")
    if arr.ndim == 3:  # (N, H, W) grey
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"{name} must be images of shape (N, H, W, C), (N, C, H, W) or (N, H, W); got "
                         f"shape {arr.shape}.")
    if arr.shape[-1] not in (1, 3):
        if arr.shape[1] not in (1, 3):
            raise ValueError(f"{name} must have 1 (grey) or 3 (RGB) channels, last (N, H, W, C) or second "
                             f"(N, C, H, W); got shape {arr.shape}.")
        arr = arr.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 images.")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def _show(ax, image: np.ndarray) -> None:
    """Draw one (H, W, C) image in [0, 1]: grey with the gray map, RGB as is."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")


def _check_same_length(a, a_name: str, b, b_name: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{a_name} and {b_name} must have one entry per sample; got {len(a)} and {len(b)}.")


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Render ``fig`` with Agg to a PNG at ``path`` (atomically), then free the figure."""
    path = Path(path)
    try:
        FigureCanvasAgg(fig)  # attaches itself as fig.canvas
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=_DPI)
    finally:
        fig.clear()
    return path


# --------------------------------------------------------------------------- report figures (report.py)
def plot_history_columns(history: Sequence[dict], path: str | os.PathLike, *,
                         columns: Sequence[str] | None = None, most: int = 8) -> Path:
    """Any logged history: one small panel per numeric column (all numeric columns but the step
    counters when ``columns`` is None, at most ``most``), one line per ``stage`` when rows have one,
    against ``epoch`` (else ``iteration``, else the row number). For histories that
    :func:`plot_history` cannot draw (no ``loss`` column)."""
    rows = [r for r in history if isinstance(r, dict)]
    counters = ("epoch", "iteration", "layer", "stage")
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k, v in r.items()
                                     if k not in counters and _is_number(v)))
    most = check_positive_int(most, "most")
    columns = [c for c in columns if any(_is_number(r.get(c)) for r in rows)][:most]
    if not columns:
        raise ValueError("no history columns to plot: no row has a numeric value besides its step counters.")
    stages = list(dict.fromkeys(str(r.get("stage", "")) for r in rows))
    n_cols = min(4, len(columns))
    n_rows = math.ceil(len(columns) / n_cols)
    fig = Figure(figsize=(3.6 * n_cols, 2.8 * n_rows), dpi=_DPI, layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).reshape(-1)
    for ax, column in zip(axes, columns, strict=False):
        having = [r for r in rows if _is_number(r.get(column))]
        x_key = next((k for k in ("epoch", "iteration") if all(_is_number(r.get(k)) for r in having)), None)
        for i, stage in enumerate(stages):
            points = [r for r in having if str(r.get("stage", "")) == stage]
            if points:
                _line(ax, points, x_key, column, label=stage or None, color=f"C{i}")
        ax.set_title(column, fontsize="medium")
        ax.set_xlabel(x_key or "logged step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(stages) > 1 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    for ax in axes[len(columns):]:
        ax.set_axis_off()
    return _save(fig, path)


def plot_k_selection(ks: Sequence[int], scores: Sequence[float | None], path: str | os.PathLike, *,
                     best_k: int | None = None, inertias: Sequence[float] | None = None,
                     criterion: str = "silhouette") -> Path:
    """The curve of a search for k: ``criterion`` against k with the chosen k marked, and the k-means
    inertia on a second axis when given (it always falls with k, so it is context, not the criterion).
    None or NaN scores (undefined) leave gaps."""
    ks = np.asarray(ks, dtype=np.float64)
    scores = np.array([np.nan if s is None else s for s in scores], dtype=np.float64)
    if ks.ndim != 1 or ks.size == 0 or scores.shape != ks.shape:
        raise ValueError(f"ks and scores must be 1-D of the same, non-zero length; got {ks.shape} and "
                         f"{scores.shape}.")
    fig = Figure(figsize=(6.4, 3.6), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    ax.plot(ks, scores, marker="o", markersize=4, color="C0", label=criterion)
    if best_k is not None and best_k in ks:
        best = scores[int(np.flatnonzero(ks == best_k)[0])]
        ax.axvline(best_k, color="C3", linestyle="--", linewidth=1)
        ax.plot([best_k], [best], marker="*", markersize=14, color="C3", linestyle="",
                label=f"chosen k = {best_k}")
    ax.set_xlabel("k (number of clusters)")
    ax.set_ylabel(criterion)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, names = ax.get_legend_handles_labels()
    if inertias is not None and len(inertias) == ks.size:
        twin = ax.twinx()
        twin.plot(ks, np.asarray(inertias, dtype=np.float64), color="0.6", linestyle=":", label="inertia")
        twin.set_ylabel("k-means inertia", color="0.4")
        more_handles, more_names = twin.get_legend_handles_labels()
        handles, names = handles + more_handles, names + more_names
    ax.legend(handles, names, fontsize="small", loc="best")
    ax.set_title(f"choosing k by {criterion}", fontsize="medium")
    return _save(fig, path)


def plot_metric_bars(rows: Sequence[dict], path: str | os.PathLike, *,
                     metrics: Sequence[tuple[str, str]] = (("acc", "ACC"), ("nmi", "NMI"), ("ari", "ARI"),
                                                           ("silhouette", "silhouette"), ("dunn", "Dunn"),
                                                           ("seconds", "time (s)"))) -> Path:
    """One bar chart per metric comparing methods: the mean over a method's rows (folds or seeds) with
    the sample standard deviation as an error bar; metrics no row has are left out."""
    methods = list(dict.fromkeys(str(r.get("method")) for r in rows if isinstance(r, dict)))
    if not methods:
        raise ValueError("no result rows to plot: each row must be a dict with a 'method'.")
    values = {(m, key): [float(r[key]) for r in rows if str(r.get("method")) == m and _is_number(r.get(key))
                        and math.isfinite(r[key])] for m in methods for key, _ in metrics}
    shown = [(key, name) for key, name in metrics if any(values[m, key] for m in methods)]
    if not shown:
        raise ValueError(f"no numeric metric to plot: the rows have none of {[k for k, _ in metrics]}.")
    n_cols = min(3, len(shown))
    n_rows = math.ceil(len(shown) / n_cols)
    fig = Figure(figsize=(max(3.2, 0.55 * len(methods) + 1.6) * n_cols, 3.0 * n_rows), dpi=_DPI,
                 layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).reshape(-1)
    colors = _group_colors(len(methods))
    x = np.arange(len(methods))
    for ax, (key, name) in zip(axes, shown, strict=False):
        means = [np.mean(values[m, key]) if values[m, key] else np.nan for m in methods]
        stds = [np.std(values[m, key], ddof=1) if len(values[m, key]) > 1 else 0.0 for m in methods]
        ax.bar(x, means, yerr=stds, color=colors, capsize=3, edgecolor="0.3", linewidth=0.5)
        crowded = len(methods) > 4
        ax.set_xticks(x, methods, rotation=30 if crowded else 0, ha="right" if crowded else "center")
        ax.set_title(name, fontsize="medium")
        if key in ("acc", "nmi", "ari") and np.nanmax(np.abs(means)) <= 1.0:
            ax.set_ylim(min(0.0, np.nanmin(means)), 1.0)
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    return _save(fig, path)


def tile_images(images: np.ndarray, *, tile: int = 56, pad: int = 2, background: int = 255) -> np.ndarray:
    """A single row of images as one uint8 (H, W, C) array: each image scaled (nearest neighbour up,
    box filter down) so its longer side is ``tile`` pixels, separated by ``pad`` pixels of
    ``background``. Fast (Pillow, no figure), for pages that show many small strips."""
    from PIL import Image

    arr = _as_images(images, "images")
    tile = check_positive_int(tile, "tile")
    n, h, w, c = arr.shape
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX
    out = np.full((size[1], n * size[0] + (n - 1) * pad, c), background, dtype=np.uint8)
    for i, image in enumerate((arr * 255.0).round().astype(np.uint8)):
        scaled = Image.fromarray(image[..., 0] if c == 1 else image).resize(size, resample)
        x = i * (size[0] + pad)
        out[:, x:x + size[0]] = np.asarray(scaled).reshape(size[1], size[0], c)
    return out
