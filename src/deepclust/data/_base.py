"""The in-memory image data set every loader returns, and the error raised when its files are missing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "test", "all")


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are not on disk (and could not be downloaded).

    The message says which files to put in which folder and where to download them.
    """

    def __init__(self, message: str, *, name: str | None = None, folders: Sequence[str] = (),
                 files: Sequence[str] = ()):
        super().__init__(message)
        self.name = name
        self.folders = list(folders)
        self.files = list(files)


@dataclass(repr=False, eq=False)  # eq would compare arrays element-wise; identity is what we want
class ImageDataset:
    """Images held in memory as one uint8 array, with optional labels.

    Items are read by index (``dataset[i] -> (image, label)``), so later stages can
    stream a data set in any order without copying it.

    Parameters
    ----------
    name : str
        Short name, e.g. ``"mnist"`` or the folder name for an image folder.
    images : ndarray of shape (n_samples, height, width, channels), dtype uint8
        ``channels`` is 1 (grey) or 3 (RGB).
    labels : ndarray of shape (n_samples,), dtype int64, or None
        Ground-truth classes 0..n_classes-1; None when the data set has no labels.
    class_names : list of str
        ``class_names[k]`` names class ``k``.
    description : str
        One line saying what the data is and where it came from.
    paths : list of str or None
        Source file of each image (image folders, COIL); None for array formats.
        Members of an archive are written ``archive.zip/member``.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    description: str = ""
    paths: list[str] | None = None

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"ImageDataset.images must have shape (n_samples, height, width, channels) with 1 or 3 "
                f"channels; got shape {images.shape}."
            )
        if images.dtype != np.uint8:
            raise ValueError(
                f"ImageDataset.images must be uint8 (0..255); got dtype {images.dtype}. Convert with "
                "np.clip(np.rint(x * 255), 0, 255).astype(np.uint8) for images in [0, 1]."
            )
        self.images = images
        n = images.shape[0]
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (n,):
                raise ValueError(f"ImageDataset.labels must have shape ({n},) to match the images; "
                                 f"got shape {labels.shape}.")
            self.labels = labels.astype(np.int64, copy=False)
        if self.paths is not None:
            self.paths = [str(p) for p in self.paths]
            if len(self.paths) != n:
                raise ValueError(f"ImageDataset.paths must have one entry per image ({n}); "
                                 f"got {len(self.paths)}.")
        self.class_names = [str(c) for c in self.class_names]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """Return ``(image, label)``: image (height, width, channels) uint8; label -1 when unlabelled."""
        image = self.images[index]
        if image.ndim != 3:
            raise TypeError(f"ImageDataset index must be a single integer; got {index!r}. "
                            "Use dataset.images[...] to slice.")
        label = -1 if self.labels is None else int(self.labels[index])
        return image, label

    @property
    def n_classes(self) -> int:
        """Number of classes: ``len(class_names)``, or ``max(labels) + 1`` if no names; 0 if unlabelled."""
        if self.class_names:
            return len(self.class_names)
        if self.labels is not None and self.labels.size:
            return int(self.labels.max()) + 1
        return 0

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one image: (height, width, channels)."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        labels = "unlabelled" if self.labels is None else f"{self.n_classes} classes"
        return (f"ImageDataset(name={self.name!r}, n_samples={len(self)}, image_shape={self.image_shape}, "
                f"{labels})")


def check_split(split: str, allowed: Sequence[str], name: str) -> str:
    """Validate ``split`` against the splits a data set has; "all" is always allowed."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of 'train', 'test' or 'all'; got {split!r}.")
    if split not in allowed:
        raise ValueError(
            f"Data set {name!r} has no official train/test split: 'all' is the only split. Use "
            "split='all' and make your own split if you need one (e.g. with "
            "sklearn.model_selection.train_test_split)."
        )
    return split


def check_on_error(on_error: str) -> str:
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise'; got {on_error!r}.")
    return on_error


def concatenate(parts: Sequence[ImageDataset], *, name: str, description: str) -> ImageDataset:
    """Join data sets with the same image shape and class names (train then test) into one."""
    images = np.concatenate([p.images for p in parts], axis=0)
    labels = None
    if all(p.labels is not None for p in parts):
        labels = np.concatenate([p.labels for p in parts], axis=0)
    paths = None
    if all(p.paths is not None for p in parts):
        paths = [path for p in parts for path in p.paths]
    return ImageDataset(name=name, images=images, labels=labels, class_names=list(parts[0].class_names),
                        description=description, paths=paths)
