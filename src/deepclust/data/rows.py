"""Images read by index from a memory-mapped uint8 array, turned into float only one batch at a time.

A data set opened from a cache (:mod:`deepclust.data.cache`) keeps its images on disk as one memory-mapped
(N, H, W, C) uint8 array. :class:`ImageRows` is what the deep methods train on in that case: it has the
shape of the float tensor (N, C, H, W) they would otherwise hold, but ``rows[idx]`` converts only the rows
asked for. Memory is then one batch plus the model, whatever N is.

Pages a process reads from a memory map count in its resident set until the kernel drops them, so a pass
over a 1,000,000-image file would otherwise leave the whole file resident. Every ``release_bytes`` read,
the reader tells the kernel it no longer needs the mapped pages (``madvise(MADV_DONTNEED)``): the file
stays in the OS page cache (shared, reclaimable, fast to read again), but not in this process's RSS.
"""

from __future__ import annotations

import mmap

import numpy as np
import torch

from .transforms import LUMA_WEIGHTS

RELEASE_BYTES = 64 * 2**20  # mapped bytes read between two page releases
# On a page fault in a file mapping Linux maps the neighbouring cached pages too ("fault-around", 64 KiB
# by default), so one row read at random can leave 16 pages resident, not the one or two it spans.
FAULT_AROUND_BYTES = 64 * 2**10
STATS_CHUNK = 4096  # rows per chunk when computing channel statistics


def backing_map(array: np.ndarray) -> mmap.mmap | None:
    """The ``mmap.mmap`` that ``array`` (a memmap, or a view of one) reads from, or None if in memory."""
    base = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None)
    return None


def release_pages(array) -> None:
    """Drop the pages this process has read from ``array``'s file mapping (the OS keeps them cached), so
    a pass over a large memory-mapped file does not leave it all resident; nothing for in-memory data."""
    mapped = backing_map(array) if isinstance(array, np.ndarray) else None
    if mapped is not None:
        _drop_pages(mapped)


def _drop_pages(mapped: mmap.mmap) -> bool:
    """``madvise(MADV_DONTNEED)`` on ``mapped``; False where the platform has no madvise (the OS then
    still reclaims the pages when it needs them)."""
    try:
        mapped.madvise(mmap.MADV_DONTNEED)
    except (AttributeError, OSError, ValueError):
        return False
    return True


def is_memory_mapped(array) -> bool:
    """Whether ``array`` reads from a file mapping rather than from memory."""
    return isinstance(array, np.ndarray) and backing_map(array) is not None


class ImageRows:
    """Float images (N, C, H, W) read by index from uint8 images (N, H, W, C), typically memory-mapped.

    ``rows[i]``, ``rows[a:b]`` and ``rows[index_array]`` return float32 tensors in torch's layout,
    converted as :func:`~deepclust.data.transforms.prepare_features` would: grey (optional), then
    ``normalize`` ("unit": [0, 1]; "standard": per channel ``(x - mean) / std``, statistics computed once
    in chunks unless given; None: 0..255). ``flat=True`` returns (n, H*W*C) rows instead, the vectors
    the k-means family takes, in prepare_features' order. Nothing else of the array is ever held in memory.
    """

    def __init__(self, images: np.ndarray, *, normalize: str | None = "unit", grayscale: bool = False,
                 mean=None, std=None, flat: bool = False, release_bytes: int = RELEASE_BYTES):
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
            raise ValueError(f"ImageRows reads uint8 images (N, H, W, C) with 1 or 3 channels; got "
                             f"{images.dtype} of shape {images.shape}.")
        if normalize not in ("unit", "standard", None):
            raise ValueError(f"normalize must be 'unit', 'standard' or None; got {normalize!r}.")
        self.images = images
        self.normalize = normalize
        self.grayscale = bool(grayscale and images.shape[-1] == 3)
        self.flat = flat
        self.release_bytes = int(release_bytes)
        self._map = backing_map(images)
        self._read = 0
        # Rows read in random order each touch their own pages: count those, not the rows' bytes, and
        # the pages the kernel maps around each fault (on 1,000,000 28 x 28 images, counting only the
        # row's own pages left ~300 MB of the file resident while training).
        row = int(np.prod(images.shape[1:]))
        self._pages_per_row = max((-(-row // mmap.PAGESIZE) + 1) * mmap.PAGESIZE, FAULT_AROUND_BYTES)
        n, h, w, c = images.shape
        channels = 1 if self.grayscale else c
        self.image_shape = (channels, h, w)
        self.mean = self.std = None
        if normalize == "standard":
            if mean is None or std is None:
                mean, std = self.channel_stats()
            self.mean = np.asarray(mean, dtype=np.float32).reshape(channels)
            self.std = np.asarray(std, dtype=np.float32).reshape(channels)

    # ------------------------------------------------------------- array-like
    @property
    def shape(self) -> tuple[int, ...]:
        n = int(self.images.shape[0])
        return (n, int(np.prod(self.image_shape))) if self.flat else (n, *self.image_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return self.ndim

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        raw = self.images[index]
        if raw.ndim == 3:  # one image
            raw = raw[np.newaxis]
        self._account(raw.nbytes + FAULT_AROUND_BYTES if isinstance(index, slice)  # one run of pages
                      else raw.shape[0] * self._pages_per_row)
        return self._convert(raw)

    def __repr__(self) -> str:
        return (f"ImageRows(n_samples={len(self)}, shape={self.shape}, normalize={self.normalize!r}, "
                f"memory_mapped={self._map is not None})")

    def view(self, *, flat: bool) -> ImageRows:
        """The same rows as images (``flat=False``) or as vectors (``flat=True``), sharing statistics."""
        return ImageRows(self.images, normalize=self.normalize, grayscale=self.grayscale, mean=self.mean,
                         std=self.std, flat=flat, release_bytes=self.release_bytes)

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` rows drawn without replacement (sorted indices, seeded) as a float32 numpy array, and
        their indices: what a whole-data statistic (pixel-space silhouette, a PCA plot) reads instead."""
        total = len(self)
        if n >= total:
            pick = np.arange(total)
        else:
            pick = np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
        return self[pick].numpy(), pick

    # ------------------------------------------------------------- internals
    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of the [0, 1] images, in float64 chunks (what "standard" divides by)."""
        total = np.zeros(self.image_shape[0])
        squares = np.zeros(self.image_shape[0])
        count = 0
        for s in range(0, len(self), STATS_CHUNK):
            raw = self.images[s:s + STATS_CHUNK]
            self._account(raw.nbytes + FAULT_AROUND_BYTES)
            x = self._grey(raw).astype(np.float64) / 255.0
            total += x.sum(axis=(0, 1, 2))
            squares += (x * x).sum(axis=(0, 1, 2))
            count += x.shape[0] * x.shape[1] * x.shape[2]
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean * mean, 0))
        return mean.astype(np.float32), std.astype(np.float32)

    def _grey(self, raw: np.ndarray) -> np.ndarray:
        if not self.grayscale:
            return raw
        luma = raw.astype(np.float64) @ LUMA_WEIGHTS
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., np.newaxis]

    def _convert(self, raw: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(self._grey(raw).astype(np.float32))  # a new, writable array
        if self.normalize is not None:
            x /= 255.0
        if self.normalize == "standard":
            x -= torch.from_numpy(self.mean)
            x /= torch.from_numpy(np.where(self.std > 0, self.std, np.float32(1.0)))
        if self.flat:  # (n, H*W*C), in prepare_features' order
            return x.reshape(x.shape[0], -1)
        return x.permute(0, 3, 1, 2).contiguous()

    def _account(self, nbytes: int) -> None:
        """Drop this process's mapped pages every ``release_bytes`` of pages touched (an upper bound:
        each row read counts the pages it can span); the OS keeps them cached."""
        if self._map is None:
            return
        self._read += nbytes
        if self._read >= self.release_bytes:
            self._read = 0
            if not _drop_pages(self._map):  # no madvise here: stop trying
                self._map = None
