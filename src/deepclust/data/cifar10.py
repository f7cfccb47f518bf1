"""CIFAR-10: 60,000 32x32 colour images in 10 classes, from the python (pickle) or binary release.

The python release is a set of pickle files. Unpickling can run arbitrary code, so the
batches are read with :class:`RestrictedUnpickler`, which only rebuilds numpy arrays,
lists, dicts, strings and numbers.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from ._archive import read_tar_members
from ._base import ImageDataset, check_split
from ._registry import DATASETS, DatasetSpec, RemoteFile, fetch, register
from .transforms import resize

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_TEST = ["test_batch"]
_RECORD = 1 + 3 * 32 * 32  # binary release: one label byte, then R, G, B planes of 32x32


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that only resolves the globals needed to rebuild numpy arrays.

    Anything else (``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError``
    naming the refused global, so a tampered batch file cannot run code.
    """

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),   # ndarray, protocols 2-4 (numpy < 2)
        ("numpy._core.multiarray", "_reconstruct"),  # same, numpy >= 2
        ("numpy.core.multiarray", "scalar"),         # numpy scalars
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),       # ndarray, protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol < 3 (e.g. re-saved batches)
    })

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"Refusing to load global '{module}.{name}' from a pickle: only numpy array data is allowed "
            "in CIFAR batch files. The file may be damaged or tampered with; download it again."
        )


def safe_load_pickle(data: bytes, *, source: str = "pickle") -> object:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (Python 2 strings read as bytes)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError:
        raise
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise ValueError(f"{source} is not a readable pickle file ({type(exc).__name__}: {exc}). "
                         "Delete it and download it again.") from exc


def _text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _str_keys(obj, source: str) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{source} does not hold a CIFAR batch (a dict); it holds {type(obj).__name__}.")
    return {_text(k): v for k, v in obj.items()}


def _parse_python_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _str_keys(safe_load_pickle(data, source=source), source)
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{source} has no 'data'/'labels' entries; it holds keys {sorted(batch)}.")
    images = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072 or len(images) != len(labels):
        raise ValueError(f"{source}: expected 'data' uint8 of shape (n, 3072) and n labels; got "
                         f"{images.dtype} {images.shape} and {len(labels)} labels.")
    return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _parse_binary_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    if not data or len(data) % _RECORD:
        raise ValueError(f"{source} is truncated or corrupt: {len(data)} bytes is not a multiple of the "
                         f"{_RECORD}-byte CIFAR-10 record.")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, records[:, 0].astype(np.int64)


def _batch_names(split: str) -> list[str]:
    return {"train": _TRAIN, "test": _TEST, "all": _TRAIN + _TEST}[split]


def locate_cifar10(folder: Path, split: str):
    """``(kind, path)`` for the first CIFAR-10 layout found in ``folder``, or None.

    Kinds: "py" (batch folder), "py-tar" (cifar-10-python.tar.gz), "bin" (binary batch folder),
    "bin-tar" (cifar-10-binary.tar.gz).
    """
    names = _batch_names(split)
    for candidate in (folder / "cifar-10-batches-py", folder):
        if all((candidate / n).is_file() for n in names):
            return "py", candidate
    if (folder / "cifar-10-python.tar.gz").is_file():
        return "py-tar", folder / "cifar-10-python.tar.gz"
    for candidate in (folder / "cifar-10-batches-bin", folder):
        if all((candidate / f"{n}.bin").is_file() for n in names):
            return "bin", candidate
    if (folder / "cifar-10-binary.tar.gz").is_file():
        return "bin-tar", folder / "cifar-10-binary.tar.gz"
    return None


def load_cifar10(data_dir: str | os.PathLike | None = None, *, split: str = "all", download: bool = True,
                 size=None, on_error: str = "skip") -> ImageDataset:
    """CIFAR-10: 50,000 train + 10,000 test 32x32 RGB images, 10 classes.

    Reads ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz`` (straight from the archive),
    or the binary release ``cifar-10-batches-bin/`` (or ``cifar-10-binary.tar.gz``).
    ``split="all"`` is the five training batches then the test batch. ``on_error`` is ignored.
    """
    spec = DATASETS["cifar10"]
    check_split(split, spec.splits, spec.name)
    kind, path = fetch(spec, data_dir, split, download)
    binary = kind.startswith("bin")
    names = _batch_names(split)
    files = [f"{n}.bin" for n in names] if binary else list(names)
    meta_name = "batches.meta.txt" if binary else "batches.meta"

    if kind.endswith("tar"):
        blobs = read_tar_members(path, {*files, meta_name})
        missing = [f for f in files if f not in blobs]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}; it is not a complete CIFAR-10 archive. "
                             "Delete it and download it again.")
        read = blobs.__getitem__
        meta = blobs.get(meta_name)
        source = lambda f: f"{path}/{f}"  # noqa: E731
    else:
        read = lambda f: (path / f).read_bytes()  # noqa: E731
        meta = (path / meta_name).read_bytes() if (path / meta_name).is_file() else None
        source = lambda f: str(path / f)  # noqa: E731

    parse = _parse_binary_batch if binary else _parse_python_batch
    parts = [parse(read(f), source(f)) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"CIFAR-10 labels must lie in 0..9; found {labels.min()}..{labels.max()} in {path}.")
    if size is not None:
        images = resize(images, size)
    return ImageDataset(name="cifar10", images=np.ascontiguousarray(images), labels=labels,
                        class_names=_class_names(meta, binary), description=spec.description)


def _class_names(meta: bytes | None, binary: bool) -> list[str]:
    if meta is None:
        return list(CLASSES)
    try:
        if binary:
            names = [line.strip() for line in meta.decode("utf-8", "replace").splitlines() if line.strip()]
        else:
            names = [_text(n) for n in _str_keys(safe_load_pickle(meta, source="batches.meta"),
                                                 "batches.meta").get("label_names", [])]
    except (ValueError, pickle.UnpicklingError):
        return list(CLASSES)
    return names if len(names) == 10 else list(CLASSES)


register(DatasetSpec(
    name="cifar10",
    loader=load_cifar10,
    description="CIFAR-10, 60,000 32x32 colour images (50,000 train / 10,000 test), 10 classes "
                "(Krizhevsky 2009).",
    files=("cifar-10-python.tar.gz",),
    alternatives=("the extracted folder cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
                  "the binary release cifar-10-batches-bin/ (data_batch_1..5.bin, test_batch.bin) or "
                  "cifar-10-binary.tar.gz"),
    downloads=(RemoteFile("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                          "c58f30108f718f92721af3b95e74349a"),),
    splits=("train", "test", "all"),
    locate=locate_cifar10,
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
))
