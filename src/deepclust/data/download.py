"""Download one file over HTTP(S), and check files against their published checksums.

A download is streamed to a temporary ``.part`` file beside its destination and renamed into place
only when it is complete and checked, so a cut-off or corrupted transfer never leaves a file under
the final name. A file already at its final name is checked against its checksum before use: one
that fails is reported, never used.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tarfile
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import IO

from .._io import atomic_open
from ..progress import progress

_CHUNK = 1 << 20
_USER_AGENT = "deepclust (python urllib)"


class ChecksumError(ValueError):
    """A file's md5 or sha256 differs from the published one, or the file is a damaged archive."""


class DownloadError(OSError):
    """A transfer that broke off, or a file that arrived incomplete; nothing was saved."""


def file_digest(path: str | os.PathLike, algorithm: str = "md5", chunk_size: int = _CHUNK) -> str:
    """Hex digest (``"md5"`` or ``"sha256"``) of a file, read in chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: str | os.PathLike, chunk_size: int = _CHUNK) -> str:
    """Hex md5 digest of a file, read in chunks."""
    return file_digest(path, "md5", chunk_size)


def _expected(md5: str | None, sha256: str | None) -> dict[str, str]:
    return {name: value.lower() for name, value in (("sha256", sha256), ("md5", md5)) if value}


def check_archive(f: IO[bytes], name: str) -> bool:
    """Read the whole archive in ``f`` (a binary file open for reading) to prove it is complete.

    The kind is told by ``name``: ``.gz`` (gzip's CRC and length trailer), ``.zip`` (every
    member's CRC), ``.tar``/``.tar.gz``/``.tgz`` (gzip trailer and every tar header) and
    ``.h5``/``.hdf5`` (HDF5 records its own end of file). Returns False for other kinds, which
    cannot be checked; raises ValueError when the archive is truncated or damaged.
    """
    lower = name.lower()
    try:
        if lower.endswith((".gz", ".tgz")):
            f.seek(0)
            with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                while gz.read(_CHUNK):
                    pass
        if lower.endswith((".tar", ".tar.gz", ".tgz")):
            f.seek(0)
            with tarfile.open(fileobj=f, mode="r:*") as tar:
                for _ in tar:
                    pass
            return True
        if lower.endswith(".gz"):
            return True
        if lower.endswith(".zip"):
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"member {bad} fails its CRC check")
            return True
        if lower.endswith((".h5", ".hdf5")):
            try:
                import h5py
            except ImportError:  # an optional dependency: without it the file cannot be checked
                return False
            f.seek(0)
            with h5py.File(f, "r"):
                pass
            return True
    except (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"{name} is truncated or damaged ({exc})") from exc
    return False


# Checks already passed in this process: (path, size, mtime, inode, algorithm, digest). Loading train
# then test, or a data set twice, hashes each file once; a changed file or another checksum misses.
_VERIFIED: set[tuple] = set()


def _stat_key(path: Path) -> tuple:
    st = os.stat(path)
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def remember_verified(path: str | os.PathLike, algorithm: str, digest: str) -> None:
    """Record that ``path``, as it is now, has this digest (e.g. right after a checked download)."""
    _VERIFIED.add((*_stat_key(Path(path)), algorithm, digest.lower()))


def verify_file(path: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
                gunzip_md5: str | None = None, url: str | None = None) -> None:
    """Check a file that is already at its final name; raise :class:`ChecksumError` if it fails.

    The file must match ``md5`` or ``sha256``, or, for a ``.gz`` file with ``gunzip_md5``, its
    decompressed bytes must match that (the same data compressed again, with another time stamp,
    is the same data). The error names the file, both checksums and the fix. Without a checksum
    there is nothing to compare: the loaders read such files whole and name them if they are damaged.
    """
    expected = _expected(md5, sha256)
    if not expected:
        return
    path = Path(path)
    key = _stat_key(path)
    algorithm, want = next(iter(expected.items()))
    checks = [(algorithm, want)] + ([("gunzip-md5", gunzip_md5.lower())] if gunzip_md5 else [])
    if any((*key, *check) in _VERIFIED for check in checks):
        return
    got = file_digest(path, algorithm)
    if got == want:
        _VERIFIED.add((*key, algorithm, want))
        return
    if gunzip_md5 and _gunzip_md5(path) == gunzip_md5.lower():
        _VERIFIED.add((*key, "gunzip-md5", gunzip_md5.lower()))
        return
    source = f" (from {url})" if url else ""
    raise ChecksumError(
        f"{path} is not the expected file{source}: its {algorithm} is {got}, expected {want}. It is "
        "damaged, cut off or another version; delete it and run again to download it afresh, or put "
        "a good copy there.")


def _gunzip_md5(path: Path) -> str | None:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(path, "rb") as gz:
            while chunk := gz.read(_CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()


def download_file(url: str, dest: str | os.PathLike, md5: str | None = None, *, sha256: str | None = None,
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    The bytes go to a temporary ``.part`` file beside ``dest``, which is renamed to ``dest``
    only after the whole body arrived and was checked, so an interrupted or corrupted download
    never leaves a half file under the final name. The checks:

    - a ``Content-Length`` the body does not reach is a broken transfer;
    - with ``md5`` or ``sha256``, the checksum must match;
    - without a checksum, an archive (``.gz``, ``.zip``, ``.tar.gz``, ``.h5``) must read to its end
      intact (:func:`check_archive`); any other file is accepted only when the server sent a
      ``Content-Length`` it matched, since without either check a cut-off transfer would pass for a
      complete one and then be used on every later run.

    Raises
    ------
    urllib.error.URLError, OSError, TimeoutError
        The server could not be reached.
    DownloadError
        The transfer broke off, or a file without checksum arrived incomplete.
    ChecksumError
        The file arrived but its checksum is not the expected one.
    """
    dest = Path(dest)
    expected = _expected(md5, sha256)
    digests = {name: hashlib.new(name, usedforsecurity=False) for name in expected}
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.strip().isdigit() else None
        # atomic_open writes ".<name>.<random>.part" beside dest and deletes it if anything raises.
        with atomic_open(dest, "w+b") as out:
            received = 0
            bar = progress(total=total, desc=f"Downloading {dest.name}", unit="B")
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    for digest in digests.values():
                        digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except http.client.IncompleteRead as exc:
                received += len(exc.partial)
                raise DownloadError(f"Download of {url} broke off after {received} of {total or '?'} bytes; "
                                    "nothing was saved. Try again.") from exc
            finally:
                bar.close()
            if total is not None and received != total:
                raise DownloadError(f"Download of {url} broke off: got {received} of {total} bytes; nothing "
                                    "was saved. Try again.")
            for name, want in expected.items():
                got = digests[name].hexdigest()
                if got != want:
                    raise ChecksumError(
                        f"Checksum mismatch for {url}: expected {name} {want}, got {got}. The partial file "
                        f"was deleted. Try again; if it keeps failing the server copy changed or is "
                        f"damaged, so download {dest.name} by hand into {dest.parent}.")
            if not expected:
                out.flush()
                try:
                    checked = check_archive(out, dest.name)
                except ValueError as exc:
                    raise DownloadError(f"Download of {url} arrived incomplete or damaged ({exc}); nothing "
                                        "was saved. Try again.") from exc
                if not checked and total is None:
                    raise DownloadError(
                        f"Download of {url} cannot be checked: the server sent no Content-Length and no "
                        f"checksum is known for {dest.name}, so a cut-off transfer would look complete. "
                        f"Nothing was saved; download it by hand into {dest.parent}.")
    for name, want in expected.items():
        remember_verified(dest, name, want)
    return dest
