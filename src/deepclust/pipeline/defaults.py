"""The pipeline a run gets when no method is named: chosen from the data, and recorded with the reason.

- A folder of colour photographs: the features of a frozen pretrained backbone
  (``config.PHOTO_BACKBONE``, which works offline) clustered by ``config.PHOTO_METHOD``, the best pipeline
  measured on such features (benchmarks/RESULTS.md). Pixels and autoencoders are near chance on photos.
- Backbone features asked for with ``--backbone``: the same ``PHOTO_METHOD``.
- Fewer than :data:`SMALL_SET_IMAGES` grey images of at most :data:`SMALL_SET_SIDE` x
  :data:`SMALL_SET_SIDE` pixels (the 1,797 bundled digits), once the data are loaded:
  :data:`SMALL_SET_METHOD` on the pixels, which beat N2D there in less time (benchmarks/RESULTS.md,
  "The digits' default: UMAP + spectral clustering"), unless an option of N2D's own (autoencoder,
  self-labelling) was given.
- Fewer than :data:`LINKAGE_SET_IMAGES` grey images larger than 32 x 32 pixels (objects seen from many
  angles, COIL-20): :data:`LINKAGE_METHOD` on the pixels, resized to 64 x 64 by its recipe: ACC 0.997
  on COIL-20 against N2D's 0.83 (benchmarks/RESULTS.md, "COIL-20: graph degree linkage").
- Anything else (grey digits, small images): :data:`deepclust.config.DEFAULT_METHOD`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import distributed as D
from ..config import DEFAULT_METHOD, PHOTO_BACKBONE, PHOTO_METHOD, RunConfig
from ..methods import method_class
from ..recipes import SMALL_SIDE
from .folder import folder_layout

#: Grey sets of fewer than this many images of at most SMALL_SET_SIDE pixels a side get SMALL_SET_METHOD
#: when no method is named: on the 1,797 8 x 8 digits N2D's autoencoder adds time and no accuracy. Larger
#: images keep N2D: on USPS's 2,007 test images (16 x 16) UMAP + spectral clustering of the pixels gave
#: 0.61 (UMAP + GMM 0.69; N2D 0.96 on all 9,298 USPS images); from 5,000 images N2D's recipe (with
#: self-labelling) is measured best (MNIST, USPS).
SMALL_SET_IMAGES = 5000
SMALL_SET_SIDE = 8
SMALL_SET_METHOD = "umap-spectral"
#: Grey sets of fewer than this many images larger than 32 x 32 get LINKAGE_METHOD when no method is
#: named. Its graph needs every pair of distances (exact, float64): 19,999 MNIST images at 64 x 64 took
#: 3.5 min on 2 busy cores (benchmarks/RESULTS.md), less than N2D's autoencoder; larger sets keep N2D.
LINKAGE_SET_IMAGES = 20_000
LINKAGE_METHOD = "graph-linkage"

_SAMPLE = 8  # image files looked at to tell colour from grey


def choose_pipeline(config: RunConfig) -> tuple[RunConfig, str | None]:
    """``config`` with its method (and, for colour photos, its backbone) filled in when none was named,
    and one line saying what was chosen and why (None when the user chose)."""
    if config.method is not None:
        return config, None
    if config.backbone:
        return (dataclasses.replace(config, method=PHOTO_METHOD),
                f"method {PHOTO_METHOD}: the best measured on pretrained features (--method to choose)")
    if not config.grayscale and _colour_photo_folder(config.dataset):
        return (dataclasses.replace(config, method=PHOTO_METHOD, backbone=PHOTO_BACKBONE),
                f"colour photos: {PHOTO_BACKBONE} features clustered by {PHOTO_METHOD} (pass --method, "
                "and --backbone, to choose)")
    return dataclasses.replace(config, method=DEFAULT_METHOD), None


def method_for_data(config: RunConfig, image_shape: tuple[int, ...],
                    n_samples: int) -> tuple[RunConfig, str | None]:
    """``config`` (whose method was chosen by default) with the method measured best for ``n_samples``
    grey images of ``image_shape`` (H, W, C): :data:`SMALL_SET_METHOD` for a small set of tiny ones,
    :data:`LINKAGE_METHOD` for a set of larger ones; and why. Unchanged (and None) otherwise, or when an
    option only the default method reads was given."""
    grey = len(image_shape) < 3 or image_shape[2] == 1
    side = max(image_shape[:2])
    if config.method != DEFAULT_METHOD or not grey or D.is_distributed():  # under torchrun N2D trains
        return config, None                                                 # across the processes
    if side <= SMALL_SET_SIDE and n_samples < SMALL_SET_IMAGES:
        method, why = SMALL_SET_METHOD, small_set_note(n_samples)
    elif side > SMALL_SIDE and n_samples < LINKAGE_SET_IMAGES:
        method, why = LINKAGE_METHOD, linkage_note(n_samples)
    else:
        return config, None
    own = set(method_class(DEFAULT_METHOD).option_groups) - set(method_class(method).option_groups)
    defaults = RunConfig()
    if any(value != getattr(defaults, name) for name, value in config.part(*own).items()):
        return config, None  # --pretrain, -a, --self-label-rounds ...: the user wants the autoencoder
    return dataclasses.replace(config, method=method), why


def small_set_note(n_samples: int) -> str:
    """Why a run of ``n_samples`` tiny grey images got :data:`SMALL_SET_METHOD` (printed, and kept in
    ``config.json``)."""
    return (f"{n_samples:,} grey images of at most {SMALL_SET_SIDE} x {SMALL_SET_SIDE} pixels: "
            f"{SMALL_SET_METHOD} on the pixels, the best measured on such sets (--method to choose)")


def linkage_note(n_samples: int) -> str:
    """Why a run of ``n_samples`` grey images larger than 32 x 32 got :data:`LINKAGE_METHOD`."""
    return (f"{n_samples:,} grey images larger than {SMALL_SIDE} x {SMALL_SIDE} pixels: {LINKAGE_METHOD} on "
            "the pixels, the best measured on such sets (--method to choose)")


def _colour_photo_folder(dataset: str) -> bool:
    """Whether ``dataset`` is an image folder whose first images are in colour (read from their headers)."""
    layout = folder_layout(dataset)
    if layout is None:
        return False
    from PIL import Image

    from ..data.image_folder import list_image_folder

    try:
        files, _, _ = list_image_folder(layout.path, split="train" if layout.has_train else "all")
    except (OSError, ValueError):
        return False  # the data stage says what is wrong with the folder
    for path in files[:_SAMPLE]:
        try:
            with Image.open(Path(path)) as image:
                if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
                    continue
                image.draft("RGB", (64, 64))  # JPEGs decode at a fraction of their size
                rgb = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.int16)
        except OSError:
            continue
        # grey pictures stored as RGB have R = G = B
        if np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean() > 4:
            return True
    return False
