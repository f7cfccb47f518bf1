"""The data stage of a run: load the data set, prepare it for the method's input, resolve k.

Every error here is the user's input, so it is raised before any run folder exists.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_features, check_n_clusters
from ..config import AUTO, RunConfig
from ..data import ImageDataset, load_dataset
from ..data.rows import ImageRows, is_memory_mapped
from ..data.transforms import prepare_features
from ..methods import method_class
from ..progress import progress_enabled
from ..recipes import apply_recipe
from ..traits import IMAGES
from .defaults import method_for_data
from .folder import fit_config, folder_layout


def load_inputs(config: RunConfig, *,
                input_kind: str | None = None) -> tuple[ImageDataset, np.ndarray, int | str]:
    """The data set, its features as the method takes them, and k.

    ``input_kind`` ("images" or "vectors") overrides the method's own (``evaluate`` loads images once
    for every method). k is returned as "auto" when ``config.n_clusters`` is "auto" (the run chooses it,
    see :func:`auto_k_values`). With ``config.backbone`` the features are the backbone's (see
    :func:`load_backbone_inputs`, which also says what the backbone is).
    """
    if config.backbone:
        dataset, X, n_clusters, _ = load_backbone_inputs(config, check_method=input_kind is None)
        return dataset, X, n_clusters
    dataset = load_dataset(config.dataset, data_dir=config.data_dir, split=config.split, size=config.size)
    images = (input_kind or method_class(config.method).input_kind) == IMAGES
    if images and input_kind is None and is_memory_mapped(dataset.images):
        # a data cache: the network reads float batches by index; N images never become floats at once
        X = ImageRows(dataset.images, normalize=config.normalize, grayscale=config.grayscale)
    else:
        X = prepare_features(dataset, grayscale=config.grayscale, normalize=config.normalize,
                             flatten=not images)
    return dataset, *_checked(config, dataset, X, images)


def load_run_inputs(config: RunConfig, *, choose_method: bool = False,
                    ) -> tuple[RunConfig, dict | None, ImageDataset, np.ndarray, int | str, str | None]:
    """A run's pixels (a folder's train/ when test/ is held out), with ``config`` completed by the
    method's recipe for their shape and number (:mod:`deepclust.recipes`), and that recipe's record.

    ``choose_method`` (no method was named): the method may change for these data
    (:func:`~deepclust.pipeline.defaults.method_for_data`); ``config.method`` says which, and the last
    value why (None: it did not change). A recipe that
    resizes the images (COIL-20's objects to 64 x 64) has them loaded again at that size.
    """
    dataset, X, n_clusters = load_inputs(fit_config(config))
    channels = 1 if config.grayscale else dataset.images.shape[-1]
    why = None
    if choose_method:
        config, why = method_for_data(config, (*dataset.images.shape[1:3], channels), len(X))
        if why is not None:  # the new method may take its input in another form (vectors, not images)
            dataset, X, n_clusters = load_inputs(fit_config(config))
    config, recipe = apply_recipe(config, method_class(config.method), (*dataset.images.shape[1:3], channels),
                                  len(X), n_clusters)
    if recipe is not None and "size" in recipe["options"]:
        dataset, X, n_clusters = load_inputs(fit_config(config))
    return config, recipe, dataset, X, n_clusters, why


def load_backbone_inputs(config: RunConfig, *,
                         check_method: bool = True) -> tuple[ImageDataset, np.ndarray, int | str, dict]:
    """The data set, its (n, D) backbone features, k, and the backbone's description.

    Only methods that take vectors cluster backbone features. The images an image folder keeps in
    memory are thumbnails (``--resize`` or 64 px) for the report; the backbone reads the files.
    """
    from .embedding import backbone_features

    if check_method:
        require_vector_methods([config.method], config.backbone)
    X, description = backbone_features(config, dataset := _load_for_backbone(config))
    return dataset, *_checked(config, dataset, X, False), description


def require_vector_methods(methods: list[str], backbone: str) -> None:
    """Backbone features are vectors: every method in ``methods`` must take vectors, before any work."""
    from ..methods import METHODS

    on_images = [m for m in methods if method_class(m).input_kind == IMAGES]
    if on_images:
        takes_vectors = ", ".join(sorted(n for n, c in METHODS.items() if c.input_kind != IMAGES))
        raise ValueError(f"--method {', '.join(on_images)} trains on images, but --backbone {backbone} gives "
                         f"feature vectors: use a method that takes vectors ({takes_vectors}).")


def _load_for_backbone(config: RunConfig) -> ImageDataset:
    """The data set a backbone reads: an image folder's images kept in memory only as thumbnails
    (``--resize`` or 64 px) for the report, since the backbone reads the files themselves."""
    from .embedding import THUMBNAIL_SIZE

    size = config.size
    if size is None and folder_layout(config.dataset) is not None:
        size = THUMBNAIL_SIZE
    return load_dataset(config.dataset, data_dir=config.data_dir, split=config.split, size=size)


def _checked(config: RunConfig, dataset: ImageDataset, X: np.ndarray,
             images: bool) -> tuple[np.ndarray, int | str]:
    """``X`` checked, and k resolved."""
    if not images:
        X = check_features(X)
    elif not isinstance(X, ImageRows) and not np.isfinite(X).all():  # uint8 rows are finite
        raise ValueError("The images contain NaN or infinite values after preprocessing.")
    n_clusters = config.n_clusters
    if n_clusters == AUTO:
        auto_k_values(config, X.shape[0])  # a bad --k-range fails here, before any run folder exists
        return X, AUTO
    if n_clusters is None:
        if dataset.labels is None:
            raise ValueError(
                f"{dataset.name!r} has no labels, so the number of clusters cannot be inferred: "
                "pass --clusters K."
            )
        n_clusters = len(np.unique(dataset.labels))
    return X, check_n_clusters(n_clusters, X.shape[0])


def auto_k_values(config: RunConfig, n_samples: int) -> list[int]:
    """The k that ``--clusters auto`` tries: ``config.k_range`` ("MIN:MAX"), default 2 to min(20, n - 1)."""
    from ..cluster.choose_k import default_k_values, parse_k_range

    k_min, k_max = parse_k_range(config.k_range) if config.k_range else (2, None)
    return default_k_values(n_samples, k_min, k_max)


def embed_dataset(config: RunConfig) -> tuple[np.ndarray, dict]:
    """``deepclust embed``: the backbone features of ``config.dataset`` (extracted once, then cached),
    and the backbone's description. An image folder is streamed from its files, never decoded whole."""
    from ..backbones import extract_features, get_backbone
    from .embedding import dataset_features

    layout = folder_layout(config.dataset)
    backbone = get_backbone(config.backbone, weights=config.backbone_weights, device=config.device)
    progress = progress_enabled(config.progress)
    if layout is not None and not layout.split_folders and config.size is None:
        # listed as the extractor lists folders: the same files in the same order as a run's
        features = extract_features(layout.path, backbone, cache_dir=config.feature_cache,
                                    device=config.device, progress_bar=progress, on_error="raise")
    else:
        features = dataset_features(backbone, _load_for_backbone(config), cache_dir=config.feature_cache,
                                    device=config.device, progress=progress)
    return features, backbone.describe()
