"""The configuration of a run, in parts: the data, the run, and the options of the method that runs.

``RunConfig`` is the flat set of every option the command line knows. Each field belongs to one part:
``data`` (what to cluster and how to prepare it), ``embedding`` (a pretrained backbone that turns the
images into features first), ``run`` (k, seed, device, outputs) or one or more
*option groups* that only some methods read (``kmeans``, ``autoencoder``, ``clustering_stage``,
``deepcluster``). A method class names the groups it reads (its ``option_groups`` trait), so
``config.json`` and the report show only the options that applied, and :func:`method_params` turns a
config into the estimator's parameters without a list of method names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_DATASET = "digits"
DEFAULT_METHOD = "n2d"
# A folder of colour photographs with no method named: these features, this method (pipeline/defaults.py).
PHOTO_BACKBONE = "efficientnet-lite0"
PHOTO_METHOD = "scan"
AUTO = "auto"  # n_clusters="auto": choose k by the silhouette (--clusters auto)

DATA, EMBEDDING, RUN = "data", "embedding", "run"
#: The option groups a method may read, with what each is for.
OPTION_GROUPS = {
    "kmeans": "k-means on the input (restarts, iterations, back end)",
    "autoencoder": "autoencoder pretraining (architecture, epochs, optimiser, loss, augmentation)",
    "clustering_stage": "the trained clustering stage of DEC, IDEC and DCN",
    "manifold": "the UMAP map that N2D, umap-gmm and umap-spectral cluster in",
    "graph_linkage": "the nearest-neighbour graph that graph-linkage merges clusters along",
    "scan": "SCAN's neighbours, training epochs and self-labelling",
    "self_labelling": "N2D's last stage: a convnet trained on the confident clusters' augmented views",
    "convnet": "the convnet DeepCluster trains on pseudo-labels: network, front end, epochs, optimisers",
}


def _option(default: Any, *groups: str, param: str | None = None) -> Any:
    """A field of ``groups``; ``param`` is the estimator parameter it sets (default: the field's name)."""
    return field(default=default, metadata={"groups": groups, "param": param})


@dataclass
class RunConfig:
    """Everything that defines a run; saved in parts as ``config.json`` in the run folder."""

    dataset: str = _option(DEFAULT_DATASET, DATA)
    data_dir: str | None = _option(None, DATA)
    split: str = _option("all", DATA)
    grayscale: bool = _option(False, DATA)
    size: int | None = _option(None, DATA)  # resize images to size x size
    normalize: str | None = _option("unit", DATA)  # "unit" ([0, 1]), "standard" or None
    # a pretrained backbone turns the images into feature vectors first (None: the method sees pixels)
    backbone: str | None = _option(None, EMBEDDING)  # a registered name or a model file
    backbone_weights: str | None = _option(None, EMBEDDING)  # local weights instead of the default source
    feature_cache: str | None = _option(None, EMBEDDING)  # None: ~/.cache/deepclust/features
    method: str = _option("kmeans", RUN)
    n_clusters: int | str | None = _option(None, RUN)  # None: the number of classes; "auto": chosen
    k_range: str | None = _option(None, RUN)  # "MIN:MAX" that n_clusters="auto" tries
    seed: int = _option(0, RUN)
    out: str = _option("runs", RUN)
    device: str = _option("cpu", RUN)
    visualize: bool = _option(False, RUN)  # write PNG plots to plots/
    metrics: bool = _option(False, RUN)  # also score the clusters in every space the run passed through
    progress: bool | None = _option(None, RUN)  # None: show bars on a terminal
    deterministic: bool = _option(False, RUN)  # bit-identical across machines (deepclust.determinism)
    # k-means restarts: of k-means itself, or of the k-means that starts a deep method's clustering.
    # None: each method's own default (10; 20 for the autoencoder methods).
    n_init: int | None = _option(None, "kmeans", "autoencoder", "convnet")
    backend: str = _option("torch", "kmeans", "convnet")
    max_iter: int = _option(300, "kmeans")
    # autoencoder methods; arch None: default_architecture for the data's shape (DeepCluster: alexnet-small)
    arch: str | None = _option(None, "autoencoder", "convnet")
    # None here: the method's recipe for the data's shape (deepclust.recipes), else the estimator's default
    # (50 epochs, batch 256, Adam at 1e-3)
    pretrain_epochs: int | None = _option(None, "autoencoder")
    layerwise_epochs: int = _option(0, "autoencoder")
    batch_size: int | None = _option(None, "autoencoder", "convnet")
    lr: float | None = _option(None, "autoencoder")
    optimizer: str | None = _option(None, "autoencoder")
    loss: str = _option("mse", "autoencoder")
    noise: float = _option(0.0, "autoencoder")
    augment: bool = _option(False, "autoencoder")
    from_run: str | None = _option(None, "autoencoder", param="autoencoder")  # reuse this run's autoencoder
    # the trained clustering stage (dec, idec, dcn); None: the method's own default
    cluster_epochs: int = _option(50, "clustering_stage", param="clustering_epochs")
    cluster_optimizer: str | None = _option(None, "clustering_stage")
    cluster_lr: float | None = _option(None, "clustering_stage")
    cluster_augment: bool | None = _option(None, "clustering_stage")  # None: the recipe's, else off
    # the UMAP manifold stage (n2d, umap-gmm, umap-spectral)
    umap_neighbors: int = _option(20, "manifold", param="n_neighbors")
    umap_dim: int | None = _option(None, "manifold", param="manifold_dim")  # None: n_clusters
    umap_metric: str = _option("euclidean", "manifold", param="metric")
    # N2D's self-labelling rounds (0: off); None: the recipe's, else off
    self_label_rounds: int | None = _option(None, "self_labelling")
    self_label_students: int | None = _option(None, "self_labelling")  # None: the recipe's, else 0
    self_label_epochs: int | None = _option(None, "self_labelling")  # None: the recipe's, else 10
    self_label_schedule: str | None = _option(None, "self_labelling")  # None: the recipe's, else constant
    self_label_smoothing: float | None = _option(None, "self_labelling")  # None: the recipe's, else 0
    # graph-linkage: out-edges per point; None: the recipe's, else the estimator's (5, 0.5)
    linkage_neighbors: int | None = _option(None, "graph_linkage", param="n_neighbors")
    min_cluster_fraction: float | None = _option(None, "graph_linkage")
    # SCAN on feature vectors
    scan_neighbors: int = _option(20, "scan", param="n_neighbors")
    scan_epochs: int = _option(50, "scan", param="epochs")
    self_label: bool = _option(True, "scan")
    # deepcluster
    dc_input: str = _option("sobel", "convnet", param="input")  # grey, colour, sobel or colour+sobel
    dc_epochs: int = _option(15, "convnet", param="epochs")
    pca_dim: int = _option(16, "convnet")
    train_clusters: int | None = _option(None, "convnet")  # k while training; None: n_clusters
    net_optimizer: str = _option("sgd", "convnet", param="optimizer")
    top_optimizer: str = _option("sgd", "convnet")
    dc_lr: float | None = _option(None, "convnet", param="lr")  # None: 0.05 for SGD, 1e-3 for Adam
    dc_lr_schedule: str = _option("constant", "convnet", param="lr_schedule")
    dc_augment: str = _option("crop", "convnet", param="augment")  # none, crop, flip or crop+flip

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def part(self, *groups: str) -> dict:
        """The fields of any of ``groups``, in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if set(f.metadata["groups"]) & set(groups)}

    def to_parts(self, option_groups: Iterable[str]) -> dict:
        """``{"data", "embedding", "run", "method": {"name", "options"}}``: what ``config.json`` stores,
        with only the options of ``option_groups`` (the groups the method reads)."""
        return {DATA: self.part(DATA), EMBEDDING: self.part(EMBEDDING),
                RUN: {k: v for k, v in self.part(RUN).items() if k != "method"},
                "method": {"name": self.method, "options": self.part(*option_groups)}}

    @classmethod
    def from_saved(cls, saved: dict) -> RunConfig:
        """The config stored in a ``config.json`` (in parts, or the flat ``"config"`` of older runs);
        options it does not hold keep their defaults, unknown keys are ignored."""
        return cls(**{k: v for k, v in flat_options(saved).items() if k in _FIELD_NAMES})


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(RunConfig))


def flat_options(saved: dict | None) -> dict:
    """Every option a saved ``config.json`` holds as one flat dict (``{}`` for anything else)."""
    if not isinstance(saved, dict):
        return {}
    if isinstance(saved.get("config"), dict):  # runs written before the config was stored in parts
        return dict(saved["config"])
    flat: dict = {}
    for key in (DATA, EMBEDDING, RUN):
        if isinstance(saved.get(key), dict):
            flat.update(saved[key])
    method = saved.get("method")
    if isinstance(method, dict):
        if isinstance(method.get("name"), str):
            flat["method"] = method["name"]
        if isinstance(method.get("options"), dict):
            flat.update(method["options"])
    return flat


def method_params(config: RunConfig, option_groups: Iterable[str]) -> dict:
    """Estimator parameters from the fields of ``option_groups``; a field left at None is left to the
    method's own default. ``from_run`` is a path here: the caller loads the autoencoder it names."""
    groups = set(option_groups)
    params = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None or not groups & set(f.metadata["groups"]) or f.name == "from_run":
            continue
        params[f.metadata["param"] or f.name] = value
    return params


__all__ = ["AUTO", "DEFAULT_DATASET", "DEFAULT_METHOD", "OPTION_GROUPS", "RunConfig", "flat_options",
           "method_params"]
