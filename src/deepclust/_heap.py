"""Keep the heap from holding memory the process has freed (glibc; elsewhere these are no-ops).

glibc serves a large allocation with its own mapping, returned to the OS when freed, but after each such
free it raises that size threshold (up to 32 MiB) and serves later blocks of that size from its heap,
where freed blocks stay. Work that allocates and frees arrays of changing sizes (k-means restarts, the
distance tiles of the metrics) then ratchets resident memory up: scoring 1,000,000 points kept 104-117 MiB
it no longer used, and a 500,000 x 10 k-means with 20 restarts 96 MiB (benchmarks/RESULTS.md, issue 14).

- :func:`pin_mmap_threshold` fixes the threshold (the command line does, at 4 MiB): blocks from 4 MiB
  up always get their own mapping, so freeing them gives the memory back. No slower on a training run.
- :func:`release_free_memory` (``malloc_trim``) returns the heap's free pages now.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 4 * 2**20


@functools.cache
def _glibc(name: str):
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)  # the C library the process already runs on
    except (OSError, AttributeError):  # not glibc
        return None


def pin_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Give every allocation of ``nbytes`` or more its own mapping from now on (glibc's
    ``M_MMAP_THRESHOLD``, which also stops it adapting). A threshold the user set in the environment
    (``MALLOC_MMAP_THRESHOLD_``) is left alone. Returns whether it was set."""
    mallopt = _glibc("mallopt")
    if mallopt is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, int(nbytes)))


def release_free_memory() -> None:
    """Return the heap pages this process has freed to the OS (glibc), so a later peak starts lower."""
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)
