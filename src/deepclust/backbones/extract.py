"""Streaming feature extraction: images -> backbone -> rows of a cached memory-mapped ``.npy``.

Images are decoded and resized one by one in DataLoader workers and go through the network one batch at a
time; each batch's features are written straight to the cache file (see :mod:`.feature_cache`), so
memory stays flat whatever the number of images. A second call with the same images, backbone and
preprocessing returns the cached array at once; a killed call resumes at the last saved batch.

Unreadable images: with ``on_error="skip"`` (the default, as for :func:`deepclust.data.load_image_folder`)
each one is left out with a warning naming it, and its row is dropped before the entry is published;
``return_index=True`` says which images the rows belong to. With ``on_error="raise"`` the first one
raises a ValueError naming it and the unfinished entry is deleted.

Under torchrun (a collective: every rank calls it with the same images) each rank extracts its own
contiguous run of whole batches, the ones one process would make, and writes them into the shared
partial file; once every rank is done rank 0 publishes the entry and every rank maps the whole of it.
The features are therefore one process's bit for bit. Every rank learns of an unreadable image (or of
ranks that see different images or no shared cache) and all stop with the same message.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .. import distributed as D
from ..data._base import check_on_error
from ..data._images import _DECODE_ERRORS
from ..progress import progress
from ._base import Backbone
from ._registry import check_device
from ._transform import Preprocessing
from .feature_cache import FeatureCache, cache_key, default_cache_dir, fingerprint_array, fingerprint_files


class _FileImages(Dataset):
    """Image files ``start:stop`` -> (uint8 (3, H, W), original (h, w), error text or "")."""

    def __init__(self, paths: Sequence[Path], preprocessing: Preprocessing, start: int, stop: int):
        self.paths, self.pre, self.start, self.stop = paths, preprocessing, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int):
        path = self.paths[self.start + i]
        try:
            with Image.open(path) as img:
                size = (img.height, img.width)
                arr = self.pre.image_to_uint8(img)
        except _DECODE_ERRORS as exc:
            h, w = self.pre.input_size
            return torch.zeros(3, h, w, dtype=torch.uint8), (0, 0), f"{type(exc).__name__}: {exc}"
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), size, ""


class _ArrayImages(Dataset):
    """Rows ``start:stop`` of an in-memory uint8 (N, h, w, c) array -> the items of :class:`_FileImages`."""

    def __init__(self, images: np.ndarray, preprocessing: Preprocessing, start: int, stop: int):
        self.images, self.pre, self.start, self.stop = images, preprocessing, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int):
        image = self.images[self.start + i]
        arr = self.pre.array_to_uint8(image)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), tuple(image.shape[:2]), ""


class _Unreadable(ValueError):
    """An image file that cannot be decoded, with ``on_error="raise"``."""


def _collate(items):
    pixels, sizes, errors = zip(*items, strict=True)
    return torch.stack(pixels), list(sizes), list(errors)


def _worker_init(_):
    torch.set_num_threads(1)  # workers only decode and resize; the network runs in the main process


def _as_source(source) -> tuple[str, Sequence[Path] | np.ndarray]:
    """("files", list of paths) or ("array", uint8 (N, h, w, c) array); ValueError for anything else."""
    if isinstance(source, str | os.PathLike):
        from ..data.image_folder import list_image_folder

        files, _, _ = list_image_folder(source)
        return "files", files
    if isinstance(source, np.ndarray):
        images = source[..., np.newaxis] if source.ndim == 3 else source
        if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
            raise ValueError("An image array must be uint8 with shape (n, height, width[, 1 or 3]); got "
                             f"{source.dtype} {source.shape}.")
        if len(images) == 0:
            raise ValueError("The image array is empty.")
        return "array", images
    paths = [Path(p) for p in source]
    if not paths:
        raise ValueError("No images given: pass image file paths, a folder, or a uint8 image array.")
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise FileNotFoundError(f"Image file {missing} does not exist.")
    return "files", paths


def _default_workers() -> int:
    """min(4, CPUs - 1), shared among the processes torchrun starts on this machine."""
    procs = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if D.is_distributed() else 1
    return min(4, max(0, (os.cpu_count() or 1) - 1) // max(procs, 1))


def _rank_rows(n: int, batch_size: int) -> tuple[int, int]:
    """This rank's rows (first, stop): a contiguous run of the batches one process makes, so every
    image is in a batch of the same images as in one process (all rows in one process)."""
    first, stop = D.shard_bounds(-(-n // batch_size))
    return first * batch_size, min(stop * batch_size, n)


def _agree(error: str | None, cls: type[Exception] = ValueError) -> None:
    """Raise on every rank when any rank reports an ``error`` (a collective), so that all ranks stop
    together with one message instead of some waiting in the next collective."""
    _raise_first(D.all_gather_objects(error), cls)


def _raise_first(errors: list[str | None], cls: type[Exception]) -> None:
    """Raise the first of the ranks' ``errors`` (in rank order), naming its rank; nothing if none."""
    failed = [(r, e) for r, e in enumerate(errors) if e]
    if failed:
        rank_, message = failed[0]
        raise cls(f"{message} (rank {rank_} of {len(errors)})" if len(errors) > 1 else message)


def extract_features(source, backbone: Backbone, *, cache_dir: str | os.PathLike | None = None,
                     batch_size: int = 64, num_workers: int | None = None,
                     device: str | torch.device | None = None, progress_bar: bool | None = None,
                     on_error: str = "skip", return_index: bool = False):
    """Features of every image in ``source``, as a read-only memory-mapped (N, D) float32 array.

    Parameters
    ----------
    source : folder, sequence of image paths, or uint8 array (N, h, w[, c])
        A folder is listed as :func:`deepclust.data.list_image_folder` lists it (same order).
        Files are decoded in DataLoader workers, never all held in memory. Grey becomes RGB.
    backbone : Backbone
        From :func:`deepclust.backbones.get_backbone`.
    cache_dir : path, optional
        Where the cache lives; default ``$DEEPCLUST_CACHE/features`` or ``~/.cache/deepclust/features``.
    batch_size : int, default=64
    num_workers : int, optional
        DataLoader worker processes decoding images; default min(4, CPUs - 1).
    device : str or torch.device, optional
        Where the network runs; default the backbone's device. "cuda" moves the backbone there.
    progress_bar : bool, optional
        Show a bar with images/s (default: when stderr is a terminal; see :mod:`deepclust.progress`).
    on_error : {"skip", "raise"}, default="skip"
        An unreadable image file is left out with a warning naming it, or raises a ValueError.
    return_index : bool, default=False
        Also return the int64 indices (into ``source``) of the images the rows belong to.

    Returns
    -------
    features : np.memmap of shape (n_readable, D), float32, read-only
    index : np.ndarray of shape (n_readable,), only with ``return_index=True``
    """
    check_on_error(on_error)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size!r}.")
    kind, items = _as_source(source)
    n = len(items)
    pre = backbone.preprocessing
    fingerprint = fingerprint_files(items) if kind == "files" else fingerprint_array(items)
    key = cache_key(fingerprint, backbone.name, backbone.weights_identity, pre.identity())
    meta = {"backbone": backbone.describe(), "source": kind, "n_images": n,
            "first_image": str(items[0]) if kind == "files" else None}
    root = cache_dir if cache_dir is not None else default_cache_dir()
    cache = FeatureCache(root, backbone.name, key, meta)
    if D.is_distributed():
        keys = D.all_gather_objects(key)
        _agree(None if all(k == keys[0] for k in keys) else
               "The ranks see different images (their feature-cache keys differ): under torchrun every "
               "rank must read the same files (same paths, sizes and modification times) or the same array.")

    cached = cache.load()
    if D.is_distributed():  # rank 0 decides whether the entry is complete; then every rank must read it
        if D.all_gather_objects(cached is not None)[0]:
            _agree(None if cached is not None else
                   f"The feature cache entry {cache.folder} is complete for rank 0 but not readable here: "
                   "under torchrun --feature-cache must be on a filesystem every rank sees.")
        else:
            cached = None
    if cached is None:
        cached = _extract(cache, kind, items, backbone, batch_size=int(batch_size),
                          num_workers=_default_workers() if num_workers is None else int(num_workers),
                          device=device, progress_bar=progress_bar, on_error=on_error)
    elif cached[1]["skipped"]:
        skipped = cached[1]["skipped"]
        warnings.warn(f"{len(skipped)} unreadable image(s) were left out when these features were cached "
                      f"(first: {skipped[0]['path']}); the features cover the other {cached[1]['n_kept']}.",
                      UserWarning, stacklevel=2)
    features, meta = cached
    if not return_index:
        return features
    keep = np.ones(n, dtype=bool)
    keep[[s["index"] for s in meta["skipped"]]] = False
    return features, np.flatnonzero(keep).astype(np.int64)


def _extract(cache: FeatureCache, kind: str, items, backbone: Backbone, *, batch_size: int, num_workers: int,
             device, progress_bar, on_error: str):
    n = len(items)
    if device is not None:
        backbone = backbone.to(check_device(device))
    device = backbone.device
    distributed = D.is_distributed()
    first, stop = _rank_rows(n, batch_size)
    if distributed:  # rank 0 creates (or keeps, to resume in) the file every rank writes into
        if D.is_main_process():
            cache.prepare(n, backbone.feature_dim)
        D.barrier()
    start, skipped = cache.open(n, backbone.feature_dim, rows=(first, stop) if distributed else None)
    dataset_cls = _FileImages if kind == "files" else _ArrayImages
    loader = DataLoader(dataset_cls(items, backbone.preprocessing, start, stop), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, collate_fn=_collate,
                        worker_init_fn=_worker_init, pin_memory=device.type == "cuda")
    h, w = backbone.input_size
    said_small = False
    done = start
    unreadable = None  # under torchrun: this rank's unreadable-image error, raised on every rank below
    t0 = time.perf_counter()
    try:
        with progress(total=stop - first, desc=f"Extracting {backbone.name} features", unit="img",
                      enabled=progress_bar) as bar:
            bar.update(start - first)
            for pixels, sizes, errors in loader:
                for j, (size, error) in enumerate(zip(sizes, errors, strict=True)):
                    name = str(items[done + j]) if kind == "files" else f"image {done + j}"
                    if error:
                        if on_error == "raise":
                            raise _Unreadable(f"Cannot read image file {name}: {error}. Fix or delete it, or "
                                             "leave unreadable files out (on_error='skip'; deepclust "
                                             "predict --skip-unreadable).")
                        warnings.warn(f"Skipping unreadable image file {name}: {error}", UserWarning,
                                      stacklevel=3)
                        skipped.append({"index": done + j, "path": name, "error": error})
                    elif not said_small and (size[0] < h or size[1] < w):
                        said_small = True
                        warnings.warn(f"{name} ({size[0]}x{size[1]}) is smaller than the {h}x{w} input of "
                                      f"{backbone.name}; it and any other smaller images are upscaled "
                                      f"({backbone.preprocessing.interpolation}), which can cost accuracy.",
                                      UserWarning, stacklevel=3)
                x = backbone.preprocessing.normalise(pixels.to(device, non_blocking=True))
                feats = backbone(x).cpu().numpy()  # (B, D)
                cache.write_rows(done, feats)
                done += len(feats)
                cache.checkpoint(done, skipped)
                bar.update(len(feats))
    except _Unreadable as exc:
        if not distributed:
            cache.discard()  # the fix (editing or deleting the file) changes the key: this entry is dead
            raise
        unreadable = str(exc)
    except BaseException:
        cache.close()  # interrupted: the rows saved so far stay, and the next call resumes after them
        raise
    cache.meta.update(seconds=round(time.perf_counter() - t0, 3), batch_size=batch_size, device=str(device))
    if distributed:
        cache.close()
        reports = D.all_gather_objects((unreadable, skipped))  # every rank is done writing its rows
        if any(error for error, _ in reports):
            if D.is_main_process():
                cache.discard()
            _raise_first([error for error, _ in reports], _Unreadable)
        skipped = sorted((s for _, part in reports for s in part), key=lambda s: s["index"])
        cache.meta.update(processes=D.world_size())
    if skipped and len(skipped) == n:
        if D.is_main_process():
            cache.discard()
        raise ValueError(f"None of the {n} images could be read (first: {skipped[0]['path']}: "
                         f"{skipped[0]['error']}).")
    if not distributed:
        return cache.finish(skipped)
    if D.is_main_process():
        cache.finish(skipped)
    D.barrier()  # published: every rank maps the whole entry
    loaded = cache.load()
    _agree(None if loaded is not None else
           f"The finished feature cache entry {cache.folder} is not readable here: under torchrun "
           "--feature-cache must be on a filesystem every rank sees.")
    return loaded
