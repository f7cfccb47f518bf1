"""A user's own image folder as a run: fit on train/, assign test/, name the clusters from reference/.

Seed 003's layout is ``folder/train/``, ``folder/test/`` and ``folder/reference/<class>/`` (see
:mod:`deepclust.data.image_folder`). In a run on such a folder (default ``--split all``):

- the method is fitted on ``train/`` only; the run's ``assignments.csv``, embeddings and top-level
  metrics are those of the training images;
- ``test/`` is held out: its images are assigned with the fitted model's ``predict`` and written to
  ``test_assignments.csv``; when ``test/`` has class sub-folders they are scored (``metrics.json`` ->
  ``"test"``) and ``plots/confusion_matrix_test.png`` is drawn;
- the reference images are assigned with ``predict`` too, and each cluster is named by a majority
  vote of the reference images that land in it (``class_mappings.json``).

``--split train`` or ``--split test`` fits on that part alone, with nothing held out. A flat folder,
or one with class sub-folders, is fitted whole; a ``reference/`` sub-folder still names its clusters.
Every run, folder or not, writes ``preprocessing.json`` so ``deepclust predict`` can prepare new
images the way the run did.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np

from .._io import write_json, write_text
from ..data import ImageDataset
from ..data._registry import canonical_name
from ..data.cache import is_cache
from ..data.image_folder import FolderLayout, describe_layout, load_image_folder, load_reference_images
from ..data.rows import ImageRows
from ..metrics import contingency_matrix, evaluate_clustering
from ..preprocessing import Preprocessing

MAPPING_RULE = ("majority vote: each cluster is named after the class with the most reference images "
                "assigned to it; a tie goes to the class name that sorts first; a cluster that no "
                "reference image lands in is unmapped (null)")


def folder_layout(dataset: str) -> FolderLayout | None:
    """The layout of ``dataset`` when it names an image folder (not a registered data set, not a data
    cache), else None."""
    if canonical_name(str(dataset)) is not None:
        return None
    path = Path(dataset).expanduser()
    return describe_layout(path) if path.is_dir() and not is_cache(path) else None


def holds_out_test(config, layout: FolderLayout | None) -> bool:
    """True when the run fits on train/ and assigns test/ (a train/ + test/ folder and split "all")."""
    return layout is not None and layout.has_train and layout.has_test and config.split == "all"


def fit_config(config):
    """``config`` as the data loader should see it: split "train" when test/ is held out, and
    k = the number of reference classes when the training images are unlabelled and k is not given."""
    layout = folder_layout(config.dataset)
    if layout is None:
        return config
    changes = {}
    if holds_out_test(config, layout):
        changes["split"] = "train"
    if config.n_clusters is None and layout.has_reference and not layout.train_labelled:
        changes["n_clusters"] = len(layout.reference_classes)
    return dataclasses.replace(config, **changes) if changes else config


def after_fit(paths, config, method, dataset: ImageDataset, X: np.ndarray, *,
              backbone: dict | None = None) -> dict:
    """Everything a run writes beyond its fit: ``preprocessing.json``; for image folders the held-out
    test assignments and scores, and the class mappings. Returns entries to add to ``metrics.json``.
    ``backbone``: the description of the pretrained backbone that made ``X``, if one did."""
    from .embedding import prepared_features

    stats = (X.mean, X.std) if isinstance(X, ImageRows) and X.mean is not None else None  # a cache's
    prep = Preprocessing.of_run(dataset.images, grayscale=config.grayscale, normalize=config.normalize,
                                flatten=X.ndim == 2, backbone=backbone, stats=stats)
    prep.save(paths.preprocessing)
    layout = folder_layout(config.dataset)
    if layout is None:
        return {}
    fitted = fit_config(config)
    extra: dict = {"fit_split": fitted.split if layout.split_folders else "all",
                   "protocol": _protocol(config, layout, len(dataset))}
    decode = dict(size=prep.image_size, channels=prep.channels)
    test = None
    if holds_out_test(config, layout):
        test = load_image_folder(layout.path, split="test", **decode)
        X_test = prepared_features(prep, test, cache_dir=config.feature_cache, device=config.device)
        predicted = method.predict(X_test)
        scores = evaluate_clustering(predicted, test.labels, _space(method, X_test), random_state=config.seed)
        extra["test"] = {**scores, "metric_space": "embedding" if _embeds(method) else "input"}
        write_text(paths.test_assignments, _assignments_csv(test, predicted))
        if test.labels is not None:
            from ..report.plots import plot_confusion_matrix

            plot_confusion_matrix(test.labels, predicted, paths.test_confusion_plot,
                                  class_names=test.class_names)
    if layout.has_reference:
        reference = load_reference_images(layout.path, **decode)
        votes = method.predict(prepared_features(prep, reference, cache_dir=config.feature_cache,
                                                 device=config.device))
        n_clusters = int(np.asarray(method.cluster_centers_).shape[0])
        mapping = class_mapping(votes, reference.labels, reference.class_names, n_clusters)
        write_json(paths.class_mappings, mapping)
        n_mapped = sum(name is not None for name in mapping["mapping"].values())
        extra["class_mapping"] = {"n_reference_images": len(reference), "n_mapped_clusters": n_mapped,
                                  "file": paths.class_mappings.name}
        if test is not None and test.labels is not None:
            extra["test"]["mapped_accuracy"] = mapped_accuracy(mapping, predicted, test.labels,
                                                               test.class_names)
    return extra


def class_mapping(clusters: np.ndarray, classes: np.ndarray, class_names: list[str], n_clusters: int) -> dict:
    """Name clusters ``0..n_clusters-1`` by a majority vote of labelled reference images.

    ``clusters[i]`` is the cluster reference image ``i`` was assigned to, ``classes[i]`` its class
    (an index into ``class_names``, which are sorted, so the first name is the smallest id). Returns
    ``{"rule", "classes", "mapping": {cluster: name or None}, "clusters": {cluster: {"class",
    "votes", "n_reference", "counts"}}}`` with cluster ids as strings (JSON keys).
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    classes = np.asarray(classes, dtype=np.int64)
    if clusters.shape != classes.shape:
        raise ValueError(f"clusters and classes must have the same length; got {clusters.shape[0]} and "
                         f"{classes.shape[0]}.")
    table = np.zeros((n_clusters, len(class_names)), dtype=np.int64)
    if clusters.size:
        matrix, class_ids, cluster_ids = contingency_matrix(classes, clusters)
        table[np.ix_(cluster_ids, class_ids)] = matrix.T
    mapping, details = {}, {}
    for c in range(n_clusters):
        row = table[c]
        best = int(np.argmax(row))  # the first maximum: ties go to the name that sorts first
        name = class_names[best] if row[best] > 0 else None
        mapping[str(c)] = name
        details[str(c)] = {"class": name, "votes": int(row[best]), "n_reference": int(row.sum()),
                           "counts": {class_names[j]: int(n) for j, n in enumerate(row) if n > 0}}
    return {"rule": MAPPING_RULE, "classes": list(class_names), "n_reference_images": int(clusters.size),
            "mapping": mapping, "clusters": details}


def mapped_accuracy(mapping: dict, clusters: np.ndarray, labels: np.ndarray, class_names: list[str]) -> float:
    """Share of images whose cluster's mapped class name is their true class name (unmapped: wrong)."""
    names = mapping["mapping"]
    hits = [names.get(str(int(c))) == class_names[int(y)] for c, y in zip(clusters, labels, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")


def _protocol(config, layout: FolderLayout, n_fit: int) -> str:
    if holds_out_test(config, layout):
        return (f"fit on train/ ({n_fit} images); test/ held out and assigned with predict"
                + ("; scored against its class sub-folders" if layout.test_labelled else " (unlabelled)"))
    part = f"{config.split}/" if layout.split_folders and config.split != "all" else "the folder"
    return f"fit on {part} ({n_fit} images), nothing held out"


def _embeds(method) -> bool:
    return hasattr(method, "embedding_")


def _space(method, X: np.ndarray) -> np.ndarray:
    """Where silhouette and Dunn are measured: the method's embedding if it has one, else the input."""
    return method.transform(X) if _embeds(method) else X.reshape(X.shape[0], -1)


def _assignments_csv(dataset: ImageDataset, labels: np.ndarray) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    labelled = dataset.labels is not None
    writer.writerow(["path", "cluster", *(["true_class"] if labelled else [])])
    for i, cluster in enumerate(labels.tolist()):
        row = [dataset.paths[i], cluster]
        if labelled:
            row.append(dataset.class_names[int(dataset.labels[i])])
        writer.writerow(row)
    return buf.getvalue()


def summary_lines(metrics: dict) -> list[str]:
    """Lines for the terminal summary of a run: the held-out test/ scores and the class mappings."""
    lines = []
    if "protocol" in metrics:
        lines.append(f"  protocol    {metrics['protocol']}")
    test = metrics.get("test")
    if test:
        scores = [f"{label} {test[key]:.4f}" for key, label in
                  (("acc", "ACC"), ("nmi", "NMI"), ("ari", "ARI"), ("mapped_accuracy", "mapped-class ACC"))
                  if test.get(key) is not None]
        scored = ": " + ", ".join(scores) if scores else ""
        lines.append(f"  test/       {test['n_samples']} images held out{scored}")
    mapping = metrics.get("class_mapping")
    if mapping:
        lines.append(f"  classes     {mapping['n_mapped_clusters']} clusters named from "
                     f"{mapping['n_reference_images']} reference images ({mapping['file']})")
    return lines
