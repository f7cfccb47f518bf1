"""The feature cache: one memory-mapped ``.npy`` per (images, backbone weights, preprocessing).

Layout: ``<cache_dir>/<backbone>/<key>/`` holds, while extracting, ``features.partial.npy`` (rows written
in place, in order) and ``progress.json`` (rows done, images skipped; rewritten atomically after the
rows it counts are on disk), and once complete ``features.npy`` and ``meta.json``. An entry counts as
complete only when ``meta.json`` says so and ``features.npy`` has the promised shape, so a killed run is
never mistaken for a finished one; the next run with the same key resumes at the last saved row.

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
    def open(self, n: int, dim: int) -> tuple[int, list[dict]]:
        """Start (or resume) writing ``n`` rows of ``dim`` floats; return (rows done, skipped so far)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        done, skipped = 0, []
        try:
            progress = json.loads(self.progress_path.read_text(encoding="utf-8"))
            if progress.get("n") == n and progress.get("feature_dim") == dim and self.partial_path.is_file():
                done, skipped = int(progress["done"]), list(progress["skipped"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            pass
        if done == 0:
            _create_npy(self.partial_path, (n, dim))
        self._offset = _data_offset(self.partial_path)
        self._row_bytes = dim * _DTYPE.itemsize
        self._fd = os.open(self.partial_path, os.O_RDWR)
        self.meta.update(n=n, feature_dim=dim)
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
        write_json(self.progress_path, {"n": self.meta["n"], "feature_dim": self.meta["feature_dim"],
                                        "done": done, "skipped": skipped})

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
        with contextlib.suppress(FileNotFoundError):
            self.progress_path.unlink()
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
