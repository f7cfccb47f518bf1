"""A fair comparison of clustering methods on one data set: ``deepclust evaluate``.

Two protocols, as the literature uses both and they differ:

- **k-fold** (``folds=K``): the samples are split once into K folds (stratified by class when
  labels exist, seeded). For each fold, every method is fitted on the other K-1 folds and scored
  on the held-out fold through ``predict``. One autoencoder is pretrained per fold, on that fold's
  training part only, and every autoencoder-based method of the fold starts from it.
- **all-data** (``seeds=[...]``): for each seed every method is fitted on all samples and scored on
  those same samples (its own ``labels_``), which is what most deep-clustering papers report.

Scores: ACC, NMI and ARI against the labels of the scored samples (when the data set has labels);
silhouette and Dunn's index of the scored samples in the method's embedding (``transform``) for the
deep methods, in pixel space for k-means. Times are wall-clock seconds of fitting: ``seconds`` is
the total, ``pretrain_seconds`` the fold's shared autoencoder pretraining (with k-means on its
embedding) that an autoencoder-based method starts from, ``fit_seconds`` what the method adds.

The run folder holds ``config.json``, ``folds.json`` (the split, so every method of a fold is seen to
use the same samples), ``results.csv`` / ``results.json`` (one row per method and fold or seed,
rewritten after each row), ``summary.md`` and ``report.html``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .._errors import is_out_of_memory, ran_out_of_memory
from .._io import check_output_folder, write_json, write_text
from .._validation import check_features, check_n_clusters
from ..config import RunConfig
from ..deep import AEKMeans
from ..methods import METHODS, method_class
from ..metrics import clustering_accuracy, evaluate_clustering, normalized_mutual_info
from ..runs import RunPaths, create_run_dir, set_status, versions
from ..traits import IMAGES, VECTORS
from .build import build_method
from .inputs import load_inputs, require_vector_methods
from .memory import check_network
from .validate import absolute_paths, check_with_data, validate

#: Summary columns: (key in a result row, heading).
SUMMARY_COLUMNS = (("acc", "ACC"), ("nmi", "NMI"), ("ari", "ARI"), ("silhouette", "silhouette"),
                   ("dunn", "Dunn"), ("seconds", "time (s)"))
CSV_COLUMNS = ("method", "backbone", "protocol", "split", "seed", "n_train", "n_test", "acc", "nmi", "ari",
               "silhouette", "dunn", "n_clusters_found", "train_acc", "train_nmi", "seconds", "fit_seconds",
               "pretrain_seconds", "metric_space")


@dataclass(frozen=True)
class Split:
    """One fold (or seed): which samples the methods are fitted on and which they are scored on."""

    index: int  # 1-based fold number, or the position of the seed
    seed: int  # random_state of every method in this split
    train: np.ndarray  # sorted sample indices
    test: np.ndarray

    @property
    def all_data(self) -> bool:
        return self.train.shape == self.test.shape and bool(np.array_equal(self.train, self.test))


@dataclass
class EvaluationResult:
    paths: RunPaths
    rows: list[dict]
    summary: str
    protocol: str


def stratified_folds(n_samples: int, n_folds: int, *, labels: np.ndarray | None = None,
                     seed: int = 0) -> list[np.ndarray]:
    """Split ``0..n_samples-1`` into ``n_folds`` disjoint folds; returns each fold's sorted indices.

    With ``labels``, each class is shuffled and dealt round-robin over the folds, continuing where the
    previous class stopped, so every fold holds each class in proportion (counts differ by at most
    one) and the fold sizes differ by at most one. Without labels the samples are shuffled and dealt
    the same way. The same ``seed`` always gives the same folds.
    """
    if not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise ValueError(f"The number of folds must be an integer >= 2; got {n_folds!r}.")
    if n_folds > n_samples:
        raise ValueError(f"Cannot make {n_folds} folds of {n_samples} samples: use at most {n_samples}.")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(n_samples, dtype=np.int64)
    if labels is None:
        groups = [np.arange(n_samples)]
    else:
        labels = np.asarray(labels)
        if labels.shape != (n_samples,):
            raise ValueError(f"labels must have shape ({n_samples},); got {labels.shape}.")
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    offset = 0
    for members in groups:
        members = rng.permutation(members)
        fold_of[members] = (offset + np.arange(members.size)) % n_folds
        offset += members.size
    return [np.flatnonzero(fold_of == f) for f in range(n_folds)]


def make_splits(n_samples: int, *, labels: np.ndarray | None = None, folds: int | None = None,
                seeds: Sequence[int] | None = None, seed: int = 0) -> list[Split]:
    """The splits of one protocol: K folds (methods of fold i seeded ``seed + i - 1``) or all-data seeds."""
    if (folds is None) == (seeds is None):
        raise ValueError("Choose one protocol: --folds K (train/test) or --seeds S1,S2,... (all data).")
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("--seeds needs at least one seed, e.g. --seeds 0,1,2.")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"--seeds lists a seed twice: {seeds}.")
        everything = np.arange(n_samples)
        return [Split(i + 1, s, everything, everything) for i, s in enumerate(seeds)]
    test_folds = stratified_folds(n_samples, folds, labels=labels, seed=seed)
    splits = []
    for i, test in enumerate(test_folds):
        train = np.setdiff1d(np.arange(n_samples), test, assume_unique=True)
        splits.append(Split(i + 1, seed + i, train, test))
    return splits


def protocol_text(splits: Sequence[Split], *, n_samples: int, stratified: bool, seed: int,
                  shared_autoencoder: bool = True) -> str:
    """One paragraph stating how the samples were split, for the summary, the report and the JSON."""
    if splits[0].all_data:
        seeds = ", ".join(str(s.seed) for s in splits)
        return (f"All-data protocol: for each seed ({seeds}) every method is fitted on all {n_samples} "
                "samples and scored on the same samples (its own cluster labels), as most deep-clustering "
                "papers report. Nothing is held out, so these scores are not estimates of how new images "
                "would be assigned.")
    k = len(splits)
    sizes = sorted({s.test.size for s in splits})
    size_text = " or ".join(str(v) for v in sizes)
    others = "the other fold" if k == 2 else f"the other {k - 1} folds"
    return (f"{k}-fold cross-validation{', stratified by class' if stratified else ''} (split seed {seed}): "
            f"the {n_samples} samples are split once into {k} disjoint folds of {size_text} samples; for "
            f"each fold, every method is fitted on {others} and scored on the held-out fold through "
            "predict. Every method uses the same split (folds.json)"
            + (", and in each fold one autoencoder is pretrained on the training part only and shared by "
               "every autoencoder-based method. " if shared_autoencoder else ". ")
            + f"The methods' random seed is {seed} in fold 1, {seed + 1} in fold 2, and so on.")


def evaluate(config: RunConfig, methods: Sequence[str], *, folds: int | None = None,
             seeds: Sequence[int] | None = None,
             on_row: Callable[[dict], None] | None = None) -> EvaluationResult:
    """Compare ``methods`` on ``config``'s data set under one protocol; writes a new run folder.

    ``config`` gives the data (dataset, data_dir, split, grayscale, size, normalize), k, the split
    seed (``seed``), ``out`` and the methods' settings (epochs, architecture, batch size...);
    ``config.method`` is ignored. ``on_row`` is called with each result row as soon as it exists.
    ``config.backbone`` may list several backbones, comma-separated: every method then runs on each
    backbone's features over the same splits, and its rows are labelled "method (backbone)".
    """
    methods = _check_methods(methods)
    config = absolute_paths(validate(config, methods=methods))  # before any folder is made
    check_output_folder(config.out)  # a bad --out fails before any work, as for run
    if isinstance(config.n_clusters, str):
        raise ValueError(f"evaluate compares methods at one number of clusters; got {config.n_clusters!r}. "
                         "Pass -k K, or leave it out for a labelled data set (k = its number of classes).")
    if config.backbone:  # every method clusters the same backbone features
        require_vector_methods(methods, config.backbone)
    # Images for every method (k-means flattens them): load and preprocess the data once (per backbone).
    backbones = [b.strip() for b in config.backbone.split(",")] if config.backbone else [None]
    if len(set(backbones)) != len(backbones) or "" in backbones:
        raise ValueError(f"--backbone {config.backbone}: name each backbone once, comma-separated.")
    features = []
    for backbone in backbones:
        on = dataclasses.replace(config, backbone=backbone)
        dataset, X, n_clusters = load_inputs(on, input_kind=IMAGES)
        features.append((on, X))
    y = dataset.labels
    n = X.shape[0]
    splits = make_splits(n, labels=y, folds=folds, seeds=seeds, seed=config.seed)
    for split in splits:
        check_n_clusters(n_clusters, split.train.size)
        check_with_data(config, split.train.size, methods=methods)
    protocol = protocol_text(splits, n_samples=n, stratified=y is not None, seed=config.seed,
                             shared_autoencoder=_pretrains(methods))
    for name in (m for m in methods if method_class(m).trains_network):  # sized before the folder exists
        check_network(build_method(dataclasses.replace(config, method=name), n_clusters), X, n_clusters,
                      device=config.device)
    paths = create_run_dir(config.out, f"{dataset.name}-evaluate")
    rows: list[dict] = []
    try:
        _write_setup(paths, config, methods, folds, seeds, splits, protocol, dataset, X, n_clusters)
        for split in splits:
            for on, X_on in features:
                for row in _evaluate_split(on, methods, split, X_on, y, n_clusters):
                    if len(backbones) > 1:
                        row["method"] = f"{row['method']} ({on.backbone})"
                    rows.append(row)
                    _write_results(paths, rows, protocol)
                    if on_row is not None:
                        on_row(row)
        summary = format_summary(rows, title=_title(dataset.name, n, n_clusters), protocol=protocol)
        write_text(paths.summary, summary)
        report_error = _write_report(paths, rows, dataset.name, protocol)
        set_status(paths, "complete", **({"report_error": report_error} if report_error else {}))
    except KeyboardInterrupt:
        set_status(paths, "interrupted", rows_done=len(rows))
        raise
    except BaseException as err:
        if is_out_of_memory(err):
            failure = ran_out_of_memory(err, f"evaluating (after {len(rows)} result rows)",
                                        network=any(method_class(m).trains_network for m in methods))
            set_status(paths, "failed", rows_done=len(rows), error=str(failure))
            raise failure from err
        set_status(paths, "failed", rows_done=len(rows), error=f"{type(err).__name__}: {err}")
        raise
    return EvaluationResult(paths, rows, summary, protocol)


def _evaluate_split(config: RunConfig, methods: list[str], split: Split, X: np.ndarray, y, n_clusters: int):
    """Fit and score every method on one split; yields one result row per method."""
    cfg = dataclasses.replace(config, seed=split.seed, from_run=None)
    X_train, X_test = X[split.train], X[split.test]
    y_train = None if y is None else y[split.train]
    y_test = None if y is None else y[split.test]
    autoencoder, pretrain_seconds = None, 0.0
    if _pretrains(methods):
        start = time.perf_counter()
        pretrained = build_method(cfg, n_clusters, cls=AEKMeans).fit(X_train)
        pretrain_seconds = time.perf_counter() - start
        autoencoder = pretrained.autoencoder_
    for name in methods:
        shared = 0.0
        cls = method_class(name)
        if cls.pretrains_autoencoder:  # the fold's pretraining (and k-means on its embedding) is the method
            est, seconds, shared = pretrained, 0.0, pretrain_seconds
        else:
            if cls.reuses_autoencoder:  # start from the fold's autoencoder, no pretraining of its own
                reuse = dataclasses.replace(cfg, method=name, pretrain_epochs=0, layerwise_epochs=0)
                est = build_method(reuse, n_clusters).set_params(autoencoder=autoencoder)
                shared = pretrain_seconds
            else:
                est = build_method(dataclasses.replace(cfg, method=name), n_clusters)
            start = time.perf_counter()
            est.fit(_inputs(name, X_train))
            seconds = time.perf_counter() - start
        row = _score(name, est, split, _inputs(name, X_test), y_train, y_test, seconds, shared, config.seed)
        yield {**row, "backbone": config.backbone or "none (trained from scratch)"}


def _score(name: str, est, split: Split, X_test: np.ndarray, y_train, y_test, seconds: float,
           shared_seconds: float, seed: int) -> dict:
    """One result row: the method's scores on the split's scored samples, and its times."""
    embeds = hasattr(est, "embedding_")
    if split.all_data:
        predicted = np.asarray(est.labels_)
        space = est.embedding_ if embeds else X_test
    else:
        predicted = np.asarray(est.predict(X_test))
        space = est.transform(X_test) if embeds else X_test
    scores = evaluate_clustering(predicted, y_test, np.asarray(space).reshape(len(predicted), -1),
                                 random_state=seed)
    row = {"method": name, "protocol": "all-data" if split.all_data else "k-fold",
           "split": f"seed {split.seed}" if split.all_data else f"fold {split.index}",
           "fold": None if split.all_data else split.index, "seed": split.seed,
           "n_train": int(split.train.size), "n_test": int(split.test.size)}
    for key in ("acc", "nmi", "ari", "silhouette", "dunn"):
        row[key] = scores.get(key)
    row["n_clusters_found"] = scores["n_clusters"]
    labels_train = np.asarray(est.labels_)
    row["train_acc"] = None if y_train is None else clustering_accuracy(y_train, labels_train)
    row["train_nmi"] = None if y_train is None else normalized_mutual_info(y_train, labels_train)
    row.update(seconds=round(seconds + shared_seconds, 3), fit_seconds=round(seconds, 3),
               pretrain_seconds=round(shared_seconds, 3), metric_space="embedding" if embeds else "input",
               silhouette_exact=scores.get("silhouette_exact"), dunn_exact=scores.get("dunn_exact"))
    return row


def format_summary(rows: list[dict], *, title: str, protocol: str) -> str:
    """Markdown: a title, the protocol, and a table of mean ± std (sample std) per method."""
    lines = [f"# {title}", "", f"Protocol: {protocol}", ""]
    lines.append("| method | " + " | ".join(h for _, h in SUMMARY_COLUMNS) + " | runs |")
    lines.append("| --- |" + " ---: |" * (len(SUMMARY_COLUMNS) + 1))
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        cells = [_mean_std([r[key] for r in sel], digits=1 if key == "seconds" else 3)
                 for key, _ in SUMMARY_COLUMNS]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {len(sel)} |")
    lines += ["", "Mean ± sample standard deviation over the folds (or seeds). Silhouette and Dunn are "
              "measured in each method's embedding (pixels for k-means), so they compare clusterings "
              "within a method better than across methods. Time: wall-clock seconds of fitting, including "
              "the shared autoencoder pretraining for the autoencoder-based methods."]
    return "\n".join(lines) + "\n"


def _mean_std(values: list, *, digits: int) -> str:
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _check_methods(methods: Sequence[str]) -> list[str]:
    methods = [m.strip() for m in methods if m.strip()]
    if not methods:
        raise ValueError(f"No methods given: pass --methods, e.g. kmeans,ae-kmeans,dec. Available: "
                         f"{', '.join(sorted(METHODS))}.")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {', '.join(unknown)}. Available: {', '.join(sorted(METHODS))}.")
    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods lists a method twice: {','.join(methods)}.")
    return methods


def _pretrains(methods: Sequence[str]) -> bool:
    """Whether a split pretrains an autoencoder: for AE + k-means or a method that starts from it."""
    return any(method_class(m).pretrains_autoencoder or method_class(m).reuses_autoencoder for m in methods)


def _inputs(name: str, X: np.ndarray) -> np.ndarray:
    return check_features(X.reshape(X.shape[0], -1)) if method_class(name).input_kind == VECTORS else X


def _title(name: str, n: int, k: int) -> str:
    return f"deepclust evaluate: {name} ({n} samples, {k} clusters)"


def _write_setup(paths, config, methods, folds, seeds, splits, protocol, dataset, X, n_clusters) -> None:
    write_json(paths.config, {
        **{part: options for part, options in config.to_parts(()).items() if part != "method"},
        "method_options": {name: config.part(*method_class(name).option_groups) for name in methods},
        "evaluation": {"methods": methods, "folds": folds, "seeds": None if seeds is None else list(seeds),
                       "protocol": protocol},
        "resolved": {"dataset": dataset.name, "description": dataset.description,
                     "n_samples": int(X.shape[0]), "n_clusters": n_clusters,
                     "image_shape": list(dataset.images.shape[1:]), "labelled": dataset.labels is not None},
        "versions": versions(),
    })
    write_json(paths.folds, {
        "protocol": "all-data" if splits[0].all_data else "k-fold",
        "description": protocol,
        "split_seed": config.seed,
        "stratified": dataset.labels is not None and not splits[0].all_data,
        "n_samples": int(X.shape[0]),
        "splits": [{"split": s.index, "seed": s.seed, "n_train": int(s.train.size),
                    "n_test": int(s.test.size), "test_indices": None if s.all_data else s.test.tolist()}
                   for s in splits],
    })


def _write_results(paths: RunPaths, rows: list[dict], protocol: str) -> None:
    write_json(paths.results_json, {"protocol": protocol, "rows": rows})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS} for r in rows)
    write_text(paths.results_csv, buf.getvalue())


def _write_report(paths: RunPaths, rows: list[dict], name: str, protocol: str) -> str | None:
    """``report.html`` through the report module; a failure there is reported, never fatal here."""
    try:
        from ..report.page import write_comparison_report
    except ImportError as err:
        message = f"report.html not written: deepclust.report.page is unavailable ({err})."
        print(f"deepclust: warning: {message}", file=sys.stderr)
        return message
    try:
        write_comparison_report(rows, paths.root / "report.html", f"deepclust evaluate: {name}", protocol)
    except Exception as err:  # the results are written already; say what went wrong and keep them
        message = f"report.html not written: {type(err).__name__}: {err}"
        print(f"deepclust: warning: {message}", file=sys.stderr)
        return message
    return None


__all__ = ["EvaluationResult", "Split", "evaluate", "format_summary", "make_splits", "protocol_text",
           "stratified_folds"]
