"""Where data sets live: the registry of named data sets, their folders, and finding or fetching files."""

from __future__ import annotations

import http.client
import os
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._base import DatasetNotFoundError, ImageDataset
from .download import ChecksumError, download_file, verify_file

ENV_VAR = "DEEPCLUST_DATA"
DEFAULT_ROOT = Path("~/.cache/deepclust")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set's usual download.

    ``splits`` says which splits need it: ``("all",)`` means every split does. ``md5`` or
    ``sha256`` is the published checksum of the file the URL serves; it is checked after each
    download and on the file already at ``filename`` before it is used. ``gunzip_md5`` (``.gz``
    files) is the md5 of the decompressed bytes, so a copy compressed again with other gzip
    settings (another time stamp) is accepted as the same data. A download without a checksum is
    checked by reading the archive to its end instead (see :func:`download.check_archive`).
    """

    filename: str
    url: str
    md5: str | None = None
    splits: tuple[str, ...] = ("all",)
    sha256: str | None = None
    gunzip_md5: str | None = None

    def needed_for(self, split: str) -> bool:
        return split == "all" or "all" in self.splits or split in self.splits

    @property
    def has_checksum(self) -> bool:
        return bool(self.md5 or self.sha256)

    def verify(self, path: Path) -> None:
        """Raise :class:`ChecksumError` if the file at ``path`` is not this download, intact."""
        verify_file(path, md5=self.md5, sha256=self.sha256, gunzip_md5=self.gunzip_md5, url=self.url)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the toolkit knows about a named data set.

    Parameters
    ----------
    name : str
        Registry key and the name of its folder under the data root.
    loader : callable
        ``loader(data_dir=None, *, split="all", download=True, size=None, on_error="skip")``.
    description : str
        One line: what the data is, how many images, and its reference.
    files : tuple of str
        The files of the usual download, as they must lie in the data folder.
    alternatives : tuple of str
        Other layouts the loader accepts (uncompressed files, extracted folders...).
    downloads : tuple of RemoteFile
        Public URLs (with md5 where published) of ``files``; empty when bundled.
    splits : tuple of str
        Splits accepted by ``split=``: ``("train", "test", "all")`` or ``("all",)``.
    locate : callable or None
        ``locate(folder, split)`` returns what the loader reads when the needed files are in
        ``folder``, else None. None for data bundled with a library (nothing to find).
    homepage : str
        Where to read about the data set.
    """

    name: str
    loader: Callable[..., ImageDataset]
    description: str
    files: tuple[str, ...] = ()
    alternatives: tuple[str, ...] = ()
    downloads: tuple[RemoteFile, ...] = ()
    splits: tuple[str, ...] = ("all",)
    locate: Callable[[Path, str], Any] | None = None
    homepage: str = ""

    @property
    def bundled(self) -> bool:
        return self.locate is None


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


def _squash(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def canonical_name(name: str) -> str | None:
    """Registry key for ``name``, ignoring case, '-' and '_' ("Fashion_MNIST" -> "fashion-mnist")."""
    if name in DATASETS:
        return name
    squashed = _squash(name)
    for key in DATASETS:
        if _squash(key) == squashed:
            return key
    return None


def get_spec(name: str) -> DatasetSpec:
    key = canonical_name(name)
    if key is None:
        raise ValueError(f"Unknown data set {name!r}. Known data sets: {', '.join(sorted(DATASETS))}; "
                         "or pass the path of an image folder.")
    return DATASETS[key]


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for data set ``name``, in order; downloads go to the first.

    - ``data_dir`` given: ``data_dir`` itself, then ``data_dir/<name>`` (so both
      ``data_dir=".../mnist"`` and ``data_dir=".../data"`` work);
    - else ``$DEEPCLUST_DATA/<name>`` when that variable is set;
    - else ``~/.cache/deepclust/<name>``.
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [root, root / name]
    env = os.environ.get(ENV_VAR)
    root = Path(env).expanduser() if env else DEFAULT_ROOT.expanduser()
    return [root / name]


def find_local(spec: DatasetSpec, data_dir: str | os.PathLike | None = None, split: str = "all"):
    """What ``spec.locate`` found in the first candidate folder that has the files, else None.

    Every file found that is one of the data set's downloads, under its download name, is checked
    against its checksum first (:meth:`RemoteFile.verify`): a damaged or truncated copy raises
    :class:`ChecksumError` naming it, rather than being read.
    """
    for folder in resolve_data_dir(spec.name, data_dir):
        if folder.is_dir():
            found = spec.locate(folder, split)
            if found is not None:
                verify_found(spec, found, split)
                return found
    return None


def verify_found(spec: DatasetSpec, found: Any, split: str) -> None:
    """Check each download-named file among the paths in ``found`` (what ``spec.locate`` returned)."""
    remotes = {r.filename: r for r in spec.downloads if r.needed_for(split)}
    for path in _paths_in(found):
        remote = remotes.get(path.name)
        if remote is not None and path.is_file():
            remote.verify(path)


def _paths_in(found: Any) -> list[Path]:
    """The Path objects inside a locate result (a Path, or tuples, lists and dicts holding them)."""
    if isinstance(found, Path):
        return [found]
    if isinstance(found, dict):
        found = list(found.values())
    if isinstance(found, (list, tuple)):
        return [p for item in found for p in _paths_in(item)]
    return []


def fetch(spec: DatasetSpec, data_dir: str | os.PathLike | None, split: str, download: bool):
    """Find the files a split needs; download the missing ones when allowed.

    Returns whatever ``spec.locate`` returns. Raises :class:`DatasetNotFoundError` when the
    files are absent and cannot be downloaded (``download=False``, offline, server error).
    """
    found = find_local(spec, data_dir, split)
    if found is not None:
        return found
    folders = resolve_data_dir(spec.name, data_dir)
    if not download:
        raise not_found(spec, folders, split, "download=False, so nothing was downloaded; pass "
                        "download=True to fetch the files.")
    dest = folders[0]
    for remote in spec.downloads:
        if not remote.needed_for(split) or (dest / remote.filename).is_file():
            continue
        try:
            download_file(remote.url, dest / remote.filename, md5=remote.md5, sha256=remote.sha256)
        except ChecksumError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise not_found(spec, folders, split, f"Downloading {remote.url} failed ({exc}).") from exc
    found = spec.locate(dest, split) if dest.is_dir() else None
    if found is None:
        raise not_found(spec, folders, split, f"The downloaded files in {dest} were not recognised.")
    verify_found(spec, found, split)  # files that were already there; the new ones were checked as they came
    return found


def not_found(spec: DatasetSpec, folders: Sequence[Path], split: str, reason: str) -> DatasetNotFoundError:
    """Build the error that says which files to put where, and where to get them."""
    looked = " and ".join(str(f) for f in folders)
    remotes = [r for r in spec.downloads if r.needed_for(split)]
    needed = [r.filename for r in remotes] or list(spec.files)
    lines = [
        f"Data set {spec.name!r} (split {split!r}) was not found in {looked}. {reason}",
        f"Put these files in {folders[0]}" + (f" (or in {folders[1]})" if len(folders) > 1 else "") + ":",
    ]
    width = max((len(r.filename) for r in remotes), default=0)
    for remote in remotes:
        lines.append(f"  {remote.filename.ljust(width)}  from {remote.url}")
    if not remotes:
        lines.extend(f"  {f}" for f in spec.files)
    if spec.alternatives:
        lines.append("Also accepted: " + "; ".join(spec.alternatives) + ".")
    lines.append(f"Or point data_dir= (--data-dir) at the folder that holds them or at its parent; without "
                 f"data_dir, ${ENV_VAR}/{spec.name} (if set) or {DEFAULT_ROOT}/{spec.name} is used.")
    return DatasetNotFoundError("\n".join(lines), name=spec.name, folders=[str(f) for f in folders],
                                files=needed)


def describe_datasets(data_dir: str | os.PathLike | None = None) -> str:
    """A plain-text table of the known data sets: splits, files needed, folder, and whether found now."""
    rows = [("name", "splits", "found", "folder", "files needed")]
    for spec in DATASETS.values():
        splits = "/".join(spec.splits)
        if spec.bundled:
            rows.append((spec.name, splits, "yes", "(bundled with scikit-learn)", "-"))
            continue
        folders = resolve_data_dir(spec.name, data_dir)
        where = None
        for folder in folders:
            if folder.is_dir() and spec.locate(folder, "all") is not None:
                where = folder
                break
        found = "yes" if where is not None else "no"
        rows.append((spec.name, splits, found, str(where or folders[0]), ", ".join(spec.files)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = []
    for row in rows:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    out.append("")
    out.append("Descriptions:")
    for spec in DATASETS.values():
        out.append(f"  {spec.name}: {spec.description}")
    out.append("")
    out.append("Missing files are downloaded on first use (download=True), into the folder shown. "
               f"Set ${ENV_VAR} or pass --data-dir to use another folder. Any folder of images "
               "(class sub-folders, flat, or train/test) can be loaded by passing its path instead of "
               "a name.")
    return "\n".join(out)
