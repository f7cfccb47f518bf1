"""The image preprocessing of a run, saved beside it so new images can be prepared exactly the same way.

A run turns decoded uint8 images (n, h, w, c) into features with
:func:`deepclust.data.transforms.prepare_features`: grey (optional), float scaling, flatten for
methods that take vectors. ``preprocessing.json`` records those choices, the image size and channel
count the model was fitted on, and, for ``normalize="standard"``, the training set's channel
statistics (a new batch must not be standardised with its own). A run on a pretrained backbone records
the backbone instead (``backbone``): new images go through the same network and weights.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ._io import write_json
from .data.transforms import to_float, to_grayscale
from .runs import RunPaths


@dataclass(frozen=True)
class Preprocessing:
    """How images (uint8, n x h x w x c) became the features a fitted model expects."""

    image_size: tuple[int, int]  # (height, width) of the decoded images
    channels: int  # channels of the decoded images (1 or 3), before ``grayscale``
    grayscale: bool
    normalize: str | None  # "unit", "standard" or None
    flatten: bool  # (n, h*w*c) vectors (k-means) rather than images (deep methods)
    mean: tuple[float, ...] | None = None  # per-channel statistics of "standard"
    std: tuple[float, ...] | None = None
    backbone: dict | None = None  # the description of the backbone that made the features, if one did

    @classmethod
    def of_run(cls, images: np.ndarray, *, grayscale: bool, normalize: str | None,
               flatten: bool, backbone: dict | None = None, stats=None) -> Preprocessing:
        """The preprocessing of a run fitted on ``images`` (its decoded training images); ``stats``:
        their channel (mean, std) when already computed (a data cache's, in chunks)."""
        mean = std = None
        if normalize == "standard" and stats is not None:
            mean, std = (tuple(float(v) for v in stat) for stat in stats)
        elif normalize == "standard":
            source = to_grayscale(images) if grayscale else images
            _, m, s = to_float(source, "standard", return_stats=True)
            mean, std = tuple(float(v) for v in m), tuple(float(v) for v in s)
        h, w, c = images.shape[1:]
        return cls((int(h), int(w)), int(c), bool(grayscale), normalize, bool(flatten), mean, std, backbone)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Features of ``images`` (decoded at ``image_size`` with ``channels``), float32."""
        if tuple(images.shape[1:3]) != tuple(self.image_size) or images.shape[-1] != self.channels:
            raise ValueError(f"Images of shape {tuple(images.shape[1:])} do not match the run's "
                             f"{(*self.image_size, self.channels)}; decode them with size="
                             f"{tuple(self.image_size)} and channels={self.channels}.")
        x = to_grayscale(images) if self.grayscale else images
        x = to_float(x, self.normalize, mean=self.mean, std=self.std)
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (a run's ``RunPaths.preprocessing``)."""
        path = Path(path)
        write_json(path, asdict(self))
        return path

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Preprocessing:
        """Read ``preprocessing.json``, checked (a run folder is untrusted input: bad fields and sizes
        over ``run_folder.MAX_IMAGE_SIDE`` raise :class:`~deepclust.run_folder.RunFolderError` naming
        the file); runs written before it existed fall back to ``config.json``."""
        from .run_folder import RunFolderError, check_preprocessing, read_json

        run_dir = Path(run_dir)
        paths = RunPaths(run_dir)
        path = paths.preprocessing
        if os.path.lexists(path):
            d = check_preprocessing(read_json(path), path)
            return cls(tuple(d["image_size"]), int(d["channels"]), bool(d["grayscale"]), d["normalize"],
                       bool(d["flatten"]), _tuple(d.get("mean")), _tuple(d.get("std")), d.get("backbone"))
        config_path = paths.config
        if not config_path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a deepclust run folder: it has no {path.name} "
                                    "and no config.json.")
        saved = read_json(config_path)  # such runs stored their options flat, under "config"
        config, resolved = saved.get("config"), saved.get("resolved")
        if not isinstance(config, dict) or not isinstance(resolved, dict):
            raise RunFolderError(path, "is missing (and config.json is not of the older kind that held it)")
        if config.get("normalize") == "standard":
            raise ValueError(f"The run in {run_dir} standardised its images but predates {path.name}, so the "
                             "training statistics are unknown; re-run it with this version of deepclust.")
        from .methods import METHODS
        from .traits import VECTORS

        shape, method = resolved.get("image_shape"), config.get("method")
        if not (isinstance(shape, list) and len(shape) == 3) or method not in METHODS:
            raise RunFolderError(config_path, "holds no image_shape and method to rebuild the preprocessing")
        h, w, c = shape
        check_preprocessing({"image_size": [h, w], "channels": c, "grayscale": bool(config.get("grayscale")),
                             "normalize": config.get("normalize"), "flatten": False}, config_path)
        return cls((h, w), c, bool(config.get("grayscale")), config.get("normalize"),
                   METHODS[method].input_kind == VECTORS)


def _tuple(value) -> tuple[float, ...] | None:
    return None if value is None else tuple(float(v) for v in value)
