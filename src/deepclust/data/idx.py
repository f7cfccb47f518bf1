"""MNIST, Fashion-MNIST and KMNIST: 28x28 grey images stored in the IDX format (often gzipped)."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ._base import ImageDataset, check_split, concatenate
from ._registry import DATASETS, DatasetSpec, RemoteFile, fetch, register
from .transforms import resize

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# Role -> file stem of the usual download ("t10k" is the test set).
_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array; check its magic number and size.

    Raises a ValueError naming the file when it is not IDX, is truncated, or is a broken gzip.
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path} is a corrupt or truncated gzip file ({exc}). Delete it and "
                             "download it again.") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(f"{path} is not an IDX file: its magic number is {raw[:4].hex() or 'missing'}, "
                         "expected 0000 followed by a type code and the number of dimensions (e.g. "
                         "00000803 for images, 00000801 for labels).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: it ends inside its IDX header.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path} is truncated or corrupt: its header announces shape {tuple(dims)} "
                         f"({expected} bytes of data) but it holds {len(raw) - header}. Delete it and "
                         "download it again.")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _candidates(stem: str) -> list[str]:
    dotted = stem.replace("-idx", ".idx")  # "train-images.idx3-ubyte", as some mirrors name them
    return [stem + ".gz", stem, dotted + ".gz", dotted]


def locate_idx(folder: Path, split: str) -> dict[str, Path] | None:
    """Paths of the IDX files ``split`` needs in ``folder`` (gz, raw or dotted names), or None."""
    parts = ("train", "test") if split == "all" else (split,)
    found = {}
    for part in parts:
        for kind in ("images", "labels"):
            role = f"{part}_{kind}"
            path = next((folder / n for n in _candidates(_STEMS[role]) if (folder / n).is_file()), None)
            if path is None:
                return None
            found[role] = path
    return found


def _read_part(files: dict[str, Path], part: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(files[f"{part}_images"])
    labels = read_idx(files[f"{part}_labels"])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{files[f'{part}_images']} must hold uint8 images of 3 dimensions (IDX magic "
                         f"00000803); it holds {images.dtype} data of shape {images.shape}.")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{files[f'{part}_labels']} must hold uint8 labels of 1 dimension (IDX magic "
                         f"00000801); it holds {labels.dtype} data of shape {labels.shape}.")
    if len(images) != len(labels):
        raise ValueError(f"{files[f'{part}_images']} holds {len(images)} images but "
                         f"{files[f'{part}_labels']} holds {len(labels)} labels; one of them is from "
                         "another data set or damaged.")
    return images[..., np.newaxis], labels.astype(np.int64)


def _load_idx(name: str, class_names: list[str], data_dir, split: str, download: bool,
              size) -> ImageDataset:
    spec = DATASETS[name]
    check_split(split, spec.splits, name)
    files = fetch(spec, data_dir, split, download)
    parts = ("train", "test") if split == "all" else (split,)
    datasets = []
    for part in parts:
        images, labels = _read_part(files, part)
        if size is not None:
            images = resize(images, size)
        datasets.append(ImageDataset(name=name, images=images, labels=labels, class_names=class_names,
                                     description=spec.description))
    if len(datasets) == 1:
        return datasets[0]
    return concatenate(datasets, name=name, description=spec.description)


def load_mnist(data_dir: str | os.PathLike | None = None, *, split: str = "all", download: bool = True,
               size=None, on_error: str = "skip") -> ImageDataset:
    """MNIST handwritten digits: 60,000 train + 10,000 test 28x28 grey images.

    ``split="all"`` is train then test (70,000). ``on_error`` is ignored (a damaged file always
    raises a ValueError naming it).
    """
    return _load_idx("mnist", [str(d) for d in range(10)], data_dir, split, download, size)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, *, split: str = "all",
                       download: bool = True, size=None, on_error: str = "skip") -> ImageDataset:
    """Fashion-MNIST (Zalando): 60,000 + 10,000 28x28 grey images of clothes, 10 classes."""
    return _load_idx("fashion-mnist", FASHION_CLASSES, data_dir, split, download, size)


def load_kmnist(data_dir: str | os.PathLike | None = None, *, split: str = "all", download: bool = True,
                size=None, on_error: str = "skip") -> ImageDataset:
    """Kuzushiji-MNIST: 60,000 + 10,000 28x28 grey images of cursive Japanese characters, 10 classes."""
    return _load_idx("kmnist", KMNIST_CLASSES, data_dir, split, download, size)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
KMNIST_CLASSES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]

_SPLIT_OF = {"train_images": ("train",), "train_labels": ("train",), "test_images": ("test",),
             "test_labels": ("test",)}


def _remote_files(base_url: str, md5s: dict[str, str], gunzip_md5s: dict[str, str] | None = None
                  ) -> tuple[RemoteFile, ...]:
    return tuple(
        RemoteFile(f"{stem}.gz", f"{base_url}{stem}.gz", md5s[role], _SPLIT_OF[role],
                   gunzip_md5=(gunzip_md5s or {}).get(role))
        for role, stem in _STEMS.items()
    )


_FILES = tuple(f"{stem}.gz" for stem in _STEMS.values())
_ALTERNATIVES = ("the same files uncompressed (without .gz)",
                 "the dotted names train-images.idx3-ubyte, train-labels.idx1-ubyte, t10k-images.idx3-ubyte, "
                 "t10k-labels.idx1-ubyte")

# md5 sums: the ones torchvision lists for these exact files. For MNIST also the md5 of each file's
# decompressed bytes (the same for every copy of the data, however it was gzipped): the common copies
# recompressed with another gzip time stamp, like the shared benchmark copy of train-images, are accepted.
register(DatasetSpec(
    name="mnist",
    loader=load_mnist,
    description="MNIST handwritten digits, 70,000 28x28 grey images (60,000 train / 10,000 test), 10 classes "
                "(LeCun et al. 1998).",
    files=_FILES,
    alternatives=_ALTERNATIVES,
    downloads=_remote_files("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
        "test_images": "9fb629c4189551a2d022fa330f9573f3",
        "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
    }, {
        "train_images": "6bbc9ace898e44ae57da46a324031adb",
        "train_labels": "a25bea736e30d166cdddb491f175f624",
        "test_images": "2646ac647ad5339dbf082846283269ea",
        "test_labels": "27ae3e4e09519cfbb04c329615203637",
    }),
    splits=("train", "test", "all"),
    locate=locate_idx,
    homepage="http://yann.lecun.com/exdb/mnist/",
))

register(DatasetSpec(
    name="fashion-mnist",
    loader=load_fashion_mnist,
    description="Fashion-MNIST clothing images, 70,000 28x28 grey (60,000 train / 10,000 test), 10 classes "
                "(Xiao et al. 2017).",
    files=_FILES,
    alternatives=_ALTERNATIVES,
    downloads=_remote_files("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
        "test_images": "bef4ecab320f06d8554ea6380940ec79",
        "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
    splits=("train", "test", "all"),
    locate=locate_idx,
    homepage="https://github.com/zalandoresearch/fashion-mnist",
))

register(DatasetSpec(
    name="kmnist",
    loader=load_kmnist,
    description="Kuzushiji-MNIST cursive Japanese characters, 70,000 28x28 grey "
                "(60,000 train / 10,000 test), 10 classes (Clanuwat et al. 2018).",
    files=_FILES,
    alternatives=_ALTERNATIVES,
    downloads=_remote_files("http://codh.rois.ac.jp/kmnist/dataset/kmnist/", {
        "train_images": "bdb82020997e1d708af4cf47b453dcf7",
        "train_labels": "e144d726b3acfaa3e44228e80efcd344",
        "test_images": "5c965bf0a639b31b8f53240b1b52f4d7",
        "test_labels": "7320c461ea6c1c855c0b718fb2a4b134",
    }),
    splits=("train", "test", "all"),
    locate=locate_idx,
    homepage="https://github.com/rois-codh/kmnist",
))
