"""numba's on-disk cache for umap-learn's compiled functions, which umap-learn does not ask for.

umap-learn decorates its fuzzy-set and layout functions with ``numba.njit()`` without ``cache=True``, so
every new process compiles them again: about 13 s of the 34 s default run on the digits
(benchmarks/RESULTS.md, "Where the default run spends its time"). Turning numba's own cache on for those
dispatchers before their first call makes every later process load the machine code instead.

Where the cache goes is numba's choice, as for any ``cache=True`` function: ``NUMBA_CACHE_DIR`` when set,
else the package's ``__pycache__`` when writable, else a per-user cache directory. Cached code is the
code numba compiled, keyed by the function's source, the argument types and the CPU, so a run's results
do not change. Where no cache can be used (no writable directory, a function numba refuses), the function
is compiled as before.
"""

from __future__ import annotations

import os
import sys

#: umap-learn's modules holding the functions a UMAP fit compiles.
UMAP_MODULES = ("umap.umap_", "umap.layouts", "umap.distances", "umap.sparse", "umap.utils")

_done = False


def umap_dispatchers() -> list:
    """umap-learn's module-level numba dispatchers, at most one per Python function.

    Dispatchers made from one Python function (umap's serial and parallel layout epoch) would share one
    cache file whose key ignores numba's options, so one could load the other's code. Of such a group
    only the serial dispatcher is kept (the one deepclust's single-threaded UMAP calls), and none when
    another of the group already caches.
    """
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    found = {}
    for name in UMAP_MODULES:
        module = sys.modules.get(name)
        for value in vars(module).values() if module is not None else ():
            if isinstance(value, Dispatcher):
                found[id(value)] = value
    groups: dict[int, list] = {}
    for dispatcher in found.values():
        groups.setdefault(id(dispatcher.py_func), []).append(dispatcher)
    chosen = []
    for group in groups.values():
        if len(group) == 1:
            chosen.append(group[0])
            continue
        serial = [d for d in group if not d.targetoptions.get("parallel")]
        if len(serial) == 1 and all(isinstance(d._cache, NullCache) for d in group if d is not serial[0]):
            chosen.append(serial[0])
    return chosen


def enable_umap_cache() -> int:
    """Turn numba's on-disk cache on for umap-learn's dispatchers (once per process); how many now cache.

    Call after ``import umap`` and before the first fit. A dispatcher numba cannot cache (no writable
    cache directory, a source file it cannot locate) keeps compiling in memory; nothing is raised.
    ``DEEPCLUST_NUMBA_CACHE=0`` turns this off.
    """
    global _done

    if _done or os.environ.get("DEEPCLUST_NUMBA_CACHE", "1") == "0":
        return 0
    _done = True
    try:
        return sum(cache_dispatcher(dispatcher) for dispatcher in umap_dispatchers())
    except Exception:  # noqa: BLE001 - numba internals of another version: UMAP compiles as it always did
        return 0


def cache_dispatcher(dispatcher) -> bool:
    """Give one numba dispatcher an on-disk cache that never fails a call; whether it now has one.

    A dispatcher that caches already is left as it is (True); where numba finds no usable cache
    directory it keeps compiling in memory (False).
    """
    from numba.core.caching import NullCache

    if not isinstance(dispatcher._cache, NullCache):
        return True  # cache=True already
    try:
        dispatcher._cache = _fallback_cache_class()(dispatcher.py_func)
    except Exception:  # noqa: BLE001 - no cache directory (or any other refusal): compile as before
        return False
    return True


_FALLBACK = None


def _fallback_cache_class() -> type:
    """numba's ``FunctionCache`` (what ``Dispatcher.enable_caching`` installs) that never fails a call:
    a cache file it cannot read is a miss, one it cannot write is skipped (numba would raise both)."""
    global _FALLBACK
    if _FALLBACK is None:
        from numba.core.caching import FunctionCache

        class FallbackFunctionCache(FunctionCache):
            def load_overload(self, sig, target_context):
                try:
                    return super().load_overload(sig, target_context)
                except Exception:  # noqa: BLE001 - unreadable or stale cache: compile
                    return None

            def save_overload(self, sig, data):
                try:
                    super().save_overload(sig, data)
                except Exception:  # noqa: BLE001 - unwritable cache: the compiled code still runs
                    pass

        _FALLBACK = FallbackFunctionCache
    return _FALLBACK


__all__ = ["cache_dispatcher", "enable_umap_cache", "umap_dispatchers"]
