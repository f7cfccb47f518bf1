"""``report.html``: one self-contained page that shows what a run found.

A person should see at a glance what each cluster is: the page has the configuration, the metrics, the
training curves, the latent space, the confusion matrix and, per cluster, its most and least confident
images. Everything is inline (PNG data URIs, CSS in a ``<style>`` element, no script, no external
resource), so the file can be mailed, archived or opened offline and still shows everything.

Every section is present in every report; one that does not apply (no labels, no training history,
k given rather than chosen) says so in a sentence instead of vanishing, so reports of different methods
line up. Only files of the run folder are read; what is missing or unreadable is reported on the page.
Text from files is always escaped. :func:`write_comparison_report` writes the page of ``deepclust
evaluate``, which compares methods from a table of result rows.
"""

from __future__ import annotations

import array
import base64
import csv
import dataclasses
import html
import io
import json
import math
import numbers
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .. import __version__
from .._io import write_text
from ..config import RunConfig, flat_options
from ..data.rows import release_pages
from ..run_folder import (
    MAX_IMAGE_BYTES,
    RunFolderError,
    data_root,
    inside,
    open_regular,
    read_array,
    read_config,
    read_json,
    read_regular,
)
from ..runs import RunPaths

#: (id, heading) of every section of a run's report, in page order.
RUN_SECTIONS = (
    ("configuration", "Configuration"),
    ("metrics", "Metrics"),
    ("k-selection", "Choosing k"),
    ("curves", "Loss and metric curves"),
    ("latent-space", "Latent space"),
    ("confusion-matrix", "Confusion matrix"),
    ("clusters", "Clusters"),
)
#: (id, heading) of every section of a comparison report.
COMPARISON_SECTIONS = (
    ("protocol", "Protocol"),
    ("summary", "Summary"),
    ("charts", "Metrics by method"),
    ("results", "Every run"),
)
COMPARISON_METRICS = (("acc", "ACC"), ("nmi", "NMI"), ("ari", "ARI"), ("silhouette", "silhouette"),
                      ("dunn", "Dunn"), ("seconds", "time (s)"))
_SCATTER_POINTS = 2000  # the latent-space scatter draws at most this many points (PCA of a sample)
_MOST_CONFIDENT = 8
MAX_CSV_BYTES = 2**30  # assignments.csv of 10 million images is about 300 MB
_LEAST_CONFIDENT = 3


# ------------------------------------------------------------------------------------------- run report
def write_report(run_dir: str | os.PathLike, *, dataset=None, features: np.ndarray | None = None,
                 max_points: int = _SCATTER_POINTS) -> Path:
    """Build ``report.html`` in the run folder ``run_dir`` from the files the run wrote; returns its path.

    ``dataset`` (the run's :class:`~deepclust.data.ImageDataset`) and ``features`` (what the method was
    fitted on) spare reloading the data when the caller still has them; without them the data set named
    in ``config.json`` is loaded again with the same options (or the images listed in
    ``assignments.csv``'s ``path`` column are read). The scatter shows at most ``max_points`` points.
    The folder of a ``deepclust evaluate`` (``results.json``) gets its comparison page rebuilt instead.
    """
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a folder; pass a run folder written by 'deepclust run'.")
    problems: list[str] = []  # damaged files, each named: shown on the page, never a crash
    config = _read_json(paths.config, problems)
    if config is not None:
        try:
            read_config(paths)
        except (RunFolderError, FileNotFoundError) as err:
            problems.append(f"{err} Its options are shown as they are.")
    results = _read_json(paths.results_json, problems)  # a 'deepclust evaluate' folder: its comparison page
    if isinstance(results, dict) and isinstance(results.get("rows"), list) \
            and not paths.assignments.is_file():
        if not all(isinstance(row, dict) and isinstance(row.get("method"), str) for row in results["rows"]):
            raise RunFolderError(paths.results_json, "has rows that are not objects with a \"method\"")
        name = ((config or {}).get("resolved") or {}).get("dataset", paths.root.name)
        return write_comparison_report(results["rows"], paths.report,
                                       f"deepclust evaluate: {name}", str(results.get("protocol", "")))
    if config is None and not paths.assignments.is_file():
        raise FileNotFoundError(f"{run_dir} is not a deepclust run folder: it has neither config.json nor "
                                "assignments.csv.")
    run = _RunFiles.read(paths, config, problems)
    status = (_read_json(paths.status, run.problems) or {}).get("status", "unknown")  # "running" during run()
    if not isinstance(status, str):
        run.problems.append(f"{paths.status}: its \"status\" is not a string; ignored.")
        status = "unknown"
    seed = int(run.cfg.get("seed") or 0)
    if dataset is None and features is None:
        dataset, features, load_note = _reload_inputs(run)
    else:
        load_note = None
    dataset = _dataset_if_it_matches(dataset, run)
    if features is not None and len(features) != run.n:
        features = None

    sections = {
        "configuration": _configuration_section(run),
        "metrics": _metrics_section(run),
        "curves": _curves_section(run),
        "latent-space": _latent_section(run, features, max_points, seed),
        "confusion-matrix": _confusion_section(run, dataset),
        "clusters": _clusters_section(run, dataset, features, load_note),
        "k-selection": _k_selection_section(run),
    }
    resolved = run.config.get("resolved", {}) if isinstance(run.config, dict) else {}
    on = f"{run.cfg['backbone']} features + " if run.cfg.get("backbone") else ""
    title = f"deepclust run: {resolved.get('dataset') or run.cfg.get('dataset', '?')} · " \
            f"{on}{run.cfg.get('method', '?')} · k = {resolved.get('n_clusters', run.n_clusters)}"
    subtitle = (f"run folder {paths.root.name}{'' if status == 'running' else f' · status {status}'} · "
                f"{run.n} samples · report written {time.strftime('%Y-%m-%d %H:%M:%S')} by deepclust "
                f"{__version__}")
    page = _page(title, subtitle, [(sid, heading, sections[sid]) for sid, heading in RUN_SECTIONS])
    out = paths.report
    write_text(out, page)
    return out


def try_write_report(run_dir: str | os.PathLike, **kwargs) -> str | None:
    """:func:`write_report`, for the end of a run: a failure becomes a warning and its message is
    returned (None on success), so a finished run is never lost to its report."""
    try:
        write_report(run_dir, **kwargs)
    except Exception as err:  # the run's results are already written; keep them
        message = f"report.html not written: {type(err).__name__}: {err}"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return message
    return None


@dataclasses.dataclass
class _RunFiles:
    """What a run folder holds, read once; every field may be missing (None / empty)."""

    paths: RunPaths
    config: dict | None
    metrics: dict | None
    clusters: np.ndarray  # (n,) int64 from assignments.csv; empty when absent
    true_labels: np.ndarray | None
    image_paths: list[str] | None
    history: list[dict]
    embeddings: np.ndarray | None
    centers: np.ndarray | None
    mappings: dict | None
    k_selection: dict | None
    problems: list[str]

    @property
    def cfg(self) -> dict:
        """The run's options, flat (only those that applied to its method)."""
        return flat_options(self.config)

    @property
    def n(self) -> int:
        return int(self.clusters.size)

    @property
    def n_clusters(self) -> int:
        return int(np.unique(self.clusters).size)

    @classmethod
    def read(cls, paths: RunPaths, config: dict | None, problems: list[str]) -> _RunFiles:
        if config is None:
            problems.append("config.json is missing or unreadable.")
        metrics = _read_json(paths.metrics, problems)
        clusters, true_labels, image_paths = np.zeros(0, np.int64), None, None
        if os.path.lexists(paths.assignments):
            try:
                clusters, true_labels, image_paths = _read_assignments(paths.assignments)
            except (ValueError, KeyError, TypeError, csv.Error) as err:
                problems.append(f"{paths.assignments} is unreadable ({err}); the page has no assignments.")
        else:
            problems.append("assignments.csv is missing: the run did not finish.")
        embeddings = _read_npy(paths.embeddings, problems, mapped=True)  # (N, d): read as drawn
        if embeddings is not None and (embeddings.ndim != 2 or len(embeddings) != clusters.size):
            problems.append(f"embeddings.npy has shape {embeddings.shape}, not one row per sample; ignored.")
            embeddings = None
        centers = _read_npy(paths.centers, problems)
        return cls(paths, config, metrics, clusters, true_labels, image_paths,
                   _read_history(paths.history, problems), embeddings, centers,
                   _read_json(paths.class_mappings, problems), _read_json(paths.k_selection, problems),
                   problems)


def _reload_inputs(run: _RunFiles):
    """(dataset, features, note): the run's data loaded again as ``config.json`` says, or Nones and a
    note saying why not.

    config.json is untrusted: its options are validated first (sizes bounded), nothing is downloaded
    (``download=False``), and a pretrained backbone is never run again (the page then has the images
    but not the features).
    """
    if not run.cfg:
        return None, None, "config.json does not name the data set"
    from ..data import load_dataset
    from ..data.rows import is_memory_mapped
    from ..data.transforms import prepare_features
    from ..methods import method_class
    from ..pipeline.folder import fit_config
    from ..pipeline.validate import validate
    from ..traits import IMAGES

    try:
        config = fit_config(validate(RunConfig.from_saved(run.config)))
        if config.backbone:
            from ..pipeline.embedding import THUMBNAIL_SIZE
            from ..pipeline.folder import folder_layout

            size = config.size or (THUMBNAIL_SIZE if folder_layout(config.dataset) is not None else None)
            dataset = load_dataset(config.dataset, data_dir=config.data_dir, split=config.split, size=size,
                                   download=False)
            return dataset, None, None
        dataset = load_dataset(config.dataset, data_dir=config.data_dir, split=config.split, size=config.size,
                               download=False)
        if is_memory_mapped(dataset.images):  # a data cache: the page draws from embeddings.npy
            return dataset, None, None
        images = method_class(config.method).input_kind == IMAGES
        X = prepare_features(dataset, grayscale=config.grayscale, normalize=config.normalize,
                             flatten=not images)
    except Exception as err:  # a report without images is still a report
        return None, None, f"the data set could not be loaded again ({type(err).__name__}: {err})"
    return dataset, X, None


def _dataset_if_it_matches(dataset, run: _RunFiles):
    """``dataset`` when it holds exactly the run's samples (same count, same labels), else None."""
    if dataset is None or len(dataset.images) != run.n:
        return None
    if run.true_labels is not None and dataset.labels is not None \
            and not np.array_equal(np.asarray(dataset.labels), run.true_labels):
        return None
    return dataset


# ------------------------------------------------------------------------------------------- sections
def _configuration_section(run: _RunFiles) -> str:
    if run.config is None:
        return _note("config.json is missing or unreadable, so the configuration is unknown.")
    resolved = dict(run.config.get("resolved") or {})
    parts = [_problems(run.problems)]
    summary = {key: resolved.get(key) for key in ("dataset", "description", "n_samples", "n_features",
                                                   "image_shape", "n_clusters") if key in resolved}
    if run.k_selection:
        summary["n_clusters"] = f"{resolved.get('n_clusters')} (chosen automatically, see Choosing k)"
    parts.append("<h3>Data and result</h3>" + _key_value_table(summary))
    backbone = resolved.get("backbone")
    if isinstance(backbone, dict):
        facts = {key: backbone.get(key) for key in ("backbone", "description", "weights", "licence",
                                                    "feature_dim", "preprocessing") if key in backbone}
        parts.append("<h3>Pretrained backbone</h3><p>The clustered features come from a network pretrained "
                     "on labelled images (not learnt from this data): compare these scores with other "
                     "pretrained runs, not with methods trained from scratch.</p>" + _key_value_table(facts))
    recipe = resolved.get("recipe")
    if isinstance(recipe, dict) and isinstance(recipe.get("options"), dict) and recipe["options"]:
        method = _e(run.cfg.get("method", "the method"))
        parts.append(f"<h3>Recipe</h3><p>Options left unset came from {method}'s recipe for "
                     f"{_e(recipe.get('shape', '?'))} images ({_e(recipe.get('evidence', ''))}):</p>"
                     + _key_value_table(recipe["options"]))
    parts.append("<h3>Options</h3>" + _key_value_grid(run.cfg))
    arch = resolved.get("architecture")
    if isinstance(arch, dict):
        name = arch.get("name") or arch.get("from_run") or "architecture"
        description = arch.get("description", "")
        parts.append(f"<h3>Architecture</h3><p>{_e(name)}{': ' + _e(description) if description else ''}</p>"
                     + _json_details("full specification", arch))
    elif arch:
        parts.append(f"<h3>Architecture</h3><p>{_e(arch)}</p>")
    for key in ("method_params", "versions"):
        value = resolved.get(key) if key == "method_params" else run.config.get(key)
        if value:
            parts.append(_json_details(key.replace("_", " "), value))
    return "".join(parts)


def _metrics_section(run: _RunFiles) -> str:
    if not run.metrics:
        return _note("metrics.json is missing or unreadable: the run did not finish scoring.")
    flat = {k: v for k, v in run.metrics.items() if not isinstance(v, (dict, list))}
    parts = [_key_value_table(flat)]
    if run.true_labels is None:
        parts.append(_note("The data have no true labels, so ACC, NMI and ARI are not defined; silhouette "
                           "and Dunn judge the clusters from the features alone."))
    for key, value in run.metrics.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            parts.append(f"<h3>{_e(key)}</h3>" + _nested_table(value))
        elif isinstance(value, dict):
            parts.append(f"<h3>{_e(key)}</h3>" + _key_value_table(value))
        elif isinstance(value, list):
            parts.append(_json_details(key, value))
    return "".join(parts)


def _curves_section(run: _RunFiles) -> str:
    from . import plots

    history = run.history
    if not history:
        method = run.cfg.get("method", "this method")
        return _note(f"No training history: {method} has no training curves (history.csv is absent or "
                     "empty). k-means runs its Lloyd iterations to convergence without logging epochs.")
    figures = []
    if any(_is_number(r.get("loss")) for r in history):
        figures.append(_figure(lambda p: plots.plot_history(history, p), "loss per training stage"))
    elif any(_is_number(r.get("clustering_loss")) or _is_number(r.get("cross_entropy"))
             for r in history):
        figures.append(_figure(lambda p: plots.plot_deepcluster_history(history, p),
                               "DeepCluster: clustering loss, cross-entropy and agreement per epoch"))
        return "".join(figures) + _history_note(history)  # that figure already has every curve
    skip = ("epoch", "iteration", "layer", "stage")
    if figures:  # the loss is drawn already; timings are not curves worth a panel
        skip += ("loss", "seconds", "samples_per_s")
    columns = [c for c in dict.fromkeys(k for r in history for k in r) if c not in skip
               and sum(_is_number(r.get(c)) for r in history) >= 2]  # a single value is no curve
    try:
        figures.append(_figure(lambda p: plots.plot_history_columns(history, p, columns=columns),
                               "metrics logged during training, per step" if figures
                               else "every numeric column of history.csv"))
    except ValueError as err:  # nothing numeric besides the step counters (and the loss, drawn above)
        if not figures:
            return _note(f"history.csv has {len(history)} rows but nothing to plot ({err}).")
    return "".join(figures) + _history_note(history)


def _history_note(history: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in history for k in r))
    return (f"<p class='muted'>{len(history)} logged steps; columns of history.csv: "
            f"{_e(', '.join(columns))}.</p>")


def _latent_section(run: _RunFiles, features, max_points: int, seed: int) -> str:
    from . import plots

    if run.n < 2:
        return _note("Too few assignments to draw.")
    if run.embeddings is not None:
        Z, what = run.embeddings, "the learned embedding (embeddings.npy)"
    elif features is not None:
        Z, what = np.asarray(features).reshape(run.n, -1), "the input features (this method has no " \
                                                           "learned embedding)"
    else:
        return _note("No embedding to draw: the run saved no embeddings.npy and its input features could "
                     "not be loaded again.")
    shown = min(run.n, max_points)
    caption = (f"PCA of {what}, {shown} of {run.n} points" + (" (random sample)" if shown < run.n else "")
               + ", coloured by cluster" + (" and, beside it, by true class." if run.true_labels is not None
                                            else "; no true labels to colour by."))
    return _figure(lambda p: plots.plot_embedding(Z, run.clusters, p, true_labels=run.true_labels,
                                                  max_points=max_points, random_state=seed), caption)


def _confusion_section(run: _RunFiles, dataset) -> str:
    from . import plots

    parts = []
    if run.true_labels is None:
        parts.append(_note("The data have no true labels, so there is no confusion matrix."))
    else:
        names = list(dataset.class_names) if dataset is not None and dataset.class_names else None
        if names and int(run.true_labels.max()) >= len(names):
            names = None
        parts.append(_figure(lambda p: plots.plot_confusion_matrix(run.true_labels, run.clusters, p,
                                                                   class_names=names),
                             "Rows: true classes; columns: clusters, matched to classes by the Hungarian "
                             "method so the diagonal holds the matched pairs."))
    test = run.paths.plots / "confusion_matrix_test.png"
    if os.path.lexists(test):
        try:
            png = read_regular(test, limit=MAX_IMAGE_BYTES)
        except RunFolderError as err:
            return "".join(parts) + _note(f"{err} Not shown.")
        parts.append(f"<figure><img alt='confusion matrix of the held-out test images' "
                     f"src='{_png_uri(png)}'><figcaption>Held-out test/ images, assigned "
                     f"with the fitted model.</figcaption></figure>")
    return "".join(parts)


def _clusters_section(run: _RunFiles, dataset, features, load_note: str | None) -> str:
    from .plots import tile_images

    if run.n == 0:
        return _note("No assignments: assignments.csv is missing.")
    confidence, how = _confidence(run, features)
    names = _mapped_names(run.mappings)
    class_names = list(dataset.class_names) if dataset is not None and dataset.class_names else None
    ids, sizes = np.unique(run.clusters, return_counts=True)
    intro = [f"<p>{len(ids)} clusters. In each row, the {_MOST_CONFIDENT} most confident images (closest to "
             f"the cluster's centre) and the {_LEAST_CONFIDENT} least confident ones (farthest from it); "
             f"confidence: {_e(how)}.</p>"]
    if names is None:
        intro.append(_note("No class_mappings.json in the run folder: clusters are not named (name them "
                           "with reference images, see 'deepclust run --dataset FOLDER')."))
    image_source = _image_source(run, dataset)
    if image_source is None:
        reason = load_note or "the run's images are not available"
        intro.append(_note(f"No images to show: {reason}, and assignments.csv lists no image paths."))
    rows = []
    for k, size in zip(ids.tolist(), sizes.tolist(), strict=True):
        members = np.flatnonzero(run.clusters == k)
        order = members[np.argsort(-confidence[members], kind="stable")]
        most = order[:_MOST_CONFIDENT]
        least = order[-_LEAST_CONFIDENT:][::-1] if order.size > _MOST_CONFIDENT else order[:0]
        head = f"<span class='cluster-id'>cluster {k}</span>"
        if names is not None:
            name = names.get(str(k))
            if name and name.get("class") is not None:
                votes = name.get("votes")
                head += (f" <span class='class-name'>{_e(name['class'])}</span>"
                         + (f" <span class='muted'>({_e(votes)} reference votes)</span>" if votes is not None
                            else ""))
            else:
                head += " <span class='muted'>(unmapped: no reference image landed here)</span>"
        facts = [f"{size} images ({size / run.n:.1%})"]
        if run.true_labels is not None:
            values, counts = np.unique(run.true_labels[members], return_counts=True)
            top = int(values[np.argmax(counts)])
            label = class_names[top] if class_names and top < len(class_names) else str(top)
            facts.append(f"majority true class {_e(label)} ({counts.max() / size:.0%})")
        strips = ""
        if image_source is not None:
            for title, pick in (("most confident", most), ("least confident", least)):
                if pick.size:
                    try:
                        strip = _png_uri_of_array(tile_images(image_source(pick)))
                        strips += (f"<div class='strip'><span class='strip-label'>{title}</span>"
                                   f"<img alt='{title} images of cluster {k}' src='{strip}'></div>")
                    except (OSError, ValueError) as err:
                        strips += _note(f"images of cluster {k} could not be read: {err}.")
        rows.append(f"<div class='cluster'><h3>{head}</h3><p class='muted'>{' · '.join(facts)}</p>"
                    f"<div class='strips'>{strips}</div></div>")
    return "".join(intro) + "".join(rows)


def _k_selection_section(run: _RunFiles) -> str:
    from . import plots

    sel = run.k_selection
    if not sel:
        k = (run.config or {}).get("resolved", {}).get("n_clusters", run.n_clusters)
        return _note(f"k = {k} was given (or taken from the labels), not chosen: run with '--clusters auto' "
                     "to try a range of k and pick one by the silhouette score.")
    try:
        ks, scores = list(sel["ks"]), list(sel["scores"])
        figure = _figure(lambda p: plots.plot_k_selection(ks, scores, p, best_k=sel.get("best_k"),
                                                          inertias=sel.get("inertias"),
                                                          criterion=sel.get("criterion", "silhouette")),
                         f"k-means for each k on {sel.get('space', 'the features')}; the chosen k has the "
                         f"highest {sel.get('criterion', 'silhouette')}.")
    except (KeyError, TypeError, ValueError) as err:
        return _note(f"k_selection.json is malformed ({err}).")
    criterion = sel.get("criterion", "score")
    table = _rows_table([{"k": k, criterion: s} for k, s in zip(ks, scores, strict=False)])
    return f"<p>Chosen k = <strong>{_e(sel.get('best_k'))}</strong>.</p>" + figure + \
        _details("scores", table)


# ---------------------------------------------------------------------------------- cluster images
def _confidence(run: _RunFiles, features) -> tuple[np.ndarray, str]:
    """Minus each sample's distance to its cluster's centre (higher = more confident), and how."""
    if run.embeddings is not None:
        space, where = run.embeddings, "distance to the cluster centre in the embedding"
    elif features is not None:
        space, where = np.asarray(features, dtype=np.float32).reshape(run.n, -1), \
            "distance to the cluster centre in the input space"
    else:
        return np.zeros(run.n), "unknown (no embedding or features available), images in data order"
    ids = np.unique(run.clusters)
    centers = run.centers
    if centers is None or centers.ndim != 2 or centers.shape[1] != space.shape[1] \
            or ids.max() >= len(centers) or ids.min() < 0:
        sums = np.zeros((int(ids.max()) + 1, space.shape[1]))
        for rows in _row_chunks(run.n):
            np.add.at(sums, run.clusters[rows], np.asarray(space[rows], dtype=np.float64))
            release_pages(space)
        centers = sums / np.maximum(np.bincount(run.clusters, minlength=len(sums)), 1)[:, None]
        where += " (centre = mean of the cluster's points)"
    centers = np.asarray(centers, dtype=np.float32)
    score = np.empty(run.n, dtype=np.float32)
    for rows in _row_chunks(run.n):  # a chunk at a time: embeddings.npy may be millions of rows, mapped
        part = np.asarray(space[rows], dtype=np.float32)
        score[rows] = -np.linalg.norm(part - centers[run.clusters[rows]], axis=1)
        release_pages(space)  # the pages read stay in the OS's cache, not in this process
    return score, where


def _row_chunks(n: int, size: int = 65536) -> Iterator[slice]:
    return (slice(start, min(start + size, n)) for start in range(0, n, size))


def _image_source(run: _RunFiles, dataset) -> Callable[[np.ndarray], np.ndarray] | None:
    """A function from sample indices to their images, or None when the images cannot be had.

    The ``path`` column of assignments.csv is read only inside the run's own data root (the image
    folder recorded in config.json), and only regular files: another path is never opened.
    """
    if dataset is not None:
        return lambda index: np.asarray(dataset.images)[index]
    if run.image_paths:
        root = data_root(run.config)
        size = run.cfg.get("size")
        size = min(size, _THUMBNAIL) if _is_number(size) and size >= 1 else None
        return lambda index: _read_images([run.image_paths[i] for i in index], size, root)
    return None


_THUMBNAIL = 128  # the largest side the report decodes an image at


def _read_images(files: list[str], size: int | None, root: Path | None) -> np.ndarray:
    """uint8 (n, H, W, 3) images from files inside ``root``; all resized to the first one's size (or
    ``size``). A file outside ``root``, or not a regular file, raises a ValueError naming it."""
    from PIL import Image

    images, shape = [], None
    for file in files:
        path = inside(root, file)
        if path is None:
            raise ValueError(f"assignments.csv names {file}, which is outside the run's data folder "
                             f"({root or 'none recorded in config.json'}); not read")
        try:
            data = read_regular(path, limit=MAX_IMAGE_BYTES)
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB")
                shape = shape or ((size, size) if size else _fit(im.size))
                images.append(np.asarray(im.resize(shape)))
        except RunFolderError:
            raise
        except Exception as err:  # PIL: unidentified, truncated, decompression bombs
            raise ValueError(f"{path} is not a readable image ({err})") from None
    return np.stack(images)


def _fit(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` (w, h) scaled down so its longest side is at most :data:`_THUMBNAIL`."""
    scale = min(1.0, _THUMBNAIL / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _mapped_names(mappings: dict | None) -> dict[str, dict] | None:
    """cluster id (str) -> {"class", "votes"} from class_mappings.json (its "clusters" table, its
    "mapping" of names, or a plain {id: {class, votes}} / {id: name} object)."""
    if not isinstance(mappings, dict):
        return None
    table = mappings.get("clusters") if isinstance(mappings.get("clusters"), dict) else None
    if table is None and isinstance(mappings.get("mapping"), dict):
        table = mappings["mapping"]
    if table is None:
        table = mappings
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out[str(key)] = {"class": value.get("class"), "votes": value.get("votes")}
        elif value is None or isinstance(value, str):
            out[str(key)] = {"class": value, "votes": None}
    return out


# ----------------------------------------------------------------------------------- comparison report
def write_comparison_report(rows: Sequence[dict], path: str | os.PathLike, title: str,
                            protocol_text: str) -> Path:
    """A self-contained page comparing methods: the protocol, a summary table of mean ± std per method,
    a bar chart per metric, and every row.

    ``rows``: one dict per method and fold (or seed) with ``method`` and any of ``acc``, ``nmi``,
    ``ari``, ``silhouette``, ``dunn``, ``seconds`` (None where undefined); ``fold``, ``seed`` or
    ``split`` name the run. Written atomically to ``path``.
    """
    from . import plots

    rows = [dict(r) for r in rows]
    if not rows or any("method" not in r for r in rows):
        raise ValueError("rows must be a non-empty list of dicts, each with a 'method'.")
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    summary = []
    for method in methods:
        sel = [r for r in rows if str(r["method"]) == method]
        line = {"method": method}
        for key, name in COMPARISON_METRICS:
            line[name] = _mean_std([r.get(key) for r in sel], digits=1 if key == "seconds" else 3)
        line["runs"] = len(sel)
        summary.append(line)
    try:
        chart = _figure(lambda p: plots.plot_metric_bars(rows, p, metrics=COMPARISON_METRICS),
                        "Bars: mean over folds (or seeds); error bars: sample standard deviation.")
    except ValueError as err:
        chart = _note(f"Nothing to chart: {err}")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    sections = [
        ("protocol", "Protocol", f"<p>{_e(protocol_text)}</p>"),
        ("summary", "Summary", _rows_table(summary, numeric_right=True)
         + "<p class='muted'>Mean ± sample standard deviation over the folds (or seeds). Silhouette and "
           "Dunn are measured in each method's own space (its embedding; pixels for k-means).</p>"),
        ("charts", "Metrics by method", chart),
        ("results", "Every run", _rows_table([{c: r.get(c) for c in columns} for r in rows])),
    ]
    page = _page(title, f"{len(methods)} methods · {len(rows)} runs · written "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S')} by deepclust {__version__}", sections)
    path = Path(path)
    write_text(path, page)
    return path


def _mean_std(values: list, *, digits: int) -> str:
    vals = [float(v) for v in values if _is_number(v) and math.isfinite(v)]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


# ------------------------------------------------------------------------------------------ HTML parts
_CSS = """
:root { --fg: #1d2433; --muted: #5b6475; --line: #d9dee7; --accent: #2458b3; --bg-alt: #f4f6fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: #fff; }
header { padding: 20px 32px 12px; border-bottom: 1px solid var(--line); background: var(--bg-alt); }
header h1 { margin: 0 0 4px; font-size: 22px; }
nav { margin-top: 8px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
main { max-width: 1200px; padding: 8px 32px 40px; }
section { padding: 8px 0 16px; border-bottom: 1px solid var(--line); }
h2 { font-size: 19px; margin: 18px 0 8px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 10px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg-alt); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafbfd; }
figure { margin: 8px 0 14px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption, .muted { color: var(--muted); font-size: 13px; }
.note { color: var(--muted); font-style: italic; }
.problems { color: #9a3412; }
details { margin: 6px 0; }
summary { cursor: pointer; color: var(--accent); }
pre { background: var(--bg-alt); padding: 8px; font-size: 12px; overflow-x: auto; max-height: 360px; }
.cluster { padding: 6px 0 8px; border-top: 1px dashed var(--line); }
.cluster h3 { margin: 6px 0 0; }
.cluster p { margin: 2px 0 4px; }
.cluster-id { font-variant-numeric: tabular-nums; }
.class-name { background: #e3ecfb; color: #173f86; padding: 1px 8px; border-radius: 10px; font-size: 14px; }
.strips { display: flex; flex-wrap: wrap; gap: 4px 28px; }
.strip { display: flex; align-items: center; gap: 8px; margin: 3px 0; }
.strip-label { width: 64px; flex: none; color: var(--muted); font-size: 12px; text-align: right; }
.strip img { image-rendering: pixelated; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 2px 18px;
        font-size: 13px; margin: 6px 0 10px; }
.grid .key { font-weight: 600; }
"""


def _page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f"<a href='#{sid}'>{_e(heading)}</a>" for sid, heading, _ in sections)
    body = "\n".join(f"<section id='{sid}'><h2>{_e(heading)}</h2>\n{content}\n</section>"
                     for sid, heading, content in sections)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body><header><h1>{_e(title)}</h1>"
            f"<div class='muted'>{_e(subtitle)}</div><nav>{nav}</nav></header>\n<main>{body}</main>"
            f"</body></html>\n")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _note(text: str) -> str:
    return f"<p class='note'>{_e(text)}</p>"


def _problems(problems: list[str]) -> str:
    return "".join(f"<p class='problems'>{_e(p)}</p>" for p in problems)


def _details(summary: str, content: str) -> str:
    return f"<details><summary>{_e(summary)}</summary>{content}</details>"


def _json_details(summary: str, value) -> str:
    return _details(summary, f"<pre>{_e(json.dumps(value, indent=2, default=str))}</pre>")


def _format(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _key_value_table(values: dict) -> str:
    if not values:
        return _note("(none)")
    cells = "".join(f"<tr><th>{_e(k)}</th><td{' class=num' if _is_number(v) else ''}>"
                    f"{_e(_format(v))}</td></tr>" for k, v in values.items())
    return f"<table>{cells}</table>"


def _key_value_grid(values: dict) -> str:
    """Many short key-value pairs in columns (the run's options)."""
    cells = "".join(f"<div><span class='key'>{_e(k)}</span> {_e(_format(v))}</div>"
                    for k, v in values.items())
    return f"<div class='grid'>{cells}</div>"


def _nested_table(values: dict[str, dict]) -> str:
    """{row name: {column: value}} as one table."""
    columns = list(dict.fromkeys(c for v in values.values() for c in v))
    return _rows_table([{"": name, **row} for name, row in values.items()], columns=["", *columns])


def _rows_table(rows: list[dict], *, columns: list[str] | None = None, numeric_right: bool = True) -> str:
    if not rows:
        return _note("(no rows)")
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = ""
    for row in rows:
        cells = ""
        for c in columns:
            v = row.get(c)
            num = numeric_right and (_is_number(v) or (isinstance(v, str) and v[:1].isdigit()))
            cells += f"<td{' class=num' if num else ''}>{_e(_format(v))}</td>"
        body += f"<tr>{cells}</tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(draw: Callable[[Path], Path], caption: str) -> str:
    """Run a :mod:`deepclust.plots` function into a temporary PNG and inline it as a ``<figure>``."""
    with tempfile.TemporaryDirectory(prefix="deepclust-report-") as tmp:
        png = Path(draw(Path(tmp) / "figure.png")).read_bytes()
    return (f"<figure><img alt='{_e(caption)}' src='{_png_uri(png)}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_data_uri(fig) -> str:
    """A matplotlib Figure as a PNG ``data:`` URI, to inline in HTML."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return _png_uri(buf.getvalue())


def _png_uri_of_array(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG", optimize=False)
    return _png_uri(buf.getvalue())


# -------------------------------------------------------------------------------------------- readers
def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _read_json(path: Path, problems: list[str] | None = None) -> dict | None:
    """The JSON object in ``path``; None when the file is missing, damaged or not an object (then a line
    naming it goes to ``problems``). FIFOs and devices are never read."""
    try:
        return read_json(path, required=False)
    except RunFolderError as err:
        if problems is not None:
            problems.append(f"{err} Ignored.")
        return None


def _read_npy(path: Path, problems: list[str], *, mapped: bool = False) -> np.ndarray | None:
    try:
        return read_array(path, required=False, finite=False, mapped=mapped)
    except RunFolderError as err:
        problems.append(f"{err} Ignored.")
        return None


def _read_assignments(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Clusters, true labels and image paths of assignments.csv; each id in [0, number of rows).

    Read a row at a time into integer arrays: a run of millions of images must not hold a Python dict
    per row (that was ~0.4 KB per image, more than the rest of a run on a data cache)."""
    clusters, labels, image_paths = array.array("q"), array.array("q"), []
    with open_regular(path, limit=MAX_CSV_BYTES) as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        header = next(reader, [])
        if not header:
            return np.zeros(0, np.int64), None, None
        if "cluster" not in header:
            raise ValueError("it has no 'cluster' column")
        at_cluster = header.index("cluster")
        at_label = header.index("true_label") if "true_label" in header else None
        at_path = header.index("path") if "path" in header else None
        has_labels = at_label is not None
        for row in reader:
            cells = row + [""] * (len(header) - len(row))  # a short row reads as empty cells
            clusters.append(int(cells[at_cluster]))
            if has_labels:
                if cells[at_label] == "":  # a row without its true label: no labels for the page
                    has_labels = False
                    labels = array.array("q")
                else:
                    labels.append(int(cells[at_label]))
            if at_path is not None:
                image_paths.append(cells[at_path])
    clusters = np.frombuffer(clusters, dtype=np.int64) if clusters else np.zeros(0, np.int64)
    if clusters.size and (clusters.min() < 0 or clusters.max() >= clusters.size):
        raise ValueError(f"cluster numbers must lie in 0..{clusters.size - 1}; found {clusters.min()} to "
                         f"{clusters.max()}")
    true_labels = None
    if has_labels and labels:
        true_labels = np.frombuffer(labels, dtype=np.int64)
        if true_labels.min() < 0 or true_labels.max() >= max(true_labels.size, 2):
            raise ValueError(f"true labels must lie in 0..{true_labels.size - 1}; found {true_labels.min()} "
                             f"to {true_labels.max()}")
    return clusters, true_labels, (image_paths if at_path is not None and clusters.size else None)


def _read_history(path: Path, problems: list[str]) -> list[dict]:
    """history.csv rows with numbers parsed and empty cells dropped (absent, as in ``history_``)."""
    if not os.path.lexists(path):
        return []
    try:
        text = read_regular(path, limit=MAX_CSV_BYTES).decode("utf-8")
        return [{k: _parse(v) for k, v in row.items() if isinstance(k, str) and k
                 and isinstance(v, str) and v} for row in csv.DictReader(io.StringIO(text, newline=""))]
    except (RunFolderError, UnicodeDecodeError, csv.Error) as err:
        problems.append(f"{path} is unreadable ({err}); no curves.")
        return []


def _parse(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    return text
