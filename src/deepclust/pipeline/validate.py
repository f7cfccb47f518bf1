"""Every option of a run checked before anything is loaded or written.

:func:`validate` is called first by :func:`deepclust.pipeline.run.run` and
:func:`deepclust.pipeline.evaluate.evaluate`, so a bad option (CLI or Python API alike) fails with one
ValueError that names the option, the value and the fix, and no run folder is ever made for it. The
same checks guard the options read back from a run folder's ``config.json`` (``report``, ``--resume``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from pathlib import Path

from ..config import AUTO, RunConfig

#: Largest --resize: a 1024 x 1024 x 3 float image is 12 MB; larger sizes exhaust memory on any data set.
MAX_RESIZE = 1024
#: Largest --batch-size (a larger batch is the whole data set of any realistic run anyway).
MAX_BATCH_SIZE = 2**20
MAX_SEED = 2**32 - 1
#: Widest layer (units of a dense layer, filters of a convolution) an architecture file may ask for.
MAX_WIDTH = 2**16
NORMALIZE = (None, "unit", "standard")
#: umap-learn's metrics that need no parameter and take any real vectors (its other names need extra
#: arguments, such as mahalanobis or wminkowski, or special data, such as haversine or categorical).
UMAP_METRICS = ("euclidean", "l2", "manhattan", "l1", "taxicab", "chebyshev", "linf", "linfty", "linfinity",
                "minkowski", "canberra", "braycurtis", "cosine", "correlation", "hellinger", "hamming",
                "jaccard", "dice", "matching", "kulsinski", "rogerstanimoto", "russellrao", "sokalmichener",
                "sokalsneath", "yule")

# (field, option, minimum, allows None): integer options.
_INTS = (
    ("n_init", "--n-init", 1, True), ("max_iter", "max_iter", 1, False),
    ("pretrain_epochs", "--pretrain", 0, True), ("layerwise_epochs", "--layerwise", 0, False),
    ("batch_size", "--batch-size", 1, True), ("cluster_epochs", "--cluster", 0, False),
    ("umap_neighbors", "--umap-neighbors", 2, False), ("umap_dim", "--umap-dim", 1, True),
    ("self_label_rounds", "--self-label-rounds", 0, True),
    ("self_label_students", "--self-label-students", 0, True),
    ("self_label_epochs", "--self-label-epochs", 1, True),
    ("linkage_neighbors", "--linkage-neighbors", 1, True),
    ("scan_neighbors", "--scan-neighbors", 1, False), ("scan_epochs", "--scan-epochs", 1, False),
    ("dc_epochs", "--dc-epochs", 1, False), ("pca_dim", "--pca-dim", 1, False),
    ("train_clusters", "--train-clusters", 1, True), ("seed", "--seed", 0, False),
)
# (field, option, allows zero, allows None): finite float options.
_FLOATS = (
    ("lr", "--lr", False, True), ("cluster_lr", "--cluster-lr", False, True),
    ("dc_lr", "--dc-lr", False, True), ("noise", "--noise", True, False),
    ("min_cluster_fraction", "--min-cluster-fraction", True, True),
)


def validate(config: RunConfig, *, methods: Iterable[str] | None = None) -> RunConfig:
    """Raise a ValueError (or FileNotFoundError) naming the first bad option of ``config``; returns it.

    ``methods``: the methods that will run (``evaluate``); default ``[config.method]``. Nothing is
    loaded or written: data-dependent checks (k against the number of samples) come with the data.
    """
    from ..methods import METHODS

    methods = [config.method] if methods is None else list(methods)
    for name in methods:
        if name not in METHODS:
            raise ValueError(f"Unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}.")
    _check_text(config.dataset, "--dataset", "a data set name (see 'deepclust datasets') or an image folder")
    if config.data_dir is not None:
        _check_text(config.data_dir, "--data-dir", "the folder holding the data set's files")
    if config.from_run is not None:
        _check_text(config.from_run, "--from", "the folder of a finished deep run")
        if not (Path(config.from_run).expanduser() / "model" / "model.json").is_file():
            raise FileNotFoundError(f"--from {config.from_run}: no saved model in {config.from_run}/model; "
                                    "pass the folder of a finished deep run.")
    _check_text(config.out, "--out", "a folder such as runs/")
    for name, option, minimum, optional in _INTS:
        _check_int(getattr(config, name), option, minimum, optional)
    if config.seed > MAX_SEED:
        raise ValueError(f"--seed must be at most {MAX_SEED}; got {config.seed}.")
    if config.batch_size is not None and config.batch_size > MAX_BATCH_SIZE:
        raise ValueError(f"--batch-size must be at most {MAX_BATCH_SIZE}; got {config.batch_size}.")
    if config.batch_size is not None and config.batch_size < 2 and any(
            "convnet" in METHODS[name].option_groups for name in methods):
        raise ValueError(f"--batch-size must be at least 2 for deepcluster (its batch norm needs two images "
                         f"per batch); got {config.batch_size}.")
    for name, option, zero, optional in _FLOATS:
        _check_float(getattr(config, name), option, zero, optional)
    _check_clusters(config)
    if config.size is not None:
        _check_int(config.size, "--resize", 1, False)
        if config.size > MAX_RESIZE:
            raise ValueError(f"--resize must be at most {MAX_RESIZE} pixels; got {config.size}. Larger "
                             "images do not fit in memory; use a backbone or a smaller size.")
    if config.normalize not in NORMALIZE:
        raise ValueError(f"--normalize must be unit, standard or none; got {config.normalize!r}.")
    from ..deep.self_label import SCHEDULES

    if config.self_label_schedule not in (None, *SCHEDULES):
        raise ValueError(f"--self-label-schedule must be {' or '.join(SCHEDULES)}; "
                         f"got {config.self_label_schedule!r}.")
    if config.self_label_smoothing is not None and not 0 <= config.self_label_smoothing < 1:
        raise ValueError(f"--self-label-smoothing must be in [0, 1); got {config.self_label_smoothing!r}.")
    if config.min_cluster_fraction is not None and config.min_cluster_fraction > 1:
        raise ValueError(f"--min-cluster-fraction must be in [0, 1]; got {config.min_cluster_fraction!r}.")
    check_device(config.device)
    if any("manifold" in METHODS[name].option_groups for name in methods) \
            and config.umap_metric not in UMAP_METRICS:
        raise ValueError(f"--umap-metric {config.umap_metric!r} is not a metric UMAP takes here; use one of "
                         f"{', '.join(UMAP_METRICS)}.")
    _check_arch(config.arch, {group for name in methods for group in METHODS[name].option_groups})
    return config


def check_with_data(config: RunConfig, n_samples: int, *, methods: Iterable[str] | None = None) -> None:
    """The checks that need the data's size, made once it is loaded and before the run folder exists.
    ``methods``: the methods that will run (``evaluate``); default ``[config.method]``."""
    from ..methods import METHODS

    methods = [config.method] if methods is None else list(methods)
    groups = {group for name in methods if name in METHODS for group in METHODS[name].option_groups}
    if "convnet" in groups and config.train_clusters is not None and config.train_clusters > n_samples:
        raise ValueError(f"--train-clusters {config.train_clusters} is larger than the number of samples "
                         f"({n_samples}); use at most {n_samples}.")
    uses_umap = "manifold" in groups
    if uses_umap and config.umap_dim is not None and config.umap_dim >= n_samples:
        raise ValueError(f"--umap-dim {config.umap_dim} must be smaller than the number of samples "
                         f"({n_samples}); UMAP maps to a few dimensions, by default the number of clusters.")


def absolute_paths(config: RunConfig) -> RunConfig:
    """``config`` with its paths absolute (an image folder given as ``dataset``, ``data_dir``,
    ``from_run``, ``out``), so ``config.json`` resumes and reports from any working folder."""
    import dataclasses

    from ..data._registry import canonical_name

    def absolute(value: str | None) -> str | None:
        return None if value is None else str(Path(value).expanduser().absolute())

    changes = {"data_dir": absolute(config.data_dir), "from_run": absolute(config.from_run),
               "out": absolute(config.out), "backbone_weights": absolute(config.backbone_weights),
               "feature_cache": absolute(config.feature_cache)}
    if canonical_name(str(config.dataset)) is None and Path(config.dataset).expanduser().exists():
        changes["dataset"] = absolute(config.dataset)
    for name in ("arch", "backbone"):  # a file given by path (shipped names are not files here)
        value = getattr(config, name)
        if isinstance(value, str) and Path(value).suffix and Path(value).expanduser().is_file():
            changes[name] = absolute(value)
    return dataclasses.replace(config, **changes)


def check_device(device) -> None:
    """``device`` names a device torch knows and that this machine has (cpu, cuda, cuda:N, auto)."""
    import torch

    from .._validation import resolve_device

    if device is None or device == "auto":
        return
    try:
        resolved = resolve_device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a device deepclust knows: use cpu, cuda, cuda:N or "
                         "auto.") from None
    except ValueError:
        raise ValueError(f"--device {device}: no CUDA device is available here; use --device cpu "
                         "(or auto, which falls back to the CPU).") from None
    if resolved.type == "cuda" and resolved.index is not None \
            and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices.")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: deepclust runs on cpu or cuda; use --device cpu.")


def _check_clusters(config: RunConfig) -> None:
    k = config.n_clusters
    if k == AUTO:
        if config.k_range:
            from ..cluster.choose_k import parse_k_range

            parse_k_range(config.k_range)
        return
    if config.k_range:
        raise ValueError(f"--k-range {config.k_range} is only used with --clusters auto; add --clusters "
                         "auto, or drop --k-range.")
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise ValueError(f"--clusters must be a whole number >= 1 or 'auto'; got {k!r}.")
        if k < 1:
            raise ValueError(f"n_clusters must be >= 1 (--clusters {k}); give 1 or more, or 'auto'.")


def _check_arch(arch, groups: set[str]) -> None:
    """``arch``: None, a shipped name of the methods' kind of network, or a readable JSON/YAML file."""
    if arch is None or isinstance(arch, dict):
        return
    from ..models.convnets import list_convnets
    from ..models.spec import SPEC_SUFFIXES, list_architectures, load_spec

    _check_text(arch, "--arch", "a shipped architecture name or a JSON/YAML file")
    known = (list_architectures() if "autoencoder" in groups else []) + \
        (list_convnets() if "convnet" in groups else [])
    if not known or arch in known:
        return  # a method without a network ignores --arch
    path = Path(arch).expanduser()
    if path.suffix.lower() not in SPEC_SUFFIXES:
        if path.exists():
            raise ValueError(f"--arch {arch}: an architecture file must end in {', '.join(SPEC_SUFFIXES)}.")
        raise ValueError(f"Unknown architecture {arch!r}: known ones are {', '.join(known)}; or pass a "
                         f"{'/'.join(SPEC_SUFFIXES)} file.")
    if not path.exists():
        raise FileNotFoundError(f"--arch {arch}: no such file; pass a shipped name ({', '.join(known)}) "
                                "or an existing JSON/YAML file.")
    spec = load_spec(path)  # syntax and type errors name the file and the line
    for part in ("encoder", "decoder", "layers"):
        layers = spec.get(part)
        for i, layer in enumerate(layers if isinstance(layers, list) else []):
            for key in ("units", "filters"):
                value = layer.get(key) if isinstance(layer, dict) else None
                if isinstance(value, int) and value > MAX_WIDTH:
                    raise ValueError(f"{path}: {part} layer {i + 1} has {key}={value}, more than the "
                                     f"{MAX_WIDTH} any layer may have (it would not fit in memory); use "
                                     "fewer.")


def _check_text(value, option: str, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{option} is empty; give {what}.")


def _check_int(value, option: str, minimum: int, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{option} must be a whole number >= {minimum}; got {value!r}.")


def _check_float(value, option: str, zero: bool, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{option} must be a finite number {bound}; got {value!r}.")


__all__ = ["MAX_RESIZE", "UMAP_METRICS", "absolute_paths", "check_device", "check_with_data", "validate"]
