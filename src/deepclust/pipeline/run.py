"""One clustering run from a config: load data, cluster, score, write the run folder.

Every step is a plain function so tests and notebooks can call it without the command line.
Bad input (unknown data set, missing files, bad k, NaN) fails *before* the run folder exists.
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import distributed as D
from .._errors import describe_error, is_out_of_memory, ran_out_of_memory
from .._heap import release_free_memory
from .._io import (
    RunLock,
    atomic_open,
    check_output_folder,
    jsonable_params,
    rows_to_csv,
    write_json,
    write_npy,
    write_text,
)
from ..config import AUTO, RunConfig
from ..data import ImageDataset
from ..data.rows import ImageRows
from ..deep import AEKMeans, as_image_tensor, save_model
from ..deep.training import TrainingDiverged
from ..determinism import is_pinned, pin_torch
from ..metrics import evaluate_clustering
from ..progress import progress_enabled
from ..report.page import try_write_report
from ..runs import RunPaths, create_run_dir, set_status, versions
from .build import build_method
from .defaults import choose_pipeline
from .folder import after_fit, fit_config, summary_lines
from .inputs import auto_k_values, load_backbone_inputs, load_run_inputs
from .memory import check_network
from .validate import absolute_paths, check_with_data, validate


@dataclass
class RunResult:
    paths: RunPaths
    metrics: dict
    labels: np.ndarray
    dataset: ImageDataset


def choose_k_for_run(config: RunConfig, paths: RunPaths, method, X: np.ndarray,
                     k_values: list[int]) -> tuple[dict, list[dict]]:
    """``--clusters auto``: pick k by the silhouette of k-means for each of ``k_values``, set it on
    ``method`` and write ``k_selection.json``. Returns the selection and the history of any pretraining.

    Autoencoder methods pretrain their autoencoder once (checkpointed in checkpoints/choose-k), choose k
    on its embedding and then reuse it without pretraining again; other methods choose k on the input.
    """
    from ..cluster.choose_k import choose_n_clusters

    history: list[dict] = []
    if type(method).reuses_autoencoder:
        pre = build_method(config, k_values[0], cls=AEKMeans)
        pre.set_params(checkpoint_dir=str(paths.checkpoints / "choose-k")).fit(X)
        space, where = pre.embedding_, "the pretrained autoencoder's embedding"
        method.set_params(autoencoder=pre.autoencoder_, pretrain_epochs=0, layerwise_epochs=0)
        history = [row for row in pre.history_ if row.get("stage") in ("layerwise", "pretrain")]
    else:
        space, where = X.reshape(X.shape[0], -1), "the input features"
    restarts = {} if config.n_init is None else {"n_init": config.n_init}
    found = choose_n_clusters(space, k_values, config.seed, **restarts, max_iter=config.max_iter,
                              backend=config.backend, device=config.device,
                              verbose=progress_enabled(config.progress))
    selection = {**found.to_dict(), "space": where}
    write_json(paths.k_selection, selection)
    method.set_params(n_clusters=found.best_k)
    return selection, history


def run(config: RunConfig, *, resume: str | Path | None = None) -> RunResult:
    """Cluster ``config.dataset`` with ``config.method`` and write a new run folder.

    ``resume`` continues an interrupted run in its own folder from its last checkpoint. One process at a
    time writes a run folder (``RunLock``); a second ``--resume`` of a run in progress is refused.
    """
    by_default = config.method is None
    config, chosen = choose_pipeline(config)  # no method named: chosen from the data
    config = absolute_paths(validate(config))  # every option checked before anything is written
    if config.deterministic:
        pin_deterministic()
    lock = RunLock(resume).acquire() if resume and D.is_main_process() else None
    try:
        if chosen:
            print(f"deepclust: {chosen}", file=sys.stderr)
        return _run(config, resume, chosen, choose_method=by_default and chosen is None)
    finally:
        if lock is not None:
            lock.release()


def pin_deterministic() -> None:
    """One thread and torch's deterministic kernels; says so when the process was not started pinned
    (the BLAS and numba pins only take effect in a new process: ``deepclust.determinism``)."""
    pin_torch()
    if not is_pinned():
        print("deepclust: --deterministic pins threads and torch here; for the same bits on any machine "
              "start Python with deepclust.determinism.pinned_environment() set (the command line does)",
              file=sys.stderr)


def _run(config: RunConfig, resume, chosen: str | None = None, *, choose_method: bool = False) -> RunResult:
    """``run`` once its options are checked (and a resumed folder is locked by the caller);
    ``choose_method``: no method was named, so the data may choose it (``defaults.method_for_data``)."""
    if not resume:
        check_output_folder(config.out)  # a bad --out fails before any work
    backbone = None  # what the pretrained backbone is, when one makes the features
    embedding_seconds = None
    recipe = None  # the method's recipe for the data, when it set options
    if config.backbone:
        tick = time.perf_counter()
        dataset, X, n_clusters, backbone = load_backbone_inputs(fit_config(config))
        embedding_seconds = round(time.perf_counter() - tick, 4)  # extraction, or reading the cache
    else:  # options left unset come from the method's recipe for these data
        config, recipe, dataset, X, n_clusters, why = load_run_inputs(config, choose_method=choose_method)
        if why is not None:
            chosen = why
            print(f"deepclust: {chosen}", file=sys.stderr)
        if resume:  # the saved options already hold the recipe's values; keep the record of them
            recipe = _saved_recipe(RunPaths(Path(resume)))
    check_with_data(config, X.shape[0])
    k_values = auto_k_values(config, X.shape[0]) if n_clusters == AUTO else None
    method = build_method(config, k_values[0] if k_values else n_clusters)
    trains = type(method).trains_network
    # The network is built on the meta device and sized now: a shape that does not fit the data or a
    # network too big for memory fails here, before the run folder, not as a failed run (or a kill).
    check_network(method, X, k_values[0] if k_values else n_clusters, device=config.device)
    X_fit = X
    if D.is_distributed():  # under torchrun every process fits; rank 0 alone writes
        _check_distributed(config, method, k_values)
        if not trains:  # k-means fits each process's shard; a network reads every row by index
            X_fit = X[D.shard_slice(len(X))]
        if not D.is_main_process():
            if trains:
                method.fit(X, dataset.labels)
            else:
                method.fit(X_fit)
                D.concat_shards(np.asarray(method.labels_, dtype=np.int64))  # rank 0 gathers the labels
            return RunResult(None, {}, np.zeros(0, np.int64), dataset)
    if resume:
        paths = RunPaths(Path(resume))
        set_status(paths, "running")
    else:
        paths = create_run_dir(config.out, f"{dataset.name}-{config.method}")
        lock = RunLock(paths.root).acquire()
    if trains:
        method.set_params(checkpoint_dir=str(paths.checkpoints))
    stage = "writing config.json"  # what the run was doing, for an out-of-memory message
    try:
        arch_k = k_values[0] if k_values else n_clusters  # auto: the autoencoder is built for the first k
        _write_config(paths, config, dataset, X, n_clusters, method, arch_clusters=arch_k, backbone=backbone,
                      chosen=chosen, recipe=recipe)
        start = time.perf_counter()
        pretrained_history: list[dict] = []
        if k_values:  # --clusters auto: choose k first (pretraining the autoencoder once), then fit with it
            stage = "choosing k"
            selection, pretrained_history = choose_k_for_run(config, paths, method, X, k_values)
            n_clusters = selection["best_k"]
            _write_config(paths, config, dataset, X, n_clusters, method, arch_clusters=arch_k,
                          backbone=backbone, k_selection=selection, chosen=chosen, recipe=recipe)
        stage = f"{'training' if trains else 'fitting'} {config.method}"
        if trains:
            method.fit(X, dataset.labels)  # labels only feed the per-epoch log, never the training
        else:
            method.fit(X_fit)
        stage = "scoring the clusters"
        seconds = time.perf_counter() - start
        release_free_memory()  # what training and k-means freed, before scoring needs its own
        if pretrained_history:  # the pretraining done while choosing k belongs to this run's curves
            method.history_ = pretrained_history + method.history_
        labels = np.asarray(method.labels_, dtype=np.int64)
        if X_fit is not X:
            labels = D.concat_shards(labels)  # every rank's labels, in data order
        space = getattr(method, "embedding_", X)
        metrics = evaluate_clustering(labels, dataset.labels, space, random_state=config.seed)
        metrics.update(seconds=round(seconds, 4), metric_space="embedding" if space is not X else "input")
        if embedding_seconds is not None:
            metrics["embedding_seconds"] = embedding_seconds
        if hasattr(method, "inertia_"):
            metrics.update(inertia=float(method.inertia_), n_iter=int(method.n_iter_))
        if D.is_distributed():
            metrics["processes"] = D.world_size()
        if config.metrics:
            metrics["spaces"] = metrics_by_space(method, X, labels, seed=config.seed)
        stage = "writing the run folder"
        # preprocessing.json; an image folder's held-out test/ and class mappings
        metrics.update(after_fit(paths, config, method, dataset, X, backbone=backbone))
        write_json(paths.metrics, metrics)
        write_assignments(paths.assignments, dataset, labels)
        write_npy(paths.centers, np.asarray(method.cluster_centers_))
        if trains:
            write_npy(paths.embeddings, method.embedding_)
            write_text(paths.history, rows_to_csv(method.history_))
        if type(method).saves_model:
            save_model(method, paths.model)
        if config.visualize:
            stage = "drawing the plots"
            write_plots(paths, method, dataset, X, labels, seed=config.seed)
        # The page reads the run folder: the estimator and its (N, d) embedding are not needed any more.
        del method, space
        release_free_memory()
        report_error = try_write_report(paths.root, dataset=dataset,
                                        features=None if isinstance(X, ImageRows) else X)
        set_status(paths, "complete", **({"report_error": report_error} if report_error else {}))
    except KeyboardInterrupt:
        _mark(paths, "interrupted", resume=f"deepclust run --resume {paths.root}")
        raise
    except BaseException as err:
        failure = err
        if is_out_of_memory(err):  # one line that says when and what to change, not the allocator's words
            failure = ran_out_of_memory(err, stage, network=trains)
        if resume or (trains and not isinstance(err, TrainingDiverged)):
            # keep checkpoints: hours of training may be in them
            _mark(paths, "failed", reason=describe_error(failure)[0])
        else:
            lock.release()
            shutil.rmtree(paths.root, ignore_errors=True)  # nothing worth keeping: never a half-written run
        if failure is err:
            raise
        raise failure from err
    finally:
        if not resume:
            lock.release()
    return RunResult(paths, metrics, labels, dataset)


def _saved_recipe(paths: RunPaths) -> dict | None:
    """The recipe record in a resumed run's ``config.json`` (None if it has none or is unreadable)."""
    from ..run_folder import read_json

    try:
        record = read_json(paths.config).get("resolved", {}).get("recipe")
    except (OSError, ValueError, AttributeError):
        return None
    return record if isinstance(record, dict) else None


def _mark(paths: RunPaths, status: str, **extra) -> None:
    """``set_status`` while handling another error: a disk too full to take status.json must not hide
    the error that stopped the run."""
    with contextlib.suppress(OSError):
        set_status(paths, status, **extra)


def _check_distributed(config: RunConfig, method, k_values) -> None:
    """What runs under torchrun: methods whose fit is collective, with k given."""
    if not type(method).fits_across_processes:
        from ..methods import METHODS

        names = ", ".join(sorted(n for n, c in METHODS.items() if c.fits_across_processes))
        raise ValueError(f"--method {config.method} runs in one process only; under torchrun use {names}, "
                         "or run it with plain 'deepclust run'.")
    if k_values:
        raise ValueError("--clusters auto runs in one process only; under torchrun give -k K.")


def metrics_by_space(method, X: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict[str, dict]:
    """Silhouette and Dunn's index of the same clusters in each space the run passed through.

    Seed 002's ``--metrics``: how well separated the clusters are in the raw pixels, in the pretrained
    autoencoder's embedding and in the final embedding, so the effect of each stage shows.
    """
    pixels, pick = pixel_rows(X, seed)
    spaces = {"pixels": (pixels, labels if pick is None else labels[pick])}
    if hasattr(method, "pretrained_embedding_"):
        spaces["pretrained"] = (method.pretrained_embedding_, labels)
    if hasattr(method, "embedding_"):
        spaces["final"] = (method.embedding_, labels)
    out = {}
    for name, (Z, space_labels) in spaces.items():
        scores = evaluate_clustering(space_labels, None, Z, random_state=seed)
        out[name] = {k: v for k, v in scores.items() if k.startswith(("silhouette", "dunn"))}
    return out


#: Rows of a data cache read for statistics over the pixels (silhouette, Dunn, the PCA plot): a sample,
#: since those statistics are sampled anyway and the cache's N images are never all in memory.
PIXEL_SAMPLE = 20_000


def pixel_rows(X, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """``X`` as (n, d) pixel rows, and None; for a data cache (:class:`ImageRows`) a seeded sample of at
    most :data:`PIXEL_SAMPLE` rows, and the indices of the rows drawn."""
    if isinstance(X, ImageRows):
        rows, pick = X.view(flat=True).sample(PIXEL_SAMPLE, seed)
        return rows, (None if len(pick) == len(X) else pick)
    return X.reshape(X.shape[0], -1), None


def resume_run(run_dir: str | Path) -> RunResult:
    """Continue the run in ``run_dir`` (interrupted or failed) with its saved configuration.

    Under torchrun rank 0 reads the folder and sends its configuration (or its error) to every rank;
    the training stages then resume from rank 0's checkpoints (``deep/loop.py``).
    """
    paths = RunPaths(Path(run_dir))
    if not D.is_distributed():
        return run(_saved_config(paths, run_dir), resume=paths.root)
    try:
        found = _saved_config(paths, run_dir) if D.is_main_process() else None
    except Exception as err:  # sent to every rank, so all of them stop with rank 0's message
        found = err
    found = D.broadcast_object(found)
    if isinstance(found, Exception):
        raise found
    return run(found, resume=paths.root)


def _saved_config(paths: RunPaths, run_dir) -> RunConfig:
    """The configuration of an unfinished run folder; an error when it cannot be resumed."""
    if not paths.config.is_file():
        raise FileNotFoundError(f"{run_dir} is not a deepclust run folder: it has no config.json.")
    status = json.loads(paths.status.read_text())["status"] if paths.status.is_file() else "unknown"
    if status == "complete":
        raise ValueError(f"The run in {run_dir} is already complete; nothing to resume.")
    return RunConfig.from_saved(json.loads(paths.config.read_text()))


def write_plots(paths: RunPaths, method, dataset: ImageDataset, X: np.ndarray, labels: np.ndarray, *,
                seed: int = 0) -> list[Path]:
    """The PNGs of ``--visualize``: latent spaces, reconstructions, loss curves, confusion matrix,
    and a montage of each cluster's most typical images."""
    from ..report import plots

    out, y = paths.plots, dataset.labels
    lazy = isinstance(X, ImageRows)  # a data cache: images read by index, pixels sampled
    images = dataset.images if X.ndim == 2 or lazy else X  # what the method saw, (N, H, W, C)
    flat, drawn = pixel_rows(X, seed)
    shown = labels if drawn is None else labels[drawn]
    written = [plots.plot_embedding(flat, shown, out / "latent_pixels.png",
                                    true_labels=y if y is None or drawn is None else y[drawn],
                                    title="raw pixels (PCA)", random_state=seed)]
    if hasattr(method, "embedding_"):
        for name, Z in (("pretrained", getattr(method, "pretrained_embedding_", None)),
                        ("final", method.embedding_)):
            if Z is not None:  # DeepCluster has no pretrained embedding
                written.append(plots.plot_embedding(Z, labels, out / f"latent_{name}.png", true_labels=y,
                                                    title=f"{name} embedding (PCA)", random_state=seed))
        if any(isinstance(row.get("loss"), float) for row in method.history_):  # none when nothing trained
            written.append(plots.plot_history(method.history_, out / "loss_curves.png"))
        if hasattr(method, "network_"):  # DeepCluster: clustering loss, CE, NMI t-1/t, ACC/NMI per epoch
            written.append(plots.plot_deepcluster_history(method.history_, out / "deepcluster_history.png"))
    if hasattr(method, "autoencoder_"):
        pick = np.random.default_rng(seed).choice(len(X), size=min(25, len(X)), replace=False)
        with torch.no_grad():
            method.autoencoder_.eval()
            _, x_hat = method.autoencoder_(as_image_tensor(X[pick]).to(method._device))
        shown = X[pick].permute(0, 2, 3, 1).numpy() if lazy else images[pick]
        written.append(plots.plot_reconstructions(shown, x_hat.cpu().permute(0, 2, 3, 1).numpy(),
                                                  out / "reconstructions.png", n=len(pick)))
    space = getattr(method, "embedding_", flat)
    centers = np.asarray(method.cluster_centers_, dtype=np.float32)
    typical = -np.linalg.norm(space - centers[labels], axis=1)  # closest to its centre first
    written.append(plots.plot_cluster_montage(dataset.images, labels, out / "cluster_montage.png",
                                              scores=typical, random_state=seed))
    if y is not None:
        written.append(plots.plot_confusion_matrix(y, labels, out / "confusion_matrix.png",
                                                   class_names=dataset.class_names))
    return written


def format_summary(result: RunResult) -> str:
    """A short, readable summary of a finished run for the terminal."""
    m = result.metrics
    lines = [f"deepclust run: {result.dataset.name} ({m['n_samples']} samples), "
             f"{m['n_clusters']} clusters in {m['seconds']:.2f} s"]
    names = [("acc", "ACC"), ("nmi", "NMI"), ("ari", "ARI"), ("silhouette", "silhouette"), ("dunn", "Dunn")]
    for key, label in names:
        if m.get(key) is not None:
            note = ""
            if key in ("silhouette", "dunn") and not m.get(f"{key}_exact", True):
                note = f"  (estimated on a sample of {m.get(f'{key}_sample_size')})"
            lines.append(f"  {label:<11}{m[key]:.4f}{note}")
    lines += summary_lines(m)  # held-out test/ and class mappings of an image folder
    if m.get("spaces"):
        lines.append(f"  {'space':<11}{'silhouette':>11}{'Dunn':>9}")
        for space, scores in m["spaces"].items():
            cells = [f"{scores[key]:.4f}" if scores.get(key) is not None else "-"
                     for key in ("silhouette", "dunn")]
            lines.append(f"  {space:<11}{cells[0]:>11}{cells[1]:>9}")
    lines.append(f"  run folder  {result.paths.root}")
    return "\n".join(lines)


def _write_config(paths, config, dataset, X, n_clusters, method, *, arch_clusters=None,
                  k_selection=None, backbone: dict | None = None, chosen: str | None = None,
                  recipe: dict | None = None) -> None:
    """``config.json``: the data, run and method parts of the config (only the options the method reads),
    what they resolved to, and the versions."""
    resolved_k = {} if k_selection is None else {"k_selection": {
        key: k_selection[key] for key in ("criterion", "best_k", "space")} | {"file": paths.k_selection.name}}
    write_json(paths.config, {
        **config.to_parts(type(method).option_groups),
        "resolved": {
            "n_clusters": n_clusters,
            "dataset": dataset.name,
            "description": dataset.description,
            "n_samples": int(X.shape[0]),
            "n_features": int(np.prod(X.shape[1:])),
            "architecture": _architecture(config, dataset, method, arch_clusters or n_clusters),
            "backbone": backbone,  # pretrained weights made the features: name, weights, source, licence
            "pipeline_chosen": chosen,  # why this method (and backbone) when none was named
            "recipe": recipe,  # the options the method's recipe for these data set, and why
            **resolved_k,
            "image_shape": list(dataset.images.shape[1:]),
            "method_params": jsonable_params(method.get_params()),
            "method_traits": type(method).traits(),
        },
        "versions": versions(),
    })


def _architecture(config: RunConfig, dataset: ImageDataset, method, n_clusters: int):
    """The network a run trains: that of ``--from``, or what the method builds for the data's shape."""
    if not type(method).trains_network:
        return None
    if config.from_run and type(method).reuses_autoencoder:
        return {"from_run": config.from_run}
    h, w, c = dataset.images.shape[1:]
    return method.architecture((1 if config.grayscale else c, h, w), n_clusters)


def write_assignments(path: Path, dataset: ImageDataset, labels: np.ndarray, *, chunk: int = 65536) -> None:
    """``assignments.csv`` (sample_id, cluster, true_label and path where known), written atomically and
    ``chunk`` rows at a time: the text of millions of rows is never held whole."""
    header = ["sample_id", "cluster"]
    if dataset.labels is not None:
        header.append("true_label")
    if dataset.paths is not None:
        header.append("path")
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for start in range(0, len(labels), chunk):
            stop = min(start + chunk, len(labels))
            columns = [range(start, stop), labels[start:stop].tolist()]
            if dataset.labels is not None:
                columns.append(np.asarray(dataset.labels[start:stop], dtype=np.int64).tolist())
            if dataset.paths is not None:
                columns.append(dataset.paths[start:stop])
            writer.writerows(zip(*columns, strict=True))
