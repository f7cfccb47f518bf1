"""Read selected members of a tar archive in one pass, without extracting it to disk."""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path


def read_tar_members(path: Path, wanted: set[str]) -> dict[str, bytes]:
    """Read the members whose base name is in ``wanted`` from a tar(.gz), in one pass, without extracting."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted and base not in found:
                    found[base] = tar.extractfile(member).read()
                    if len(found) == len(wanted):
                        break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path} is a corrupt or truncated archive ({exc}). Delete it and download it "
                         "again.") from exc
    return found
