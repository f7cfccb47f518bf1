"""The feature cache: one memory-mapped ``.npy`` per (images, backbone weights, preprocessing).

Layout: ``<cache_dir>/<backbone>/<key>/`` holds, while extracting, ``features.partial.npy`` (rows written
in place, in order) and ``progress.json`` (rows done, images skipped; rewritten atomically after the
rows it counts are on disk), and once complete ``features.npy`` and ``meta.json``. An entry counts as
complete only when ``meta.json`` says so and ``features.npy`` has the promised shape, so a killed run is
never mistaken for a finished one; the next run with the same key resumes at the last saved row.

Under torchrun the ranks write disjoint row ranges of the one ``features.partial.npy`` (rank 0 creates
it), each recording its own progress in ``progress.<first>-<stop>.json``; rank 0 publishes the entry
once every rank is done (``extract.py``). Creating a new partial file deletes every progress record, so
no record can vouch for rows of an older file.

The key is a SHA-256 of the images' fingerprint (each file's resolved path, size and modification time,
or an in-memory array's bytes), the backbone name, its weights' fingerprint and its preprocessing, so
another backbone, other weights or another resize never reuse an entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._io import write_error, write_json

FORMAT_VERSION = 1
CACHE_ENV = "DEEPCLUST_CACHE"
_DTYPE = np.dtype("<f4")


def default_cache_dir() -> Path:
    """``$DEEPCLUST_CACHE/features`` if set, else ``~/.cache/deepclust/features``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path("~/.cache/deepclust").expanduser()) / "features"


def fingerprint_files(paths: Sequence[Path]) -> str:
    """SHA-256 of every file's resolved path, size and modification time, in order (no file is read)."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"files:{len(paths)}:{h.hexdigest()}"


def fingerprint_array(images: np.ndarray) -> str:
    """SHA-256 of an array's shape, dtype and bytes, hashed in chunks (no full copy)."""
    h = hashlib.sha256(f"{images.shape}|{images.dtype.str}".encode())
    step = max(1, (64 << 20) // max(1, images[:1].nbytes))
    for i in range(0, len(images), step):
        h.update(np.ascontiguousarray(images[i:i + step]).data)
    return f"array:{len(images)}:{h.hexdigest()}"


def cache_key(source_fingerprint: str, backbone_name: str, weights_identity: str, preprocessing: dict) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, "source": source_fingerprint, "backbone": backbone_name,
                       "weights": weights_identity, "preprocessing": preprocessing}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _data_offset(path: Path) -> int:
    """Byte offset of the first row in an .npy file (after its header)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        fmt = np.lib.format
        (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
        return f.tell()


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    """The shape in an .npy file's header, or None when there is no readable one."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            fmt = np.lib.format
            shape, _, _ = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
            return tuple(shape)
    except (OSError, ValueError):
        return None


def _create_npy(path: Path, shape: tuple[int, int]) -> None:
    """An .npy file of ``shape`` float32 zeros without touching its pages (sparse where the disk allows)."""
    header = {"descr": np.lib.format.dtype_to_descr(_DTYPE), "fortran_order": False, "shape": shape}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + shape[0] * shape[1] * _DTYPE.itemsize)


class FeatureCache:
    """One cache entry (see the module docstring). ``meta`` is stored beside the features as is."""

    def __init__(self, cache_dir: str | os.PathLike, backbone_name: str, key: str, meta: dict):
        self.folder = Path(cache_dir).expanduser() / backbone_name / key
        self.key = key
        self.meta = dict(meta, key=key, format=FORMAT_VERSION)
        self.features_path = self.folder / "features.npy"
        self.meta_path = self.folder / "meta.json"
        self.partial_path = self.folder / "features.partial.npy"
        self.progress_path = self.folder / "progress.json"
        self._fd: int | None = None
        self._offset = 0
        self._row_bytes = 0
        self._rows: tuple[int, int] | None = None  # the rows this process writes (all, in one process)

    # -- reading ---------------------------------------------------------------------------------
    def load(self) -> tuple[np.ndarray, dict] | None:
        """(read-only memmap, meta) of a complete entry, or None if there is none."""
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            if not meta.get("complete") or meta.get("key") != self.key:
                return None
            features = np.load(self.features_path, mmap_mode="r")
        except (FileNotFoundError, ValueError, OSError):
            return None
        if features.shape != (meta["n_kept"], meta["feature_dim"]) or features.dtype != _DTYPE:
            return None
        return features, meta

    # -- writing ---------------------------------------------------------------------------------
    def prepare(self, n: int, dim: int) -> None:
        """Under torchrun, on rank 0 before the ranks :meth:`open` their rows: keep a partial file of
        ``n`` x ``dim`` rows (the ranks resume in it), else create one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if _npy_shape(self.partial_path) != (n, dim):
            self._forget_progress()
            _create_npy(self.partial_path, (n, dim))

    def open(self, n: int, dim: int, rows: tuple[int, int] | None = None) -> tuple[int, list[dict]]:
        """Start (or resume) writing ``n`` rows of ``dim`` floats; return (next row to write, skipped so
        far). ``rows`` = (first, stop): this rank's range under torchrun, in the file rank 0 prepared."""
        first, stop = (0, n) if rows is None else (int(rows[0]), int(rows[1]))
        self._rows = (first, stop)
        self.meta.update(n=n, feature_dim=dim)
        if rows is None:
            self.folder.mkdir(parents=True, exist_ok=True)
        elif not self.partial_path.is_file():
            raise FileNotFoundError(f"{self.partial_path}, which rank 0 created, is not visible here: under "
                                    "torchrun the feature cache (--feature-cache) must be on a filesystem "
                                    "every rank sees.")
        done, skipped = first, []
        try:
            progress = json.loads(self._progress_file().read_text(encoding="utf-8"))
            if (progress.get("n") == n and progress.get("feature_dim") == dim and self.partial_path.is_file()
                    and progress.get("rows", [0, n]) == [first, stop]):
                done, skipped = int(progress["done"]), list(progress["skipped"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            pass
        if rows is None and done == 0:
            self._forget_progress()
            _create_npy(self.partial_path, (n, dim))
        self._offset = _data_offset(self.partial_path)
        self._row_bytes = dim * _DTYPE.itemsize
        self._fd = os.open(self.partial_path, os.O_RDWR)
        return done, skipped

    def write_rows(self, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` (k, dim) at row ``start`` with plain file writes (no mapping: memory stays flat)."""
        data = np.ascontiguousarray(rows, dtype=_DTYPE).tobytes()
        try:
            os.pwrite(self._fd, data, self._offset + start * self._row_bytes)
        except OSError as exc:  # a full disk: one line naming the file, not a bare errno
            raise write_error(self.partial_path, exc, option="--feature-cache") from exc

    def checkpoint(self, done: int, skipped: list[dict]) -> None:
        """Make the first ``done`` rows durable, then record that they are (so a resume can trust them)."""
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise write_error(self.partial_path, exc, option="--feature-cache") from exc
        write_json(self._progress_file(), {"n": self.meta["n"], "feature_dim": self.meta["feature_dim"],
                                           "rows": list(self._rows), "done": done, "skipped": skipped})

    def _progress_file(self) -> Path:
        """``progress.json`` when this process writes every row, else the record of its own range."""
        first, stop = self._rows
        if (first, stop) == (0, self.meta["n"]):
            return self.progress_path
        return self.folder / f"progress.{first}-{stop}.json"

    def _forget_progress(self) -> None:
        for path in self.folder.glob("progress*.json"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def finish(self, skipped: list[dict]) -> tuple[np.ndarray, dict]:
        """Drop the skipped rows (streamed, chunk by chunk), publish ``features.npy``, then ``meta.json``."""
        self.close()
        n, dim = self.meta["n"], self.meta["feature_dim"]
        if skipped:
            drop = np.zeros(n, dtype=bool)
            drop[[s["index"] for s in skipped]] = True
            compact = self.folder / "features.compact.npy"
            _create_npy(compact, (int(n - drop.sum()), dim))
            src_off, dst_off = _data_offset(self.partial_path), _data_offset(compact)
            with open(self.partial_path, "rb") as src, open(compact, "r+b") as dst:
                dst.seek(dst_off)
                step = 4096
                for i in range(0, n, step):
                    src.seek(src_off + i * self._row_bytes)
                    block = np.fromfile(src, dtype=_DTYPE, count=min(step, n - i) * dim).reshape(-1, dim)
                    dst.write(block[~drop[i:i + step]].tobytes())
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(compact, self.features_path)
            self.partial_path.unlink()
        else:
            os.replace(self.partial_path, self.features_path)
        self.meta.update(complete=True, n_kept=n - len(skipped), skipped=skipped, finished=time.time())
        write_json(self.meta_path, self.meta)
        self._forget_progress()
        loaded = self.load()
        assert loaded is not None, "the entry just written must load"
        return loaded

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Delete this entry (after a failure that must leave nothing behind)."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
