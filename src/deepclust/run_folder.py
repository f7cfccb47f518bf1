"""A run folder read as untrusted input: every file checked before it is used.

``deepclust predict`` and ``deepclust report`` read folders that may be damaged, hand-edited or
crafted. Each reader here returns well-formed values or raises :class:`RunFolderError`, a ValueError
whose one line names the file, what is wrong with it and what to do. Files are opened without
following a FIFO or a device into a hang (non-blocking open, then "is it a regular file?"), their
size is bounded, and image paths named by the run are accepted only inside the run's own data root.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .config import flat_options
from .data._registry import canonical_name
from .runs import RunPaths

#: Largest JSON file read from a run folder (config.json of a large run is a few kB).
MAX_JSON_BYTES = 16 * 2**20
#: Largest side, in pixels, of the images a run may ask new images to be decoded at.
MAX_IMAGE_SIDE = 4096
#: Largest image file the report reads to make a thumbnail.
MAX_IMAGE_BYTES = 64 * 2**20
NORMALIZE = (None, "unit", "standard")
_FIX = "rerun 'deepclust run', or restore the file from a copy of the run folder"


class RunFolderError(ValueError):
    """A file of a run folder that is missing, damaged or not what deepclust wrote; names the file."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str = _FIX):
        self.path = Path(path)
        super().__init__(f"{path}: {problem}; {fix}.")


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, *, limit: int) -> Iterator[BinaryIO]:
    """The regular file ``path`` (at most ``limit`` bytes) opened for reading in binary; a FIFO, device or
    folder is refused without blocking on it. For files read a line at a time (assignments.csv of
    millions of rows), which need not be held whole."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise RunFolderError(path, "the file is missing") from None
    except OSError as err:
        raise RunFolderError(path, f"cannot be opened ({err.strerror or err})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RunFolderError(path, "is not a regular file (a folder, FIFO or device)")
        if info.st_size > limit:
            raise RunFolderError(path, f"is {info.st_size} bytes, more than the {limit} this file may hold")
        with os.fdopen(fd, "rb", closefd=False) as f:
            yield f
    except OSError as err:
        raise RunFolderError(path, f"cannot be read ({err.strerror or err})") from None
    finally:
        os.close(fd)


def read_regular(path: str | os.PathLike, *, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``); a FIFO, device or folder is refused
    without blocking on it."""
    with open_regular(path, limit=limit) as f:
        return f.read(limit + 1)


def read_json(path: str | os.PathLike, kind: type = dict, *, required: bool = True):
    """The JSON value in ``path``, which must be a ``kind``; None when absent and not ``required``."""
    path = Path(path)
    if not required and not os.path.lexists(path):
        return None
    raw = read_regular(path, limit=MAX_JSON_BYTES)
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise RunFolderError(path, f"is not valid JSON ({err})") from None
    if not isinstance(value, kind):
        raise RunFolderError(path, f"holds a JSON {type(value).__name__}, not the {kind.__name__} "
                                   "deepclust writes")
    return value


def read_status(paths: RunPaths) -> str:
    """The run's status ("complete", "running", ...) from status.json; "unknown" when there is none."""
    if not os.path.lexists(paths.status):
        return "unknown"
    status = read_json(paths.status).get("status")
    if not isinstance(status, str):
        raise RunFolderError(paths.status, "has no \"status\" string")
    return status


def read_config(paths: RunPaths) -> dict:
    """config.json, checked to name a known method (its options are only used through RunConfig)."""
    from .traits import method_names

    known = method_names()
    if not os.path.lexists(paths.config):
        raise FileNotFoundError(f"{paths.root} is not a deepclust run folder: it has no {paths.config.name}. "
                                "Pass a folder written by 'deepclust run'.")
    saved = read_json(paths.config)
    flat = flat_options(saved)
    method = flat.get("method")
    if not isinstance(method, str):
        raise RunFolderError(paths.config, "names no method (\"method\": {\"name\": ...})")
    if method not in known:
        raise RunFolderError(paths.config, f"names an unknown method {method!r} (known: {', '.join(known)})")
    for key in ("dataset", "data_dir"):
        if flat.get(key) is not None and not isinstance(flat[key], str):
            raise RunFolderError(paths.config, f"has a {key} that is not a string: {flat[key]!r}")
    return saved


def read_class_mappings(paths: RunPaths) -> dict[int, str | None] | None:
    """cluster -> class name from class_mappings.json's "mapping"; None when the run has none."""
    saved = read_json(paths.class_mappings, required=False)
    if saved is None:
        return None
    mapping = saved.get("mapping")
    if not isinstance(mapping, dict):
        raise RunFolderError(paths.class_mappings, "has no \"mapping\" object of cluster -> class name")
    out: dict[int, str | None] = {}
    for key, name in mapping.items():
        try:
            cluster = int(key)
        except ValueError:
            raise RunFolderError(paths.class_mappings, f"maps {key!r}, not a cluster number") from None
        if name is not None and not isinstance(name, str):
            raise RunFolderError(paths.class_mappings, f"maps cluster {key} to {name!r}, not a name or null")
        out[cluster] = name
    return out


def check_preprocessing(d: dict, path: str | os.PathLike) -> dict:
    """``d`` (preprocessing.json) with every field checked, sizes bounded by :data:`MAX_IMAGE_SIDE`."""
    def bad(problem: str) -> RunFolderError:
        return RunFolderError(path, problem)

    size = d.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        raise bad(f"image_size must be [height, width] in pixels; got {size!r}")
    if not all(1 <= v <= MAX_IMAGE_SIDE for v in size):
        raise bad(f"image_size {size} is outside 1..{MAX_IMAGE_SIDE} pixels per side")
    if d.get("channels") not in (1, 3) or isinstance(d.get("channels"), bool):
        raise bad(f"channels must be 1 or 3; got {d.get('channels')!r}")
    for key in ("grayscale", "flatten"):
        if not isinstance(d.get(key), bool):
            raise bad(f"{key} must be true or false; got {d.get(key)!r}")
    if d.get("normalize") not in NORMALIZE:
        raise bad(f"normalize must be \"unit\", \"standard\" or null; got {d.get('normalize')!r}")
    n_stats = 1 if d["grayscale"] else d["channels"]
    for key in ("mean", "std"):
        value = d.get(key)
        if value is None:
            if d["normalize"] == "standard":
                raise bad(f"normalize is \"standard\" but {key} is missing")
            continue
        if not (isinstance(value, list) and len(value) == n_stats
                and all(_is_number(v) and math.isfinite(v) for v in value)):
            raise bad(f"{key} must be {n_stats} finite numbers; got {value!r}")
        if key == "std" and not all(v > 0 for v in value):
            raise bad(f"std must be positive; got {value!r}")
    backbone = d.get("backbone")
    if backbone is not None and not (isinstance(backbone, dict)
                                     and isinstance(backbone.get("backbone"), str)):
        raise bad("backbone must be null or an object naming the backbone")
    return d


def read_array(path: str | os.PathLike, *, ndim: int | None = None, finite: bool = True,
               required: bool = True, limit: int = 2**31, mapped: bool = False) -> np.ndarray | None:
    """A .npy array of numbers (never pickled objects), checked for shape and NaN.

    ``mapped=True`` maps the file read-only instead of reading it (an (N, d) embedding of millions of
    images; pages are read as used). Check ``finite`` only where the whole array is needed anyway."""
    path = Path(path)
    if not required and not os.path.lexists(path):
        return None
    import io

    try:
        if mapped:
            with open_regular(path, limit=limit) as f:
                array = _map_npy(f)
        else:
            array = np.load(io.BytesIO(read_regular(path, limit=limit)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        if isinstance(err, RunFolderError):
            raise
        raise RunFolderError(path, f"is not a readable .npy array ({err})") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise RunFolderError(path, f"holds {array.dtype} values, not numbers")
    if ndim is not None and array.ndim != ndim:
        raise RunFolderError(path, f"has shape {array.shape}; expected a {ndim}-D array")
    if array.size == 0:
        raise RunFolderError(path, "is empty")
    if finite and not np.isfinite(array).all():
        raise RunFolderError(path, "holds NaN or infinite values")
    return array


def _map_npy(f) -> np.ndarray:
    """The .npy file open as ``f`` mapped read-only, from its header (np.load maps only by name; mapping
    the file already opened and checked leaves no window for another file to take its place)."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not mapped; numpy writes 1.0")
    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject:
        raise ValueError("it holds Python objects, which are never unpickled")
    if not shape or 0 in shape:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(f, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=f.tell())


def data_root(config: dict | None) -> Path | None:
    """The folder the run's images came from (an image folder's path, or ``data_dir``), resolved;
    None for a named data set without a data_dir (its images are not files)."""
    flat = flat_options(config)
    dataset, data_dir = flat.get("dataset"), flat.get("data_dir")
    for candidate in (dataset if isinstance(dataset, str) and canonical_name(dataset) is None else None,
                      data_dir if isinstance(data_dir, str) else None):
        if candidate:
            try:
                return Path(candidate).expanduser().resolve()
            except (OSError, RuntimeError, ValueError):
                continue
    return None


def inside(root: Path | None, path: str | os.PathLike) -> Path | None:
    """``path`` resolved (relative paths against ``root``) when it lies inside ``root``, else None."""
    if root is None or not str(path):
        return None
    try:
        resolved = (root / Path(path).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return resolved if resolved == root or root in resolved.parents else None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = ["MAX_IMAGE_SIDE", "RunFolderError", "check_preprocessing", "data_root", "inside", "open_regular",
           "read_array", "read_class_mappings", "read_config", "read_json", "read_regular", "read_status"]
