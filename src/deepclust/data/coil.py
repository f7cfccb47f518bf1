"""COIL-20 and COIL-100: 72 views of each object on a turntable, from a folder of PNGs or the official zip."""

from __future__ import annotations

import io
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ._base import ImageDataset, check_on_error, check_split
from ._images import decode_images
from ._registry import DATASETS, DatasetSpec, RemoteFile, fetch, register
from .transforms import check_size

_NAME = re.compile(r"^obj(\d+)__(\d+)\.png$", re.IGNORECASE)

# name -> (zip file, sub-folders it may have been extracted to, number of objects)
_LAYOUT = {
    "coil20": ("coil-20-proc.zip", ("coil-20-proc", "coil-20"), 20),
    "coil100": ("coil-100.zip", ("coil-100",), 100),
}
_VIEWS = 72


def _matches(names):
    """(object, pose, name) for every COIL file name in ``names``, sorted by object then pose."""
    out = []
    for name in names:
        if "__MACOSX" in name:
            continue
        m = _NAME.match(name.rsplit("/", 1)[-1])
        if m:
            out.append((int(m.group(1)), int(m.group(2)), name))
    return sorted(out)


def _locate(name: str, folder: Path):
    zip_name, subfolders, _ = _LAYOUT[name]
    for candidate in (folder, *(folder / s for s in subfolders)):
        if candidate.is_dir():
            entries = _matches(p.name for p in candidate.iterdir() if p.is_file())
            if entries:
                return "dir", candidate, entries
    archive = folder / zip_name
    if archive.is_file():
        return "zip", archive, None
    return None


def locate_coil20(folder: Path, split: str = "all"):
    return _locate("coil20", folder)


def locate_coil100(folder: Path, split: str = "all"):
    return _locate("coil100", folder)


def _load_coil(name: str, data_dir, split: str, download: bool, size, on_error: str) -> ImageDataset:
    spec = DATASETS[name]
    check_split(split, spec.splits, name)
    check_on_error(on_error)
    size = check_size(size)
    kind, path, entries = fetch(spec, data_dir, split, download)
    _, _, n_objects = _LAYOUT[name]
    if kind == "dir":
        sources = [(str(path / n), (lambda p=path / n: str(p))) for _, _, n in entries]
        images, kept = decode_images(sources, size=size, on_error=on_error, where=str(path),
                                     desc=f"Decoding {name}")
    else:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"{path} is not a readable zip file ({exc}). Delete it and download it "
                             "again.") from exc
        with archive:
            entries = _matches(archive.namelist())
            sources = [(f"{path}/{n}", (lambda n=n: io.BytesIO(archive.read(n)))) for _, _, n in entries]
            images, kept = decode_images(sources, size=size, on_error=on_error, where=str(path),
                                         desc=f"Decoding {name}")
    if images is None:
        raise ValueError(f"No readable COIL image (obj<i>__<pose>.png) found in {path}.")
    entries = [entries[i] for i in kept]
    expected = n_objects * _VIEWS
    if len(entries) != expected:
        warnings.warn(f"{name}: found {len(entries)} images in {path}, expected {expected} "
                      f"({n_objects} objects x {_VIEWS} views). Check that the folder is complete.",
                      UserWarning, stacklevel=3)
    labels = np.array([obj - 1 for obj, _, _ in entries], dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_objects):
        raise ValueError(f"{path} holds object numbers outside 1..{n_objects} "
                         f"(found obj{labels.min() + 1}..obj{labels.max() + 1}); is it the right data set?")
    prefix = f"{path}/" if kind == "zip" else f"{path}{os.sep}"
    return ImageDataset(
        name=name,
        images=images,
        labels=labels,
        class_names=[f"obj{i}" for i in range(1, n_objects + 1)],
        description=spec.description,
        paths=[prefix + n for _, _, n in entries],
    )


def load_coil20(data_dir: str | os.PathLike | None = None, *, split: str = "all", download: bool = True,
                size=None, on_error: str = "skip") -> ImageDataset:
    """COIL-20 (processed): 1,440 128x128 grey images, 20 objects x 72 poses; label = object number - 1.

    Reads a folder of ``obj<i>__<pose>.png`` or ``coil-20-proc.zip`` without extracting it.
    Images are sorted by (object, pose). Only ``split="all"`` exists.
    """
    return _load_coil("coil20", data_dir, split, download, size, on_error)


def load_coil100(data_dir: str | os.PathLike | None = None, *, split: str = "all", download: bool = True,
                 size=None, on_error: str = "skip") -> ImageDataset:
    """COIL-100: 7,200 128x128 colour images, 100 objects x 72 angles; label = object number - 1.

    Reads a folder of ``obj<i>__<angle>.png`` or ``coil-100.zip`` without extracting it.
    Use ``size`` to shrink on load (the full set is 350 MB as uint8). Only ``split="all"`` exists.
    """
    return _load_coil("coil100", data_dir, split, download, size, on_error)


_CAVE = "https://www.cs.columbia.edu/CAVE/databases/SLAM_coil-20_coil-100"

register(DatasetSpec(
    name="coil20",
    loader=load_coil20,
    description="COIL-20 processed, 1,440 128x128 grey images of 20 objects x 72 poses "
                "(Nene, Nayar & Murase 1996).",
    files=("coil-20-proc.zip",),
    alternatives=("the 1,440 files obj<i>__<pose>.png directly in the folder or in coil-20-proc/",),
    # Columbia publishes no checksum of the zip, none was found published elsewhere (torchvision and
    # TensorFlow Datasets have no COIL-20), and the shared benchmark copy holds the extracted PNGs, not
    # the zip, so no checksum can be known offline. The zip is checked instead by reading every member
    # against its CRC-32 (a cut-off zip also loses its central directory and fails to open), and the
    # loader warns unless it holds the 1,440 images.
    downloads=(RemoteFile("coil-20-proc.zip", f"{_CAVE}/coil-20/coil-20-proc.zip"),),
    splits=("all",),
    locate=locate_coil20,
    homepage="https://www.cs.columbia.edu/CAVE/software/softlib/coil-20.php",
))

register(DatasetSpec(
    name="coil100",
    loader=load_coil100,
    description="COIL-100, 7,200 128x128 colour images of 100 objects x 72 angles "
                "(Nene, Nayar & Murase 1996).",
    files=("coil-100.zip",),
    alternatives=("the 7,200 files obj<i>__<angle>.png directly in the folder or in coil-100/",),
    # The sha256 TensorFlow Datasets publishes for this URL (tensorflow/datasets,
    # tensorflow_datasets/url_checksums/coil100.txt: 130,688,843 bytes); Columbia publishes none.
    downloads=(RemoteFile("coil-100.zip", f"{_CAVE}/coil-100/coil-100.zip",
                          sha256="fcb4b8b01c0778f416d8d7a09f45082c4f7075cc74743dcddd5c44307bd4afe7"),),
    splits=("all",),
    locate=locate_coil100,
    homepage="https://www.cs.columbia.edu/CAVE/software/softlib/coil-100.php",
))
