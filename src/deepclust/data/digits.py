"""scikit-learn's bundled 8x8 digits: the data set that always works offline."""

from __future__ import annotations

import os

import numpy as np

from ._base import ImageDataset, check_split
from ._registry import DatasetSpec, register
from .transforms import resize


def load_digits(data_dir: str | os.PathLike | None = None, *, split: str = "all", download: bool = True,
                size=None, on_error: str = "skip") -> ImageDataset:
    """Load the 1,797 UCI 8x8 handwritten digits shipped with scikit-learn.

    Pixel values 0..16 are mapped to 0..255 by ``round(x * 255 / 16)``. There is no official
    split, so ``split`` must be "all". ``data_dir``, ``download`` and ``on_error`` are accepted
    for a uniform signature and ignored (nothing is read from disk or downloaded).
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    check_split(split, SPEC.splits, SPEC.name)
    bunch = _sk_load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., np.newaxis]
    if size is not None:
        images = resize(images, size)
    return ImageDataset(
        name="digits",
        images=images,
        labels=bunch.target.astype(np.int64),
        class_names=[str(d) for d in range(10)],
        description=SPEC.description,
    )


SPEC = register(DatasetSpec(
    name="digits",
    loader=load_digits,
    description="UCI optical handwritten digits, 1,797 8x8 grey images, 10 classes "
                "(bundled with scikit-learn).",
    splits=("all",),
    homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
))
