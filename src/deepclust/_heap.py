"""Give the heap memory a process has freed back to the operating system (glibc's ``malloc_trim``).

glibc keeps freed blocks (up to 32 MiB each, the limit of its adaptive mmap threshold) in the heap for
reuse. Work that frees and allocates arrays of changing sizes, such as k-means restarts on a million
rows, therefore ratchets resident memory up: a 500,000 x 10 fit with 20 restarts kept 96 MiB it no
longer used (benchmarks/RESULTS.md, issue 14). ``malloc_trim(0)`` returns every free page. Elsewhere
(macOS, musl) this is a no-op.
"""

from __future__ import annotations

import ctypes
import functools
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library the process already runs on
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> None:
    """Return the heap pages this process has freed to the OS (glibc), so a later peak starts lower."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
