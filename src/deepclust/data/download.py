"""Download one file over HTTP(S): streamed, checksummed and renamed into place only when complete."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from .._io import atomic_open
from ..progress import progress

_CHUNK = 1 << 20
_USER_AGENT = "deepclust (python urllib)"


class ChecksumError(ValueError):
    """A downloaded file's md5 differs from the published one."""


def md5sum(path: str | os.PathLike, chunk_size: int = _CHUNK) -> str:
    """Hex md5 digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: str | os.PathLike, md5: str | None = None, *,
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    The bytes go to a temporary ``.part`` file beside ``dest``, which is renamed to ``dest``
    only after the whole body arrived and (when ``md5`` is given) its checksum matched, so
    an interrupted or corrupted download never leaves a half file under the final name.

    Parameters
    ----------
    url : str
        HTTP(S) address.
    dest : path
        Final file path; its folder is created if needed.
    md5 : str, optional
        Expected hex md5; a mismatch deletes the partial file and raises :class:`ChecksumError`.
    timeout : float, default=60
        Seconds to wait for the server to connect or send the next bytes.

    Raises
    ------
    urllib.error.URLError, OSError, TimeoutError
        The server could not be reached or the transfer broke off.
    ChecksumError
        The file arrived but its md5 is not the expected one.
    """
    dest = Path(dest)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        # atomic_open writes ".<name>.<random>.part" beside dest and deletes it if anything raises.
        with atomic_open(dest, "wb") as out:
            received = 0
            bar = progress(total=total, desc=f"Downloading {dest.name}", unit="B")
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
            if total is not None and received != total:
                raise OSError(f"Download of {url} broke off: got {received} of {total} bytes.")
            got = digest.hexdigest()
            if md5 is not None and got != md5.lower():
                raise ChecksumError(
                    f"Checksum mismatch for {url}: expected md5 {md5}, got {got}. The partial file was "
                    f"deleted. Try again; if it keeps failing the server copy changed or is damaged, so "
                    f"download {dest.name} by hand into {dest.parent}."
                )
    return dest
