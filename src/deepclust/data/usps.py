"""USPS handwritten digits (16x16 grey), from LIBSVM's ``usps.bz2``/``usps.t.bz2`` (the download, whose
md5 and sha256 are published), the common ``usps.h5`` or ESL's ``zip.train``/``zip.test``."""

from __future__ import annotations

import bz2
import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ._base import ImageDataset, check_split
from ._registry import DATASETS, DatasetSpec, RemoteFile, fetch, register
from .transforms import resize

_N_PIXELS = 256
_LIBSVM = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass"


def _esl_candidates(part: str) -> list[str]:
    return [f"zip.{part}.gz", f"zip.{part}"]


def _libsvm_candidates(part: str) -> list[str]:
    stem = "usps" if part == "train" else "usps.t"
    return [f"{stem}.bz2", stem]


def locate_usps(folder: Path, split: str) -> tuple[str, dict[str, Path]] | None:
    """``("h5", {"h5": path})``, or ``("libsvm" | "esl", {"train": path, "test": path})``, or None."""
    h5 = folder / "usps.h5"
    if h5.is_file():
        return "h5", {"h5": h5}
    parts = ("train", "test") if split == "all" else (split,)
    for kind, candidates in (("libsvm", _libsvm_candidates), ("esl", _esl_candidates)):
        found = {part: next((folder / n for n in candidates(part) if (folder / n).is_file()), None)
                 for part in parts}
        if all(path is not None for path in found.values()):
            return kind, found
    return None


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


def _read_libsvm(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """LIBSVM's text format, optionally bzip2ed: one digit per line, ``label index:value ...``.

    Labels 1..10 are the digits 0..9 (as torchvision reads the same files), values lie in [-1, 1] like
    ESL's, and an index left out has the value 0 (the format is sparse).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:3] == b"BZh":
            raw = bz2.decompress(raw)
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable LIBSVM usps file ({exc}). Delete it and download it "
                         "again.") from exc
    lines = [line for line in raw.splitlines() if line.strip()]
    pixels = np.zeros((len(lines), _N_PIXELS), dtype=np.float64)
    labels = np.zeros(len(lines), dtype=np.int64)
    for row, line in enumerate(lines):
        label, *pairs = line.split()
        try:
            labels[row] = int(label) - 1
            values = np.array(b" ".join(pairs).replace(b":", b" ").split(), dtype=np.float64).reshape(-1, 2)
        except ValueError:
            raise ValueError(f"{path}, line {row + 1}: not 'label index:value ...' pairs; the file is "
                             "damaged. Delete it and download it again.") from None
        index = values[:, 0].astype(np.int64)
        if not 0 <= labels[row] <= 9 or (index.size and (index.min() < 1 or index.max() > _N_PIXELS)) \
                or not np.all(np.isfinite(values[:, 1])):
            raise ValueError(f"{path}, line {row + 1}: a label outside 1..10, a pixel index outside "
                             f"1..{_N_PIXELS} or a value that is not finite; the file is damaged. Delete it "
                             "and download it again.")
        pixels[row, index - 1] = values[:, 1]
    if not lines:
        raise ValueError(f"{path} holds no digits; delete it and download it again.")
    return _to_uint8((np.clip(pixels, -1.0, 1.0) + 1.0) / 2.0), labels


_READERS = {"esl": _read_esl, "libsvm": _read_libsvm}


def load_usps(data_dir: str | os.PathLike | None = None, *, split: str = "all", download: bool = True,
              size=None, on_error: str = "skip") -> ImageDataset:
    """USPS digits: 7,291 train + 2,007 test 16x16 grey images, 10 classes.

    Reads ``usps.h5`` (values in [0, 1]), LIBSVM's ``usps``/``usps.t`` (optionally .bz2, the
    download) or ESL's ``zip.train``/``zip.test`` (optionally .gz); those two hold values in [-1, 1],
    mapped by (x + 1) / 2. Pixels become ``round(x * 255)``.
    ``split="all"`` is train then test (9,298). ``on_error`` is ignored.
    """
    spec = DATASETS["usps"]
    check_split(split, spec.splits, spec.name)
    kind, files = fetch(spec, data_dir, split, download)
    parts = ("train", "test") if split == "all" else (split,)
    images, labels = [], []
    for part in parts:
        x, y = _read_h5(files["h5"], part) if kind == "h5" else _READERS[kind](files[part])
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
                "(Hull 1994).",
    files=("usps.bz2", "usps.t.bz2"),
    alternatives=("usps.h5 (HDF5 with train/data, train/target, test/data, test/target)",
                  "usps and usps.t uncompressed",
                  "ESL's zip.train and zip.test, gzipped or not"),
    downloads=(
        # LIBSVM's copies, with the md5 and sha256 torchvision publishes for them (pytorch/vision,
        # torchvision/datasets/usps.py and torchvision/prototype/datasets/_builtin/usps.py). ESL's
        # zip.train.gz / zip.test.gz have no published checksum, so they are no longer the download.
        RemoteFile("usps.bz2", f"{_LIBSVM}/usps.bz2", "ec16c51db3855ca6c91edd34d0e9b197", ("train",),
                   sha256="3771e9dd6ba685185f89867b6e249233dd74652389f263963b3b741e994b034f"),
        RemoteFile("usps.t.bz2", f"{_LIBSVM}/usps.t.bz2", "8ea070ee2aca1ac39742fdd1ef5ed118", ("test",),
                   sha256="a9c0164e797d60142a50604917f0baa604f326e9a689698763793fa5d12ffc4e"),
    ),
    splits=("train", "test", "all"),
    locate=locate_usps,
    homepage="https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps",
))
