"""The heap settings that keep a long run's memory from ratcheting up (glibc)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from deepclust import _heap

PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from deepclust._heap import pin_mmap_threshold, release_free_memory

    def anon_kib():
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon"))

    pinned = pin_mmap_threshold() if sys.argv[1] == "pin" else False
    big = np.ones(20 * 2**20 // 8)
    del big  # unpinned glibc now serves blocks up to 20 MiB from its heap
    block = np.ones(6 * 2**20 // 8)
    above = np.ones(1000)  # a live block after it: the heap cannot shrink past it
    before = anon_kib()
    del block
    freed = before - anon_kib()
    release_free_memory()
    print(pinned, freed // 1024, (before - anon_kib()) // 1024)
""")


def _probe(mode: str) -> tuple[bool, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    pinned, freed, trimmed = out.stdout.split()
    return pinned == "True", int(freed), int(trimmed)


@pytest.mark.skipif(_heap._glibc("mallopt") is None, reason="needs glibc (Linux)")
def test_a_freed_large_block_goes_back_to_the_os_once_pinned():
    pinned, freed, _ = _probe("pin")
    assert pinned and freed >= 5  # MiB: its own mapping, unmapped on free
    unpinned, kept, trimmed = _probe("none")
    assert not unpinned and kept < 1  # glibc kept it in the heap...
    assert trimmed >= 5  # ...until malloc_trim gave the free pages back


def test_a_threshold_from_the_environment_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert _heap.pin_mmap_threshold() is False
