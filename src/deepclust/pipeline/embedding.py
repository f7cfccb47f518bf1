"""The pretrained embedding stage of a run: images -> frozen backbone features (``--backbone NAME``).

A frozen ImageNet (or DINOv2 / CLIP) network turns each image into a feature vector, and a method that
takes vectors (k-means, UMAP + GMM, SCAN) clusters those. Features are cached on disk, keyed by the
image files, the weights and the preprocessing, so a second run on the same images (another method,
another k, ``evaluate``, ``predict``) reads them at once. Image files are read at full resolution by the
extractor; the run's in-memory images are only the thumbnails its report shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..data import ImageDataset
from ..progress import progress_enabled

#: The longest side of the thumbnails kept in memory for the report when a folder's images differ in size.
THUMBNAIL_SIZE = 64


def backbone_features(config: RunConfig, dataset: ImageDataset) -> tuple[np.ndarray, dict]:
    """The (n, D) float32 features of ``dataset`` under ``config.backbone``, and what the backbone is
    (name, weights and their source, licence, preprocessing; ``pretrained: True``)."""
    from ..backbones import get_backbone

    backbone = get_backbone(config.backbone, weights=config.backbone_weights, device=config.device)
    features = dataset_features(backbone, dataset, cache_dir=config.feature_cache, device=config.device,
                                progress=progress_enabled(config.progress))
    description = backbone.describe()
    if config.backbone_weights is not None:
        description["weights_path"] = str(Path(config.backbone_weights).expanduser().resolve())
    # In memory: the estimators write into their inputs' tensors (the cache stays read-only).
    return np.array(features, dtype=np.float32), description


def dataset_features(backbone, dataset: ImageDataset, *, cache_dir: str | None, device: str,
                     progress: bool | None) -> np.ndarray:
    """The cached (n, D) features of ``dataset``: from its image files at full resolution where it has
    them, else from its decoded array. Every image was decoded already, so a bad one is an error."""
    from ..backbones import extract_features

    files = image_files(dataset)
    return extract_features(dataset.images if files is None else files, backbone, cache_dir=cache_dir,
                            device=device, progress_bar=progress, on_error="raise")


def image_files(dataset: ImageDataset) -> list[str] | None:
    """The image files of ``dataset`` when every image is a plain file (read at full resolution), else
    None (array formats, and images inside archives, are extracted from the decoded array)."""
    if dataset.paths is None or not all(Path(p).is_file() for p in dataset.paths):
        return None
    return list(dataset.paths)


def prepared_features(preprocessing, dataset: ImageDataset, *, cache_dir: str | None = None,
                      device: str = "cpu") -> np.ndarray:
    """What a fitted run's model takes for new images (``dataset``, decoded as ``preprocessing`` says):
    the same backbone's features when the run used one (the weights must be the run's), else the
    prepared pixels."""
    described = preprocessing.backbone
    if not described:
        return preprocessing.apply(dataset.images)
    from ..backbones import get_backbone

    backbone = get_backbone(described["backbone"], weights=described.get("weights_path"), device=device)
    if backbone.weights_identity != described.get("weights_identity"):
        raise ValueError(f"The weights of backbone {described['backbone']} here ({backbone.weights_source}) "
                         f"are not those the run used ({described.get('weights')}), so predictions would not "
                         "match its clusters. Install the same weights, or pass the run's weights file.")
    features = dataset_features(backbone, dataset, cache_dir=cache_dir, device=device, progress=False)
    return np.array(features, dtype=np.float32)

