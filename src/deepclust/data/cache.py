"""A data set stored once as a memory-mapped uint8 array, so runs read it by index instead of decoding it.

``deepclust cache -d NAME --out DIR`` (or :func:`cache_dataset`) streams a named data set or an image
folder into ``DIR``:

- ``images.npy``: (N, H, W, C) uint8, a plain ``.npy`` that ``np.load(..., mmap_mode="r")`` maps;
- ``labels.npy``: (N,) int64, only when the data set has labels;
- ``paths.txt``: one source file per line, only for image files (folders, COIL);
- ``deepclust-cache.json``: name, description, class names, N and the image shape.

Image folders are decoded a chunk of files at a time, straight into the mapped array, so building the
cache of a million photos needs memory for one chunk. Array formats (MNIST's IDX files, USPS, CIFAR) are
read as their loaders read them and written out in chunks. The folder is written under a temporary name
and renamed when complete: a cache folder either is whole or does not exist, and an existing folder is
never replaced.

``load_dataset(DIR)`` (and ``deepclust run -d DIR``) opens a cache without reading it: the images stay
on disk, :class:`~deepclust.data.rows.ImageRows` reads the batches the training asks for, and memory no
longer grows with N. A cache is checked when opened (sizes, dtypes, shapes: it may come from elsewhere)
and never unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from .._io import _read_umask, write_json
from ..progress import progress
from ._base import ImageDataset
from ._images import decode_images
from .transforms import check_size, resize, to_grayscale

MARKER = "deepclust-cache.json"
FORMAT = 1
CHUNK = 1024  # images decoded and written at a time
MAX_META_BYTES = 1 << 20
MAX_CLASSES = 1_000_000


class CacheError(ValueError):
    """A folder that claims to be a deepclust cache but is not a whole, consistent one."""

    def __init__(self, folder: Path, problem: str):
        super().__init__(f"{folder} is not a usable deepclust data cache: {problem}. Build it again with "
                         f"'deepclust cache -d SOURCE --out NEW_FOLDER'.")


def is_cache(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a deepclust data cache."""
    return (Path(path).expanduser() / MARKER).is_file()


# --------------------------------------------------------------------------------------------- writing
class CacheWriter:
    """Writes a cache of at most ``n`` images into a temporary sibling folder of ``dest``; ``finish``
    renames it into place, ``abandon`` (or an exception inside ``with``) removes it.

    For data that no loader knows (a generator, an array store): ``write`` chunks of uint8 images
    (m, H, W, C) in order, then ``finish``, and ``deepclust run -d DEST`` reads them by index.

    >>> with CacheWriter("big-cache", n, (28, 28, 1), labelled=True) as cache:  # doctest: +SKIP
    ...     for images, labels in chunks():
    ...         cache.write(images, labels)
    ...     cache.finish(name="generated", description="...", class_names=[str(c) for c in range(10)])
    """

    def __init__(self, dest: str | os.PathLike, n: int, image_shape: tuple[int, int, int], *,
                 labelled: bool):
        dest = Path(dest).expanduser()
        if os.path.lexists(dest):
            raise FileExistsError(f"{dest} already exists; the cache is never written over anything. "
                                  "Choose a new --out folder (or delete the old one yourself).")
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.dest = dest
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        self.shape = (n, *image_shape)
        # The rows are appended with plain writes after the .npy header, not through a memory map: pages
        # written through a map stay in the writer's resident set, written ones only in the OS cache.
        self._file, self._offset = _new_npy(self.tmp / "images.npy", self.shape)
        self._row_bytes = int(np.prod(image_shape))
        self.labels = np.full(n, -1, dtype=np.int64) if labelled else None
        self._paths = None  # paths.txt, open once the first chunk brings paths; written as they come
        self.n = 0
        self.finished = False

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None or not self.finished:
            self.abandon()

    def write(self, images: np.ndarray, labels: np.ndarray | None = None,
              paths: list[str] | None = None) -> None:
        """Append ``images`` (m, H, W, C) uint8 with their ``labels`` (and source ``paths``)."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != self.shape[1:] \
                or self.n + len(images) > self.shape[0]:
            shape = ", ".join(map(str, self.shape[1:]))
            raise ValueError(f"CacheWriter.write takes uint8 images of shape (m, {shape}), "
                             f"{self.shape[0]} in all; got {images.dtype} {images.shape} after {self.n}.")
        if (labels is None) != (self.labels is None):
            raise ValueError("labels must be given with every chunk of a labelled cache, and only then.")
        m = images.shape[0]
        if paths is not None and len(paths) != m or (paths is None) != (self._paths is None) and self.n:
            raise ValueError("paths must be given with every chunk, one per image, or with none.")
        self._file.seek(self._offset + self.n * self._row_bytes)
        self._file.write(np.ascontiguousarray(images).data)
        if self.labels is not None:
            self.labels[self.n:self.n + m] = labels
        if paths is not None:
            if self._paths is None:
                self._paths = open(self.tmp / "paths.txt", "w", encoding="utf-8", newline="\n")
            self._paths.write("".join(p.replace("\n", " ") + "\n" for p in paths))
        self.n += m

    def finish(self, *, name: str, description: str = "", class_names: list[str] | tuple = (),
               source: str = "") -> Path:
        """Write the description and move the complete cache to ``dest``; returns ``dest``."""
        if self.n < self.shape[0]:  # unreadable files were left out: copy the rows kept under a new header
            kept, offset = _new_npy(self.tmp / "images.kept.npy", (self.n, *self.shape[1:]))
            self._file.seek(self._offset)
            kept.seek(offset)
            left = self.n * self._row_bytes
            while left:
                block = self._file.read(min(left, 64 * 2**20))
                kept.write(block)
                left -= len(block)
            kept.close()
            self._file.close()
            os.replace(self.tmp / "images.kept.npy", self.tmp / "images.npy")
        else:
            self._file.close()
        if self.labels is not None:
            np.save(self.tmp / "labels.npy", self.labels[:self.n])
        if self._paths is not None:
            self._paths.close()
        shape = [int(s) for s in self.shape[1:]]
        write_json(self.tmp / MARKER, {
            "format": FORMAT, "name": name, "description": description, "class_names": list(class_names),
            "n_samples": self.n, "image_shape": shape, "labelled": self.labels is not None,
            "paths": self._paths is not None, "source": source})
        os.chmod(self.tmp, 0o777 & ~_read_umask())
        try:
            os.rename(self.tmp, self.dest)  # atomic; fails rather than replace a folder made meanwhile
        except OSError:
            if os.path.lexists(self.dest):
                raise FileExistsError(f"{self.dest} appeared while the cache was being written; the new "
                                      f"cache is left in {self.tmp}.") from None
            raise
        self.finished = True
        return self.dest

    def abandon(self) -> None:
        """Remove the partial cache."""
        self._file.close()
        if self._paths is not None:
            self._paths.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _new_npy(path: Path, shape: tuple[int, ...]):
    """A new uint8 .npy file of ``shape`` (its header written, its data zeros, sparse), open for writing
    the data, and the offset where the data starts."""
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    offset = header.offset
    del header  # unmapped: the data is written with plain writes
    return open(path, "r+b"), offset


def write_cache(dataset: ImageDataset, dest: str | os.PathLike, *, source: str = "",
                show_progress: bool | None = None) -> Path:
    """Write an in-memory :class:`ImageDataset` as a cache folder ``dest`` (which must not exist)."""
    dest = Path(dest).expanduser()
    writer = CacheWriter(dest, len(dataset), dataset.image_shape, labelled=dataset.labels is not None)
    try:
        for s in progress(range(0, len(dataset), CHUNK), desc="Writing cache", unit="chunk",
                          enabled=show_progress):
            sl = slice(s, s + CHUNK)
            writer.write(dataset.images[sl], None if dataset.labels is None else dataset.labels[sl],
                         None if dataset.paths is None else dataset.paths[sl])
        return writer.finish(name=dataset.name, description=dataset.description,
                             class_names=list(dataset.class_names), source=source or dataset.name)
    except BaseException:
        writer.abandon()
        raise


def cache_dataset(name_or_path: str | os.PathLike, dest: str | os.PathLike, *, data_dir=None,
                  split: str = "all", size=None, grayscale: bool = False, on_error: str = "skip",
                  show_progress: bool | None = None) -> Path:
    """Build the cache of a named data set or an image folder in ``dest`` and return ``dest``.

    ``size`` resizes and ``grayscale`` keeps one luma channel, as the same options of a run would; an
    image folder is streamed a chunk of files at a time (its images' size and colour are read from the
    file headers first when ``size`` is not given: the most common size, colour if any file is colour).
    """
    from . import load_dataset
    from ._registry import canonical_name
    from .image_folder import list_image_folder

    size = check_size(size)
    dest = Path(dest).expanduser()
    if os.path.lexists(dest):
        raise FileExistsError(f"{dest} already exists; the cache is never written over anything. Choose a "
                              "new --out folder (or delete the old one yourself).")
    source = str(name_or_path)
    folder = Path(name_or_path).expanduser()
    if canonical_name(source) is not None or not folder.is_dir() or is_cache(folder):
        dataset = load_dataset(name_or_path, data_dir=data_dir, split=split, size=size, on_error=on_error)
        if grayscale and dataset.image_shape[-1] == 3:
            dataset = ImageDataset(dataset.name, to_grayscale(dataset.images), dataset.labels,
                                   dataset.class_names, dataset.description, dataset.paths)
        return write_cache(dataset, dest, source=source, show_progress=show_progress)
    files, labels, class_names = list_image_folder(folder, split=split)
    target, channels = _folder_shape(files, size, grayscale)
    writer = CacheWriter(dest, len(files), (*target, channels), labelled=labels is not None)
    try:
        for s in progress(range(0, len(files), CHUNK), total=-(-len(files) // CHUNK), desc="Caching images",
                          unit="chunk", enabled=show_progress):
            chunk = files[s:s + CHUNK]
            images, kept = decode_images([(str(p), (lambda p=p: str(p))) for p in chunk], size=target,
                                         on_error=on_error, where=str(folder), channels=channels,
                                         desc="decoding")
            if images is None:
                continue
            writer.write(images, None if labels is None else labels[s:s + CHUNK][kept],
                         [str(chunk[i]) for i in kept])
        if writer.n == 0:
            raise ValueError(f"None of the {len(files)} image files in {folder} could be read.")
        name = folder.resolve().name or str(folder)
        return writer.finish(name=name, description=f"Images from {folder}, cached.", class_names=class_names,
                             source=str(folder))
    except BaseException:
        writer.abandon()
        raise


def _folder_shape(files: list[Path], size, grayscale: bool) -> tuple[tuple[int, int], int]:
    """The (height, width) and channels a folder's images are cached at, from the file headers."""
    sizes: Counter = Counter()
    colour = False
    for path in progress(files, desc="Reading image headers", unit="img"):
        try:
            with Image.open(path) as img:
                sizes[(img.size[1], img.size[0])] += 1
                colour |= img.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # decoding says what is wrong with it, or skips it
    if size is None:
        if not sizes:
            raise ValueError(f"None of the {len(files)} image files could be read.")
        size = sizes.most_common(1)[0][0]
    return tuple(size), 1 if grayscale or not colour else 3


# --------------------------------------------------------------------------------------------- reading
def open_cache(path: str | os.PathLike) -> ImageDataset:
    """The data set in cache folder ``path``: images memory-mapped read-only, labels in memory."""
    folder = Path(path).expanduser()
    meta = _read_meta(folder)
    try:
        images = np.load(folder / "images.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CacheError(folder, f"images.npy cannot be read ({exc})") from None
    n, shape = meta["n_samples"], tuple(meta["image_shape"])
    if images.dtype != np.uint8 or images.shape != (n, *shape):
        raise CacheError(folder, f"images.npy holds {images.dtype} {images.shape}, not uint8 {(n, *shape)}")
    labels = None
    if meta["labelled"]:
        try:
            labels = np.load(folder / "labels.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CacheError(folder, f"labels.npy cannot be read ({exc})") from None
        if labels.shape != (n,) or labels.dtype.kind not in "iu":
            raise CacheError(folder, f"labels.npy holds {labels.dtype} {labels.shape}, not {n} integers")
        n_classes = len(meta["class_names"]) or MAX_CLASSES
        if n and (labels.min() < 0 or labels.max() >= n_classes):
            raise CacheError(folder, f"labels.npy holds labels outside 0..{n_classes - 1}")
    paths = None
    if meta["paths"]:
        try:
            paths = (folder / "paths.txt").read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CacheError(folder, f"paths.txt cannot be read ({exc})") from None
        if len(paths) != n:
            raise CacheError(folder, f"paths.txt has {len(paths)} lines for {n} images")
    return ImageDataset(name=meta["name"], images=images, labels=labels, class_names=meta["class_names"],
                        description=meta["description"], paths=paths)


def load_cache(path: str | os.PathLike, *, split: str = "all", size=None) -> ImageDataset:
    """:func:`open_cache` for ``load_dataset``: a cache has one split, and is resized only by copying it
    into memory (the cache's size is the point: build it at the size you want with ``--resize``)."""
    folder = Path(path).expanduser()
    if split != "all":
        raise ValueError(f"The data cache {folder} holds one split; use split 'all' (cache each split into "
                         "its own folder with 'deepclust cache --split').")
    dataset = open_cache(folder)
    target = check_size(size)
    if target is None or tuple(dataset.image_shape[:2]) == target:
        return dataset
    return ImageDataset(dataset.name, resize(np.asarray(dataset.images), target), dataset.labels,
                        dataset.class_names, dataset.description, dataset.paths)


def _read_meta(folder: Path) -> dict:
    path = folder / MARKER
    try:
        if path.stat().st_size > MAX_META_BYTES:
            raise CacheError(folder, f"{MARKER} is larger than {MAX_META_BYTES} bytes")
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheError(folder, f"{MARKER} cannot be read ({exc})") from None
    ok = (isinstance(meta, dict) and meta.get("format") == FORMAT
          and isinstance(meta.get("name"), str) and isinstance(meta.get("description"), str)
          and isinstance(meta.get("class_names"), list)
          and all(isinstance(c, str) for c in meta["class_names"])
          and isinstance(meta.get("n_samples"), int) and meta["n_samples"] >= 0
          and isinstance(meta.get("image_shape"), list) and len(meta["image_shape"]) == 3
          and all(isinstance(s, int) and s > 0 for s in meta["image_shape"])
          and meta["image_shape"][2] in (1, 3)
          and isinstance(meta.get("labelled"), bool) and isinstance(meta.get("paths"), bool))
    if not ok:
        raise CacheError(folder, f"{MARKER} is not a format-{FORMAT} cache description")
    return meta
