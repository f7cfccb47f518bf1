"""Image data sets: load a named benchmark or a folder of images as an :class:`ImageDataset`.

>>> from deepclust.data import load_dataset
>>> ds = load_dataset("digits")
>>> ds.images.shape, ds.n_classes
((1797, 8, 8, 1), 10)
"""

from __future__ import annotations

import os
from pathlib import Path

from . import cifar10, coil, digits, idx, stl10, usps  # noqa: F401  (each registers its data sets)
from ._base import DatasetNotFoundError, ImageDataset, check_on_error
from ._registry import DATASETS, DatasetSpec, RemoteFile, canonical_name, describe_datasets, resolve_data_dir
from .cache import CacheWriter, cache_dataset, is_cache, load_cache, open_cache, write_cache
from .cifar10 import load_cifar10
from .coil import load_coil20, load_coil100
from .digits import load_digits
from .download import ChecksumError, DownloadError, download_file
from .idx import load_fashion_mnist, load_kmnist, load_mnist
from .image_folder import list_image_folder, load_image_folder, load_reference_images
from .stl10 import load_stl10
from .transforms import check_size, flatten, prepare_features, resize, sobel, to_float, to_grayscale
from .usps import load_usps

# List the data sets from the smallest, always-available one to the largest download.
for _name in ("digits", "mnist", "fashion-mnist", "kmnist", "usps", "coil20", "coil100", "cifar10", "stl10"):
    DATASETS[_name] = DATASETS.pop(_name)
del _name

__all__ = [
    "DATASETS",
    "CacheWriter",
    "ChecksumError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "DownloadError",
    "ImageDataset",
    "RemoteFile",
    "describe_datasets",
    "download_file",
    "flatten",
    "list_image_folder",
    "cache_dataset",
    "is_cache",
    "load_cache",
    "load_cifar10",
    "load_coil20",
    "load_coil100",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_kmnist",
    "load_mnist",
    "load_reference_images",
    "load_stl10",
    "load_usps",
    "open_cache",
    "prepare_features",
    "resize",
    "resolve_data_dir",
    "sobel",
    "to_float",
    "to_grayscale",
    "write_cache",
]


def load_dataset(name_or_path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                 split: str = "all", download: bool = True, size=None,
                 on_error: str = "skip") -> ImageDataset:
    """Load a named data set (see ``DATASETS``) or a folder of images.

    Parameters
    ----------
    name_or_path : str or path
        A registered name ("digits", "mnist", "fashion-mnist", "kmnist", "usps", "coil20",
        "coil100", "cifar10", "stl10"; case, '-' and '_' ignored), the path of an image folder, or that
        of a data cache (:mod:`deepclust.data.cache`: the images stay memory-mapped on disk).
        Names win over paths: write "./mnist" to load a folder called mnist.
    data_dir : path, optional
        Folder holding the files, or a parent with a ``<name>/`` sub-folder. Default:
        ``$DEEPCLUST_DATA/<name>``, else ``~/.cache/deepclust/<name>``. Ignored for image folders.
    split : {"all", "train", "test"}, default="all"
        Official split; "all" is train then test. Data sets without one accept only "all".
    download : bool, default=True
        Fetch missing files from their public source. False never touches the network.
    size : int or (height, width), optional
        Resize every image (bilinear, antialiased). Image folders and COIL resize while decoding.
    on_error : {"skip", "raise"}, default="skip"
        For formats made of image files (image folders, COIL): leave unreadable files out with a
        warning, or raise. Array formats always raise on a damaged file.

    Raises
    ------
    ValueError
        Unknown name that is not an existing path; bad ``split``; damaged files.
    DatasetNotFoundError
        Files missing and not downloadable; the message says which files go in which folder.
    """
    check_on_error(on_error)
    check_size(size)
    key = canonical_name(str(name_or_path))
    if key is not None:
        return DATASETS[key].loader(data_dir=data_dir, split=split, download=download, size=size,
                                    on_error=on_error)
    path = Path(name_or_path).expanduser()
    if is_cache(path):
        return load_cache(path, split=split, size=size)
    if path.is_dir():
        return load_image_folder(path, split=split, size=size, on_error=on_error)
    if path.exists():
        raise ValueError(f"{path} is a file; pass a folder of images or a data set name "
                         f"({', '.join(DATASETS)}). For a data set file such as usps.h5, pass the name and "
                         f"data_dir={str(path.parent)!r}.")
    raise ValueError(f"Unknown data set {str(name_or_path)!r}: not a known name and not an existing folder. "
                     f"Known data sets: {', '.join(DATASETS)}.")
