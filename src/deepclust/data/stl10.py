"""STL-10: 96x96 colour images in 10 classes, from the binary release (labelled part only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._archive import read_tar_members
from ._base import ImageDataset, check_split
from ._registry import DATASETS, DatasetSpec, RemoteFile, fetch, register
from .transforms import resize

CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
_SIDE = 96
_IMAGE_BYTES = 3 * _SIDE * _SIDE


def _files(split: str) -> list[str]:
    parts = ("train", "test") if split == "all" else (split,)
    return [f"{p}_{xy}.bin" for p in parts for xy in ("X", "y")]


def locate_stl10(folder: Path, split: str):
    """``("dir", folder)`` or ``("tar", stl10_binary.tar.gz)``, or None."""
    for candidate in (folder / "stl10_binary", folder):
        if all((candidate / f).is_file() for f in _files(split)):
            return "dir", candidate
    if (folder / "stl10_binary.tar.gz").is_file():
        return "tar", folder / "stl10_binary.tar.gz"
    return None


def _parse(x: bytes, y: bytes, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
    if not x or len(x) % _IMAGE_BYTES:
        raise ValueError(f"{x_name} is truncated or corrupt: {len(x)} bytes is not a multiple of one "
                         f"3x96x96 image ({_IMAGE_BYTES} bytes).")
    n = len(x) // _IMAGE_BYTES
    if len(y) != n:
        raise ValueError(f"{x_name} holds {n} images but {y_name} holds {len(y)} labels; one of them is "
                         "damaged.")
    # Each image is stored channel by channel, each channel column-major: (C, W, H) -> (H, W, C).
    images = np.frombuffer(x, dtype=np.uint8).reshape(n, 3, _SIDE, _SIDE).transpose(0, 3, 2, 1)
    labels = np.frombuffer(y, dtype=np.uint8).astype(np.int64) - 1
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{y_name} must hold labels 1..10; found {labels.min() + 1}..{labels.max() + 1}.")
    return images, labels


def load_stl10(data_dir: str | os.PathLike | None = None, *, split: str = "all", download: bool = True,
               size=None, on_error: str = "skip") -> ImageDataset:
    """STL-10 labelled images: 5,000 train + 8,000 test 96x96 RGB, 10 classes (labels 1..10 -> 0..9).

    Reads ``stl10_binary/`` or ``stl10_binary.tar.gz`` (straight from the archive; it is large,
    so reading it takes a while). The 100,000 unlabelled images are not loaded.
    ``split="all"`` is train then test (13,000). ``on_error`` is ignored.
    """
    spec = DATASETS["stl10"]
    check_split(split, spec.splits, spec.name)
    kind, path = fetch(spec, data_dir, split, download)
    files = _files(split)
    if kind == "tar":
        blobs = read_tar_members(path, {*files, "class_names.txt"})
        missing = [f for f in files if f not in blobs]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}; it is not a complete STL-10 archive. "
                             "Delete it and download it again.")
        names_txt = blobs.get("class_names.txt")
        read, source = blobs.__getitem__, (lambda f: f"{path}/{f}")
    else:
        names_txt = (path / "class_names.txt").read_bytes() if (path / "class_names.txt").is_file() else None
        read, source = (lambda f: (path / f).read_bytes()), (lambda f: str(path / f))
    parts = [_parse(read(files[i]), read(files[i + 1]), source(files[i]), source(files[i + 1]))
             for i in range(0, len(files), 2)]
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    labels = np.concatenate([p[1] for p in parts])
    if size is not None:
        images = resize(images, size)
    class_names = list(CLASSES)
    if names_txt is not None:
        lines = [s.strip() for s in names_txt.decode("utf-8", "replace").splitlines() if s.strip()]
        if len(lines) == 10:
            class_names = lines
    return ImageDataset(name="stl10", images=images, labels=labels, class_names=class_names,
                        description=spec.description)


register(DatasetSpec(
    name="stl10",
    loader=load_stl10,
    description="STL-10 labelled images, 13,000 96x96 colour (5,000 train / 8,000 test), 10 classes "
                "(Coates, Lee & Ng 2011); the 100,000 unlabelled images are not loaded.",
    files=("stl10_binary.tar.gz",),
    alternatives=("the extracted folder stl10_binary/ (train_X.bin, train_y.bin, test_X.bin, test_y.bin, "
                  "class_names.txt)",),
    downloads=(RemoteFile("stl10_binary.tar.gz", "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                          "91f7769df0f17e558f3565bffb0c7dfb"),),
    splits=("train", "test", "all"),
    locate=locate_stl10,
    homepage="https://cs.stanford.edu/~acoates/stl10/",
))
