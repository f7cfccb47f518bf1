"""USPS handwritten digits (16x16 grey), from the common ``usps.h5`` or ESL's ``zip.train``/``zip.test``."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ._base import ImageDataset, check_split
from ._registry import DATASETS, DatasetSpec, RemoteFile, fetch, register
from .transforms import resize

_N_PIXELS = 256


def _esl_candidates(part: str) -> list[str]:
    return [f"zip.{part}.gz", f"zip.{part}"]


def locate_usps(folder: Path, split: str) -> tuple[str, dict[str, Path]] | None:
    """``("h5", {"h5": path})`` or ``("esl", {"train": path, "test": path})``, or None."""
    h5 = folder / "usps.h5"
    if h5.is_file():
        return "h5", {"h5": h5}
    parts = ("train", "test") if split == "all" else (split,)
    found = {}
    for part in parts:
        path = next((folder / n for n in _esl_candidates(part) if (folder / n).is_file()), None)
        if path is None:
            return None
        found[part] = path
    return "esl", found


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    """round(x * 255), halves rounded up.

    USPS values lie on a 0.0005 grid, so x * 255 often ends in exactly .5; the small tolerance
    makes usps.h5 (float32) and the ESL text (3 decimals) give the same pixel for the same digit.
    """
    return np.clip(np.floor(np.asarray(unit, dtype=np.float64) * 255.0 + 0.5 + 1e-6), 0, 255).astype(np.uint8)


def _read_h5(path: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f"{part}/data" not in f or f"{part}/target" not in f:
                raise ValueError(f"{path} has no '{part}/data' and '{part}/target' datasets; it holds "
                                 f"{sorted(f.keys())}. Expected the usual usps.h5 layout "
                                 "(train/data, train/target, test/data, test/target).")
            data = np.asarray(f[f"{part}/data"], dtype=np.float64)
            target = np.asarray(f[f"{part}/target"])
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file ({exc}). Delete it and download it "
                         "again.") from exc
    data = data.reshape(len(data), -1)
    if data.shape[1] != _N_PIXELS or len(target) != len(data):
        raise ValueError(f"{path}: '{part}/data' must have shape (n, 256) with n labels in '{part}/target'; "
                         f"got {data.shape} and {len(target)} labels.")
    # The common file is in [0, 1]; some copies keep ESL's [-1, 1] or use 0..255.
    if data.size and data.min() < -1e-6:
        data = (data + 1.0) / 2.0
    elif data.size and data.max() > 1.0 + 1e-6:
        data = data / 255.0
    return _to_uint8(data), target.astype(np.int64).reshape(-1)


def _read_esl(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """ESL text format: one digit per line, its label then 256 values in [-1, 1]."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        values = np.array(raw.split(), dtype=np.float64)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise ValueError(f"{path} is not a readable ESL zip.train/zip.test file ({exc}). Delete it and "
                         "download it again.") from exc
    if values.size == 0 or values.size % (_N_PIXELS + 1):
        raise ValueError(f"{path} is truncated or corrupt: it holds {values.size} numbers, not a multiple "
                         f"of 257 (a label and 256 pixels per line).")
    values = values.reshape(-1, _N_PIXELS + 1)
    return _to_uint8((values[:, 1:] + 1.0) / 2.0), values[:, 0].astype(np.int64)


def load_usps(data_dir: str | os.PathLike | None = None, *, split: str = "all", download: bool = True,
              size=None, on_error: str = "skip") -> ImageDataset:
    """USPS digits: 7,291 train + 2,007 test 16x16 grey images, 10 classes.

    Reads ``usps.h5`` (values in [0, 1]) or ESL's ``zip.train``/``zip.test`` (optionally .gz,
    values in [-1, 1], mapped by (x + 1) / 2); pixels become ``round(x * 255)``.
    ``split="all"`` is train then test (9,298). ``on_error`` is ignored.
    """
    spec = DATASETS["usps"]
    check_split(split, spec.splits, spec.name)
    kind, files = fetch(spec, data_dir, split, download)
    parts = ("train", "test") if split == "all" else (split,)
    images, labels = [], []
    for part in parts:
        x, y = _read_h5(files["h5"], part) if kind == "h5" else _read_esl(files[part])
        images.append(x)
        labels.append(y)
    x = np.concatenate(images).reshape(-1, 16, 16, 1)
    if size is not None:
        x = resize(x, size)
    return ImageDataset(name="usps", images=x, labels=np.concatenate(labels),
                        class_names=[str(d) for d in range(10)], description=spec.description)


register(DatasetSpec(
    name="usps",
    loader=load_usps,
    description="USPS handwritten digits, 9,298 16x16 grey images (7,291 train / 2,007 test), 10 classes "
                "(Hull 1994; as distributed with Hastie et al., ESL).",
    files=("zip.train.gz", "zip.test.gz"),
    alternatives=("usps.h5 (HDF5 with train/data, train/target, test/data, test/target)",
                  "zip.train and zip.test uncompressed"),
    downloads=(
        # No checksum of these two files is published (and no copy was at hand to take one from), so
        # they are checked by reading them whole: gzip's CRC-32 and length trailer rejects a cut-off or
        # damaged file, and the ESL reader then checks 257 numbers per line.
        RemoteFile("zip.train.gz", "https://hastie.su.domains/ElemStatLearn/datasets/zip.train.gz", None,
                   ("train",)),
        RemoteFile("zip.test.gz", "https://hastie.su.domains/ElemStatLearn/datasets/zip.test.gz", None,
                   ("test",)),
    ),
    splits=("train", "test", "all"),
    locate=locate_usps,
    homepage="https://hastie.su.domains/ElemStatLearn/data.html",
))
