"""numba's on-disk cache for umap-learn's functions: a second process loads the code, and nothing fails
where the cache cannot be used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from numba.core import caching

from deepclust.manifold import _numba_cache as numba_cache
from deepclust.manifold._numba_cache import cache_dispatcher, umap_dispatchers

# One of the functions a UMAP fit compiles (the fuzzy set's bandwidths), called on tiny input in a fresh
# process that caches into argv[1]; it prints numba's cache hits and misses and the result's bytes.
_CHILD = """
import json, sys
import numpy as np
import numba
import umap.umap_
numba.config.CACHE_DIR = sys.argv[1]  # after import: pynndescent keeps its own cache
from deepclust.manifold._numba_cache import enable_umap_cache
enable_umap_cache()
f = umap.umap_.smooth_knn_dist
distances = np.sort(np.random.default_rng(0).random((40, 6)), axis=1).astype(np.float32)
sigmas, rhos = f(distances, 6.0)
print(json.dumps({"hits": sum(f.stats.cache_hits.values()), "misses": sum(f.stats.cache_misses.values()),
                  "result": sigmas.tobytes().hex() + rhos.tobytes().hex()}))
"""


def _child(cache_dir: Path, **env) -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    environ = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(cache_dir)], env=environ, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_umap_code_from_the_cache(tmp_path):
    first = _child(tmp_path)
    assert (first["hits"], first["misses"]) == (0, 1)  # compiled, then written
    assert list(tmp_path.rglob("umap_.smooth_knn_dist-*.nbi"))
    second = _child(tmp_path)
    assert (second["hits"], second["misses"]) == (1, 0)  # loaded, not compiled
    assert second["result"] == first["result"]  # the cached code computes the same bits


def test_the_cache_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(numba_cache, "_done", False)
    monkeypatch.setenv("DEEPCLUST_NUMBA_CACHE", "0")
    assert numba_cache.enable_umap_cache() == 0


def test_umaps_fit_functions_are_cached_but_never_two_from_one_function():
    import umap.layouts  # noqa: F401 - defines the dispatchers

    chosen = umap_dispatchers()
    names = {d.py_func.__name__ for d in chosen}
    assert {"smooth_knn_dist", "compute_membership_strengths", "fast_knn_indices",
            "_optimize_layout_euclidean_single_epoch"} <= names
    # the serial and parallel layout epochs share a Python function, hence a cache file: only the serial
    layout = [d for d in chosen if d.py_func.__name__ == "_optimize_layout_euclidean_single_epoch"]
    assert len(layout) == 1 and not layout[0].targetoptions.get("parallel")
    assert len({id(d.py_func) for d in chosen}) == len(chosen)


def _add_one(x):
    return x + 1.0


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    return tmp_path


def test_a_dispatcher_reads_back_what_another_cached(cache_dir):
    first = numba.njit(_add_one)
    assert cache_dispatcher(first)
    assert first(np.float64(1.0)) == 2.0
    second = numba.njit(_add_one)
    assert cache_dispatcher(second)
    assert second(np.float64(1.0)) == 2.0
    assert sum(second.stats.cache_hits.values()) == 1


def test_no_usable_cache_directory_means_compiling_as_before(cache_dir, monkeypatch):
    def refuse(self):
        raise PermissionError("read-only")

    monkeypatch.setattr(caching._CacheLocator, "ensure_cache_path", refuse)
    dispatcher = numba.njit(_add_one)
    assert not cache_dispatcher(dispatcher)
    assert isinstance(dispatcher._cache, caching.NullCache)
    assert dispatcher(np.float64(2.0)) == 3.0


def test_a_cache_that_cannot_be_written_or_read_never_fails_the_call(cache_dir, monkeypatch):
    def refuse(self, key, data):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(caching.IndexDataCacheFile, "save", refuse)
        dispatcher = numba.njit(_add_one)
        assert cache_dispatcher(dispatcher)
        assert dispatcher(np.float64(3.0)) == 4.0
    writer = numba.njit(_add_one)
    cache_dispatcher(writer)
    writer(np.float64(0.0))
    for index in cache_dir.rglob("*.nbi"):
        index.write_bytes(b"not a numba index")  # a corrupt cache file
    reader = numba.njit(_add_one)
    assert cache_dispatcher(reader)
    assert reader(np.float64(4.0)) == 5.0


def test_numba_internals_that_differ_leave_umap_compiling(monkeypatch):
    """A numba whose internals moved (the cache classes used here) must not break UMAP: no cache, no error."""
    def moved():
        raise ImportError("cannot import name 'NullCache'")

    monkeypatch.setattr(numba_cache, "_done", False)
    monkeypatch.setattr(numba_cache, "umap_dispatchers", moved)
    assert numba_cache.enable_umap_cache() == 0
