"""Internal metrics: silhouette and Dunn's index, exact (against sklearn / brute force) and sampled."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sklearn.metrics
import torch
from scipy.spatial.distance import cdist
from sklearn.datasets import make_blobs
from sklearn.metrics import silhouette_score as sklearn_silhouette

import deepclust.metrics.internal as internal
from deepclust.metrics import dunn_index, dunn_report, silhouette_report, silhouette_score


def blobs(n: int, k: int, d: int = 5, seed: int = 0, singletons: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs in float32 with ``singletons`` extra one-point clusters (ids k, k+1, ...)."""
    X, y = make_blobs(n_samples=n, centers=k, n_features=d, cluster_std=1.5, random_state=seed)
    y[:singletons] = k + np.arange(singletons)
    return X.astype(np.float32), y


def brute_force_dunn(X: np.ndarray, y: np.ndarray) -> float:
    D = cdist(X.astype(np.float64), X.astype(np.float64))
    same = y[:, None] == y[None, :]
    return D[~same].min() / D[same].max()


# ------------------------------------------------------------------------------------- exact values


@pytest.mark.parametrize("n, k, singletons", [(10, 2, 0), (57, 3, 1), (300, 5, 2), (1200, 8, 3), (40, 12, 5)])
def test_exact_silhouette_equals_sklearn(n, k, singletons):
    X, y = blobs(n, k, singletons=singletons, seed=n)
    report = silhouette_report(X, y, sample_size=None)
    assert report == {"value": pytest.approx(sklearn_silhouette(X, y), abs=1e-5), "exact": True,
                      "sample_size": None, "std_error": None}
    # Small inputs are exact under "auto" as well.
    assert silhouette_score(X, y) == report["value"]


@pytest.mark.parametrize("block_floats", [7 * 8, 7 * 64])  # 8 or 64 points per block of d + 2 = 7 floats
def test_silhouette_in_blocks_of_points_equals_sklearn(monkeypatch, block_floats):
    # The pass over all N points a block at a time (so memory does not grow with N): rows fall in every
    # block, some blocks miss clusters, a singleton cluster lies in one block.
    monkeypatch.setattr(internal, "_BLOCK_ELEMENTS", block_floats)
    X, y = blobs(301, 6, singletons=2, seed=3)
    assert internal._column_block(301, 5) < 301
    report = silhouette_report(X, y, sample_size=None)
    assert report["value"] == pytest.approx(sklearn_silhouette(X, y), abs=1e-5)
    sampled = silhouette_report(X, y, sample_size=40, random_state=1)
    rows = np.sort(np.random.default_rng(1).choice(301, size=40, replace=False))
    expected = sklearn.metrics.silhouette_samples(X, y)[rows].mean()
    assert sampled["value"] == pytest.approx(expected, abs=1e-5)


def test_silhouette_handles_arbitrary_ids_images_and_tensors():
    X, y = blobs(90, 3, d=12, seed=1)
    expected = sklearn_silhouette(X, y)
    images = torch.from_numpy(X.reshape(90, 3, 2, 2))
    assert silhouette_score(images, torch.from_numpy(y * 10 - 4)) == pytest.approx(expected, abs=1e-5)


def test_silhouette_of_duplicate_points_is_zero_like_sklearn():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    y = np.array([0, 1, 1, 0])
    assert silhouette_score(X, y) == pytest.approx(sklearn_silhouette(X, y), abs=1e-7)


@pytest.mark.parametrize("n, k, singletons", [(10, 2, 0), (80, 3, 1), (400, 6, 2), (50, 10, 6)])
def test_exact_dunn_equals_brute_force(n, k, singletons):
    X, y = blobs(n, k, seed=n, singletons=singletons)
    report = dunn_report(X, y, sample_size=None)
    assert report == {"value": pytest.approx(brute_force_dunn(X, y), rel=1e-6), "exact": True,
                      "sample_size": None}
    assert dunn_index(X, y) == report["value"]


def test_dunn_toy_case_worked_by_hand():
    # Cluster 0: (0,0), (0,3) -> diameter 3.  Cluster 1: (4,0), (4,1) -> diameter 1.
    # Closest pair across clusters: (0,0)-(4,0) at distance 4.  Dunn = 4 / 3.
    X = np.array([[0.0, 0.0], [0.0, 3.0], [4.0, 0.0], [4.0, 1.0]])
    assert dunn_index(X, [0, 0, 1, 1]) == pytest.approx(4 / 3, abs=1e-12)


def test_dunn_recomputes_near_duplicate_pairs_in_float64():
    # Two points 1e-3 apart far from the origin: float32 ||x||^2 - 2x.y + ||y||^2 alone cannot see 1e-3.
    X = np.array([[1000.0, 0.0], [1000.0, 0.001], [1000.0, -5.0], [1000.0, 5.0]], dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    assert dunn_index(X, y) == pytest.approx(brute_force_dunn(X, y), rel=1e-6)


def test_dunn_edge_values():
    # Clusters of identical points, apart: every diameter is 0, so the index is infinite.
    X = np.array([[0.0], [0.0], [1.0], [1.0]])
    assert dunn_index(X, [0, 0, 1, 1]) == float("inf")
    # A point shared by two clusters: no separation at all.
    assert dunn_index(np.array([[0.0], [0.0], [1.0], [2.0]]), [0, 1, 1, 0]) == 0.0


@pytest.mark.parametrize("metric", [silhouette_score, dunn_index])
def test_chunk_size_does_not_change_the_result(metric):
    X, y = blobs(333, 4, d=6, seed=3, singletons=1)
    values = [metric(X, y, sample_size=None, chunk_size=c) for c in (1, 7, 64, 332, 10_000, None)]
    assert values == pytest.approx([values[0]] * len(values), rel=1e-6, abs=1e-7)


def test_segment_reduce_on_devices_matches_numpy():
    # The GPU path uses torch.segment_reduce; check it against numpy's reduceat on the CPU.
    D = torch.rand(5, 11)
    starts = np.array([0, 3, 4, 9])
    for op in ("sum", "min", "max"):
        np.testing.assert_allclose(internal._segment_reduce_torch(D, starts, op),
                                   internal._segment_reduce(D, starts, op), rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    X, y = blobs(500, 5, seed=5, singletons=1)
    assert silhouette_score(X, y, device="cuda") == pytest.approx(silhouette_score(X, y), abs=1e-5)
    assert dunn_index(X, y, device="cuda") == pytest.approx(dunn_index(X, y), rel=1e-6)


# ------------------------------------------------------------------------------------- sampling


def test_sampled_silhouette_is_close_to_exact_and_says_so():
    X, y = blobs(20_000, 6, d=4, seed=7, singletons=2)
    exact = silhouette_report(X, y, sample_size=None)
    sampled = silhouette_report(X, y, sample_size=2000, random_state=0)
    assert sampled["exact"] is False and sampled["sample_size"] == 2000
    assert abs(sampled["value"] - exact["value"]) < 0.02
    assert 0 < sampled["std_error"] < 0.02
    assert abs(sampled["value"] - exact["value"]) < 5 * sampled["std_error"]
    # The same seed gives the same sample.
    assert silhouette_report(X, y, sample_size=2000, random_state=0) == sampled


def test_auto_sample_size_follows_the_cost_budget(monkeypatch):
    X, y = blobs(3000, 3, d=8, seed=2)
    assert silhouette_report(X, y)["exact"] is True
    assert dunn_report(X, y)["exact"] is True
    # With a budget of 1500 rows x N x (d + 64): the silhouette samples 1500 rows.
    monkeypatch.setattr(internal, "EXACT_COST_BUDGET", 1500 * 3000 * (8 + internal._PAIR_OVERHEAD))
    report = silhouette_report(X, y)
    assert report["exact"] is False and report["sample_size"] == 1500
    # Dunn takes m points with m^2 / 2 pairs in budget: m = sqrt(2 * 1500 * 3000) = 3000 -> exact.
    assert dunn_report(X, y)["exact"] is True
    # A tiny budget still samples at least 1000 rows / points.
    monkeypatch.setattr(internal, "EXACT_COST_BUDGET", 1.0)
    assert silhouette_report(X, y)["sample_size"] == 1000
    assert dunn_report(X, y)["sample_size"] == pytest.approx(1000, abs=3)


def test_forced_sample_larger_than_data_is_exact():
    X, y = blobs(100, 3, seed=0)
    assert silhouette_report(X, y, sample_size=500)["exact"] is True
    assert dunn_report(X, y, sample_size=500)["exact"] is True


def test_sampled_dunn_is_stratified_and_never_below_exact():
    X, y = blobs(2000, 5, seed=4, singletons=1)
    exact = dunn_index(X, y, sample_size=None)
    for seed in range(3):
        report = dunn_report(X, y, sample_size=300, random_state=seed)
        assert report["exact"] is False
        assert report["sample_size"] == pytest.approx(300, abs=6)
        # A subsample's separation can only grow and its diameters only shrink.
        assert report["value"] >= exact * (1 - 1e-9)
    data = internal._prepare(X, y, "test")
    picked = internal._stratified_rows(data, 300, np.random.default_rng(0))
    assert np.all(np.diff(data.codes[picked]) >= 0)  # grouped by cluster
    per_cluster = np.bincount(data.codes[picked], minlength=data.counts.size)
    assert np.all(per_cluster >= np.minimum(data.counts, 2))  # the singleton is kept
    big = data.counts > 100
    np.testing.assert_allclose(per_cluster[big] / data.counts[big], 0.15, atol=0.01)


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("metric", [silhouette_score, dunn_index])
@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3]])
def test_needs_two_to_n_minus_one_clusters(metric, labels):
    X = np.arange(8.0).reshape(4, 2)
    with pytest.raises(ValueError, match=r"needs 2 <= n_clusters <= n_samples - 1; got n_clusters=\d for "
                                         r"n_samples=4"):
        metric(X, labels)


@pytest.mark.parametrize("metric", [silhouette_score, dunn_index])
def test_bad_inputs_raise_clear_value_errors(metric):
    X = np.arange(12.0).reshape(6, 2)
    y = [0, 0, 1, 1, 2, 2]
    X_nan = X.copy()
    X_nan[2, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinite values"):
        metric(X_nan, y)
    with pytest.raises(ValueError, match="6 labels for 5 samples"):
        metric(X[:5], y)
    with pytest.raises(ValueError, match="labels must be 1-D"):
        metric(X, np.array(y)[:, None])
    with pytest.raises(ValueError, match="X must be 2-D"):
        metric(X[:, 0], y)
    for bad in ("all", 0, -3, 2.5, True):
        with pytest.raises(ValueError, match="sample_size must be 'auto', None"):
            metric(X, y, sample_size=bad)
    with pytest.raises(ValueError, match="chunk_size must be None"):
        metric(X, y, chunk_size=0)


# ------------------------------------------------------------------------------------- memory


def test_no_n_by_n_matrix_is_ever_allocated():
    # Exact silhouette and Dunn on N = 20,000 points: an N x N float32 matrix would take 1.6 GB. A fresh
    # process measures its peak resident memory (ru_maxrss) before and after; with row blocks of about 1M
    # distances the growth is tens of MB (at most 64 MiB per block). A 512 MB threshold separates the two.
    script = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from deepclust.metrics import dunn_report, silhouette_report

        def peak_mb():
            scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 2**10  # bytes on macOS, KiB on Linux
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

        rng = np.random.default_rng(0)
        X = rng.normal(size=(20_000, 3)).astype(np.float32)
        y = rng.integers(0, 5, 20_000)
        silhouette_report(X[:50], y[:50], sample_size=None)  # load lazy libraries before the baseline
        before = peak_mb()
        s = silhouette_report(X, y, sample_size=None)
        d = dunn_report(X, y, sample_size=None)
        assert s["exact"] and d["exact"] and np.isfinite(s["value"]) and np.isfinite(d["value"])
        print(peak_mb() - before)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    growth_mb = float(result.stdout.strip().splitlines()[-1])
    assert growth_mb < 512, f"peak memory grew by {growth_mb:.0f} MB"
