"""Assign new images to the clusters of a finished run: ``deepclust predict RUN_DIR IMAGES...``.

The run folder holds everything needed: the fitted model (``model/`` for deep methods, else
``cluster_centers.npy``: k-means assigns each image to its nearest centre), ``preprocessing.json``
(image size, channels, grey, scaling), and optionally ``class_mappings.json`` (cluster -> class name).

Confidence, in [1/k, 1]:

- DEC / IDEC: the Student-t soft assignment q of the chosen cluster (the model's own probability);
- N2D: the chosen cluster's share of the distance-weighted vote of the nearest training points;
- nearest-centre methods (k-means, AE + k-means, DCN, DeepCluster): the fuzzy c-means membership
  (m = 2) of the chosen centre, ``d_j^-2 / sum_l d_l^-2`` with ``d`` the distances to the centres in
  the space the method clusters in. It is 1 on a centre, 1/k where all centres are equally far, and does not
  depend on the scale of that space (a softmax over distances would).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cluster import KMeans
from ..config import flat_options
from ..data.cache import is_cache, open_cache
from ..data.image_folder import load_image_files
from ..deep import load_model
from ..deep.checkpoint import MODEL_CONFIG
from ..preprocessing import Preprocessing
from ..run_folder import RunFolderError, read_array, read_class_mappings, read_config, read_status
from ..runs import RunPaths
from .embedding import prepared_features

PREDICT_CHUNK = 8192  # images of a data cache assigned at a time


@dataclass
class FittedRun:
    """A finished run, loaded for assigning new images."""

    root: Path
    method: str
    estimator: object  # a fitted deep clusterer, or a KMeans rebuilt from the saved centres
    preprocessing: Preprocessing
    class_names: dict[int, str | None] | None  # from class_mappings.json; None without one

    @property
    def n_clusters(self) -> int:
        return int(np.asarray(self.estimator.cluster_centers_).shape[0])


def load_run(run_dir: str | os.PathLike) -> FittedRun:
    """Load the model, preprocessing and class mapping of the finished run in ``run_dir``.

    The folder is untrusted input (see :mod:`deepclust.run_folder`): a damaged, crafted or mismatched
    file raises a :class:`~deepclust.run_folder.RunFolderError` (a ValueError) naming it.
    """
    paths = RunPaths(Path(run_dir).expanduser())
    root = paths.root
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; pass a run folder written by 'deepclust run'.")
    saved = read_config(paths)
    status = read_status(paths)
    if status == "unknown":
        raise RunFolderError(paths.status, "is missing, so the run is not known to be complete",
                             "finish the run (deepclust run --resume RUN_DIR) or restore the file")
    if status != "complete":
        raise ValueError(f"The run in {root} is {status}, not complete, so it has no final model to predict "
                         f"with; finish it first (deepclust run --resume {root}).")
    method = flat_options(saved)["method"]
    if os.path.lexists(paths.model):  # a deep run: its model/ folder, whatever else the folder holds
        estimator = load_model(paths.model)
    elif os.path.lexists(paths.centers):
        centers = read_array(paths.centers, ndim=2).astype(np.float32)
        estimator = KMeans(n_clusters=centers.shape[0])
        estimator.cluster_centers_ = centers
        estimator.n_features_in_ = int(centers.shape[1])
    else:
        raise FileNotFoundError(f"{root} holds neither {paths.model.name}/ nor {paths.centers.name}: nothing "
                                "to predict with; rerun 'deepclust run'.")
    preprocessing = Preprocessing.load(root)
    _check_input_size(preprocessing, estimator, paths)
    return FittedRun(root, method, estimator, preprocessing, read_class_mappings(paths))


def _check_input_size(prep: Preprocessing, estimator, paths: RunPaths) -> None:
    """The model takes what the preprocessing makes (a backbone's feature size is checked when used)."""
    if prep.backbone:
        return
    channels = 1 if prep.grayscale else prep.channels
    made = int(prep.image_size[0]) * int(prep.image_size[1]) * channels
    if made != int(estimator.n_features_in_):
        model = paths.centers if _from_centres(estimator) else paths.model / MODEL_CONFIG
        raise RunFolderError(paths.preprocessing, f"makes {made} values per image, but {model.name} takes "
                                                  f"{estimator.n_features_in_}: the two files do not belong "
                                                  "to the same run")


def _from_centres(estimator) -> bool:
    """Whether ``load_run`` rebuilt the model from ``cluster_centers.npy`` (a k-means run)."""
    return isinstance(estimator, KMeans)


def assign(run: FittedRun, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clusters (n,) int64 and confidences (n,) float of features ``X`` prepared by ``run.preprocessing``."""
    est = run.estimator
    clusters = np.asarray(est.predict(X), dtype=np.int64)
    rows = np.arange(clusters.shape[0])
    if hasattr(est, "predict_proba"):
        return clusters, np.asarray(est.predict_proba(X), dtype=np.float64)[rows, clusters]
    # The space the centres live in: the input for k-means (whose transform gives distances), else the
    # method's own features (an autoencoder's embedding, DeepCluster's whitened features).
    space = X.reshape(X.shape[0], -1) if isinstance(est, KMeans) else est.transform(X)
    d2 = torch.cdist(torch.as_tensor(space, dtype=torch.float64),
                     torch.as_tensor(np.asarray(est.cluster_centers_), dtype=torch.float64)).pow(2).numpy()
    return clusters, fuzzy_membership(d2)[rows, clusters]


def fuzzy_membership(d2: np.ndarray) -> np.ndarray:
    """Fuzzy c-means memberships (m = 2) from squared distances (n, k): rows of d^-2, normalised to 1.

    A point on a centre belongs to it with membership 1.
    """
    d2 = np.asarray(d2, dtype=np.float64)
    on_centre = d2 <= 1e-12
    with np.errstate(divide="ignore"):
        weight = np.where(on_centre, 0.0, 1.0 / d2)
    weight[on_centre.any(axis=1)] = on_centre[on_centre.any(axis=1)]
    return weight / weight.sum(axis=1, keepdims=True)


def predict_images(run_dir: str | os.PathLike, images: Sequence[str | os.PathLike], *,
                   on_error: str = "raise") -> list[dict]:
    """Assign image files (and the images in folders) with the run's model.

    Returns one dict per image: ``file``, ``cluster``, ``class`` (mapped name or None), ``confidence``.
    An unreadable image raises a ValueError naming it (``on_error="skip"`` leaves it out with a warning).
    """
    run = load_run(run_dir)
    prep = run.preprocessing
    if len(images) == 1 and is_cache(images[0]) and not prep.backbone:
        return _predict_cache(run, Path(images[0]).expanduser())
    data = load_image_files(images, size=prep.image_size, channels=prep.channels, on_error=on_error)
    clusters, confidence = assign(run, prepared_features(prep, data))
    return _rows(run, data.paths, clusters, confidence)


def _predict_cache(run: FittedRun, folder: Path) -> list[dict]:
    """Assign the images of a data cache, :data:`PREDICT_CHUNK` rows at a time (read by index, so the
    cache may be larger than memory); files are named by ``paths.txt``, else ``DIR#index``."""
    data = open_cache(folder)
    prep = run.preprocessing
    fitted = (*prep.image_size, prep.channels)
    if tuple(data.image_shape) != fitted:
        raise ValueError(f"The cache {folder} holds images of {'x'.join(map(str, data.image_shape))}; the "
                         f"run was fitted on {'x'.join(map(str, fitted))}: build a cache with the run's "
                         "--resize (and the colour of its images).")
    parts = [assign(run, prep.apply(np.asarray(data.images[s:s + PREDICT_CHUNK])))
             for s in range(0, len(data), PREDICT_CHUNK)]
    clusters = np.concatenate([c for c, _ in parts])
    confidence = np.concatenate([p for _, p in parts])
    names = data.paths or [f"{folder}#{i}" for i in range(len(data))]
    return _rows(run, names, clusters, confidence)


def _rows(run: FittedRun, files: list[str], clusters: np.ndarray, confidence: np.ndarray) -> list[dict]:
    """One dict per image, after checking the model gave sane clusters and confidences."""
    if not np.isfinite(confidence).all() or (clusters < 0).any() or (clusters >= run.n_clusters).any():
        paths = RunPaths(run.root)
        raise RunFolderError(paths.centers if _from_centres(run.estimator) else paths.model,
                             "gives NaN confidences or clusters out of range for these images: the saved "
                             "model is damaged")
    names = run.class_names or {}
    return [{"file": path, "cluster": int(c), "class": names.get(int(c)), "confidence": float(p)}
            for path, c, p in zip(files, clusters, confidence, strict=True)]


def predictions_csv(rows: list[dict]) -> str:
    """The rows of :func:`predict_images` as CSV: file, cluster, class (empty if unmapped), confidence."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "cluster", "class", "confidence"])
    for row in rows:
        writer.writerow([row["file"], row["cluster"], row["class"] or "", f"{row['confidence']:.4f}"])
    return buf.getvalue()
