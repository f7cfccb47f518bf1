"""Tests of deepclust.cluster.KMeans: correctness against scikit-learn and brute force, errors, memmaps."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.base import clone
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from deepclust.cluster import KMeans, _lloyd

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


# ----------------------------------------------------------------------------------------------- helpers
def brute_inertia(X, labels, centers) -> float:
    """Sum of squared distances to the assigned centre, in float64, straight from the definition."""
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    diff = X - np.asarray(centers, dtype=np.float64)[labels]
    return float(np.einsum("ij,ij->", diff, diff))


def reference_lloyd(X, centers, max_iter=300):
    """Textbook Lloyd in float64 numpy: assign, then move each centre to its cluster mean, until stable."""
    X = X.astype(np.float64)
    centers = centers.astype(np.float64)
    labels = None
    for _ in range(max_iter):
        new = cdist(X, centers, "sqeuclidean").argmin(axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        assert np.bincount(labels, minlength=len(centers)).min() > 0, "reference has no empty-cluster repair"
        centers = np.stack([X[labels == j].mean(axis=0) for j in range(len(centers))])
    return labels, centers


def clustering_accuracy(y_true, y_pred) -> float:
    """Best one-to-one match of clusters to classes (Hungarian), as in the deep-clustering literature."""
    k = max(y_true.max(), y_pred.max()) + 1
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (y_pred, y_true), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / y_true.size


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=1200, n_features=6, centers=5, cluster_std=0.6, random_state=3)
    return X.astype(np.float32), y


# --------------------------------------------------------------------------------- well-separated blobs
@pytest.mark.parametrize("backend", ["torch", "sklearn", "faiss"])
def test_blobs_each_backend(blobs, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    X, y = blobs
    km = KMeans(n_clusters=5, backend=backend, random_state=0).fit(X)
    assert adjusted_rand_score(y, km.labels_) == 1.0
    assert km.cluster_centers_.shape == (5, 6) and km.cluster_centers_.dtype == np.float32
    assert km.labels_.shape == (1200,) and km.labels_.dtype == np.int64
    assert km.n_features_in_ == 6
    np.testing.assert_allclose(km.inertia_, brute_inertia(X, km.labels_, km.cluster_centers_), rtol=1e-5)
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    np.testing.assert_allclose(km.score(X), -km.inertia_, rtol=1e-5)


def test_blobs_minibatch(blobs):
    X, y = blobs
    km = KMeans(n_clusters=5, algorithm="minibatch", batch_size=200, max_iter=20, random_state=0).fit(X)
    assert adjusted_rand_score(y, km.labels_) == 1.0
    np.testing.assert_allclose(km.inertia_, brute_inertia(X, km.labels_, km.cluster_centers_), rtol=1e-5)
    np.testing.assert_array_equal(km.predict(X), km.labels_)


def test_transform_matches_cdist(blobs):
    X, _ = blobs
    km = KMeans(n_clusters=5, random_state=0).fit(X)
    D = km.transform(X[:300])
    assert D.shape == (300, 5) and D.dtype == np.float32
    ref = cdist(X[:300].astype(np.float64), km.cluster_centers_.astype(np.float64))
    np.testing.assert_allclose(D, ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(D.argmin(axis=1), km.labels_[:300])
    assert KMeans(n_clusters=5, random_state=0).fit_transform(X).shape == (1200, 5)


def test_fit_predict_equals_labels(blobs):
    X, _ = blobs
    km = KMeans(n_clusters=5, random_state=1)
    np.testing.assert_array_equal(km.fit_predict(X), km.labels_)


# ---------------------------------------------------------------------------------- Lloyd correctness
@pytest.mark.parametrize("n, d, k, kind", [
    (500, 2, 3, "normal"),
    (1000, 5, 7, "normal"),
    (2000, 16, 10, "normal"),
    (3000, 64, 20, "normal"),
    (300, 3, 50, "normal"),
    (2500, 22, 4, "uniform"),  # all-positive, like pixels
    (2300, 67, 4, "offset"),   # far from the origin relative to its spread
    (2700, 33, 6, "offset"),
])
def test_lloyd_matches_sklearn_from_same_init(n, d, k, kind):
    rng = np.random.default_rng(n + d + k)
    if kind == "normal":
        X = rng.standard_normal((n, d))
    elif kind == "uniform":
        X = rng.random((n, d))
    else:
        X = rng.standard_normal((n, d)) * 0.2 - 3.0
    X = X.astype(np.float32)
    init = X[rng.choice(n, size=k, replace=False)].copy()
    ours = KMeans(n_clusters=k, init=init, n_init=1, init_size=None).fit(X)
    ref = SKKMeans(n_clusters=k, init=init, n_init=1, algorithm="lloyd").fit(X)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.inertia_, ref.inertia_, rtol=1e-5)
    brute = brute_inertia(X, ours.labels_, ours.cluster_centers_)
    np.testing.assert_allclose(ours.inertia_, brute, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lloyd_matches_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((800, 8)).astype(np.float32)
    init = X[rng.choice(800, size=6, replace=False)].copy()
    labels, centers = reference_lloyd(X, init)
    ours = KMeans(n_clusters=6, init=init, n_init=1, init_size=None, tol=0.0).fit(X)
    np.testing.assert_array_equal(ours.labels_, labels)
    np.testing.assert_allclose(ours.cluster_centers_, centers, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n, d, k", [(2000, 16, 10), (3000, 64, 20), (1500, 3, 40)])
def test_elkan_bounds_do_not_change_result(n, d, k):
    """Forced on and off, whatever the automatic choice (bounds only where 2k <= d) would be."""
    rng = np.random.default_rng(k)
    X = torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32))
    C = X[torch.from_numpy(rng.choice(n, size=k, replace=False))].clone()
    x_sq = _lloyd.squared_norms(X, 16384)
    with_bounds = _lloyd.lloyd(X, x_sq, C, max_iter=300, tol=0.0, chunk_size=16384, bounds=True)
    without = _lloyd.lloyd(X, x_sq, C, max_iter=300, tol=0.0, chunk_size=16384, bounds=False)
    assert with_bounds.converged and without.converged
    assert torch.equal(with_bounds.labels, without.labels)
    assert torch.equal(with_bounds.centers, without.centers)
    assert with_bounds.n_iter == without.n_iter


def test_inertia_quality_vs_sklearn_on_overlapping_blobs():
    X, _ = make_blobs(n_samples=20_000, n_features=50, centers=10, cluster_std=6.0, random_state=7)
    X = X.astype(np.float32)
    ours = KMeans(n_clusters=10, n_init=10, random_state=0).fit(X)
    ref = SKKMeans(n_clusters=10, n_init=10, random_state=0).fit(X)
    ours_inertia = brute_inertia(X, ours.labels_, ours.cluster_centers_)
    ref_inertia = brute_inertia(X, ref.labels_, ref.cluster_centers_)
    assert ours_inertia <= ref_inertia * 1.001


# ---------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("algorithm", ["lloyd", "minibatch"])
def test_same_seed_same_result(algorithm):
    X, _ = make_blobs(n_samples=3000, n_features=10, centers=8, cluster_std=3.0, random_state=0)
    params = dict(n_clusters=8, algorithm=algorithm, batch_size=500, max_iter=20, init_size=1000)
    a = KMeans(random_state=42, **params).fit(X)
    b = KMeans(random_state=42, **params).fit(X)
    assert np.array_equal(a.labels_, b.labels_)
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_
    c = KMeans(random_state=np.random.default_rng(42), **params).fit(X)
    assert np.array_equal(a.labels_, c.labels_)
    others = [KMeans(random_state=s, **params).fit(X).cluster_centers_ for s in range(1, 4)]
    # different seeds may give different centres: at least one of three should differ from seed 42
    assert any(not np.array_equal(a.cluster_centers_, o) for o in others)


# -------------------------------------------------------------------------------- empty-cluster repair
def test_empty_cluster_is_repaired():
    X, _ = make_blobs(n_samples=600, n_features=4, centers=4, cluster_std=0.5, random_state=1)
    X = X.astype(np.float32)
    init = X[[0, 150, 300]].copy()
    init = np.vstack([init, np.full((1, 4), 1e4, dtype=np.float32)])  # far from every point: empty
    km = KMeans(n_clusters=4, init=init, n_init=1).fit(X)
    assert km.n_empty_repaired_ >= 1
    assert np.bincount(km.labels_, minlength=4).min() >= 1
    assert np.abs(km.cluster_centers_).max() < 100
    np.testing.assert_allclose(km.inertia_, brute_inertia(X, km.labels_, km.cluster_centers_), rtol=1e-5)


@pytest.mark.parametrize("bounds", [True, False])
def test_empty_cluster_repaired_with_and_without_bounds(bounds):
    X = torch.from_numpy(np.random.default_rng(0).standard_normal((300, 3)).astype(np.float32))
    C = torch.cat([X[:2], torch.full((1, 3), 1e4)])
    x_sq = _lloyd.squared_norms(X, 64)
    res = _lloyd.lloyd(X, x_sq, C, max_iter=100, tol=0.0, chunk_size=64, bounds=bounds)
    assert res.n_repaired >= 1
    assert torch.bincount(res.labels, minlength=3).min() >= 1


# --------------------------------------------------------------------------------------------- chunking
@pytest.mark.parametrize("algorithm", ["lloyd", "minibatch"])
def test_chunk_size_does_not_change_result(algorithm):
    X, _ = make_blobs(n_samples=2000, n_features=12, centers=6, cluster_std=2.5, random_state=5)
    X = X.astype(np.float32)
    params = dict(n_clusters=6, algorithm=algorithm, batch_size=300, max_iter=10, random_state=0)
    small = KMeans(chunk_size=7, **params).fit(X)
    default = KMeans(**params).fit(X)
    assert np.array_equal(small.labels_, default.labels_)
    assert np.array_equal(small.cluster_centers_, default.cluster_centers_)
    np.testing.assert_allclose(small.inertia_, default.inertia_, rtol=1e-9)
    np.testing.assert_array_equal(small.predict(X), default.predict(X))


# ------------------------------------------------------------------------------------ mini-batch memmap
def test_minibatch_on_memmap(tmp_path):
    X, y = make_blobs(n_samples=6000, n_features=16, centers=6, cluster_std=1.0, random_state=2)
    X = X.astype(np.float32)
    path = tmp_path / "x.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    del mm
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)
    km = KMeans(n_clusters=6, algorithm="minibatch", batch_size=512, max_iter=5, random_state=0)
    km.fit(mm)
    assert km.labels_.shape == (6000,)
    assert km.n_features_in_ == 16
    lloyd = KMeans(n_clusters=6, random_state=0).fit(X)
    assert km.inertia_ <= lloyd.inertia_ * 1.03
    assert adjusted_rand_score(y, km.labels_) > 0.99
    np.testing.assert_array_equal(km.predict(mm), km.labels_)
    np.testing.assert_allclose(km.score(mm), -km.inertia_, rtol=1e-6)


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("n_clusters, match", [
    (11, "larger than the number of samples"),
    (0, "n_clusters must be >= 1"),
    (2.5, "n_clusters must be an integer"),
    (True, "n_clusters must be an integer"),
])
def test_bad_n_clusters(n_clusters, match):
    X = np.random.default_rng(0).random((10, 3))
    with pytest.raises(ValueError, match=match):
        KMeans(n_clusters=n_clusters).fit(X)


@pytest.mark.parametrize("algorithm", ["lloyd", "minibatch"])
def test_bad_X(algorithm):
    X = np.random.default_rng(0).random((20, 3))
    X[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        KMeans(n_clusters=2, algorithm=algorithm).fit(X)
    with pytest.raises(ValueError, match="2-D"):
        KMeans(n_clusters=2, algorithm=algorithm).fit(np.arange(10.0))


@pytest.mark.parametrize("algorithm", ["lloyd", "minibatch"])
def test_empty_X(algorithm):
    match = "X is empty: it has 0 samples|larger than the number of samples \\(0\\)"
    with pytest.raises(ValueError, match=match):
        KMeans(n_clusters=2, algorithm=algorithm).fit(np.empty((0, 3)))


def test_empty_X_message_sklearn_backend():
    with pytest.raises(ValueError, match="X is empty: it has 0 samples"):
        KMeans(n_clusters=1, backend="sklearn").fit(np.empty((0, 3)))


def test_other_bad_X_messages():
    with pytest.raises(ValueError, match="1-D array"):
        KMeans(n_clusters=1).fit(np.arange(5.0))
    with pytest.raises(ValueError, match="must hold numbers"):
        KMeans(n_clusters=1).fit(np.array([["a", "b"], ["c", "d"]]))


def test_bad_init_and_params():
    X = np.random.default_rng(0).random((30, 4))
    with pytest.raises(ValueError, match=r"must have shape \(n_clusters, n_features\) = \(3, 4\)"):
        KMeans(n_clusters=3, init=np.zeros((3, 5))).fit(X)
    with pytest.raises(ValueError, match=r"init centres must have shape"):
        KMeans(n_clusters=3, init=np.zeros((2, 4))).fit(X)
    with pytest.raises(ValueError, match="init must be 'k-means\\+\\+', 'random' or an array"):
        KMeans(n_clusters=3, init="kmeans").fit(X)
    with pytest.raises(ValueError, match="backend must be one of"):
        KMeans(n_clusters=3, backend="cuml").fit(X)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        KMeans(n_clusters=3, algorithm="elkan").fit(X)
    with pytest.raises(ValueError, match="n_init must be an integer >= 1"):
        KMeans(n_clusters=3, n_init=0).fit(X)
    with pytest.raises(ValueError, match="tol must be a number >= 0"):
        KMeans(n_clusters=3, tol=-1.0).fit(X)
    with pytest.raises(ValueError, match="init_size must be"):
        KMeans(n_clusters=3, init_size=0).fit(X)


def test_predict_errors():
    X = np.random.default_rng(0).random((30, 4))
    with pytest.raises(RuntimeError, match="not fitted yet"):
        KMeans(n_clusters=2).predict(X)
    with pytest.raises(RuntimeError, match="not fitted yet"):
        KMeans(n_clusters=2).transform(X)
    km = KMeans(n_clusters=2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 5 features, but KMeans was fitted with 4 features"):
        km.predict(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="X has 5 features"):
        km.transform(np.zeros((3, 5)))


# ------------------------------------------------------------------------------------------ edge cases
@pytest.mark.parametrize("backend", ["torch", "sklearn", "faiss"])
def test_k_equals_one_and_n(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    X = np.random.default_rng(0).random((12, 3)).astype(np.float32)
    one = KMeans(n_clusters=1, backend=backend, random_state=0).fit(X)
    assert np.all(one.labels_ == 0)
    np.testing.assert_allclose(one.cluster_centers_[0], X.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.inertia_, brute_inertia(X, one.labels_, one.cluster_centers_), rtol=1e-5)
    every = KMeans(n_clusters=12, backend=backend, random_state=0).fit(X)
    assert sorted(every.labels_.tolist()) == list(range(12))
    assert every.inertia_ == pytest.approx(0.0, abs=1e-6)


def test_k_equals_n_minibatch():
    X = np.random.default_rng(0).random((12, 3)).astype(np.float32)
    km = KMeans(n_clusters=12, algorithm="minibatch", max_iter=3, random_state=0).fit(X)
    assert sorted(km.labels_.tolist()) == list(range(12))


def test_duplicate_points():
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]], dtype=np.float32), 50, axis=0)
    km = KMeans(n_clusters=2, random_state=0).fit(X)
    assert km.inertia_ == pytest.approx(0.0, abs=1e-6)
    assert adjusted_rand_score(np.repeat([0, 1], 50), km.labels_) == 1.0


@pytest.mark.parametrize("algorithm", ["lloyd", "minibatch"])
def test_uint8_images_are_flattened(algorithm):
    rng = np.random.default_rng(0)
    base = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    base[1] = 200
    y = rng.integers(0, 2, size=200)
    images = np.clip(base[y].astype(np.int16) + rng.integers(-20, 21, size=(200, 8, 8, 3)), 0, 255)
    images = images.astype(np.uint8)
    km = KMeans(n_clusters=2, algorithm=algorithm, batch_size=64, max_iter=10, random_state=0).fit(images)
    assert km.cluster_centers_.shape == (2, 8 * 8 * 3)
    assert km.n_features_in_ == 192
    assert adjusted_rand_score(y, km.labels_) == 1.0
    np.testing.assert_array_equal(km.predict(images), km.labels_)
    np.testing.assert_array_equal(km.predict(images.reshape(200, -1)), km.labels_)
    assert km.transform(images).shape == (200, 2)


def test_other_input_types(blobs):
    X, y = blobs
    a = KMeans(n_clusters=5, random_state=0).fit(X)
    b = KMeans(n_clusters=5, random_state=0).fit(X.astype(np.float64))
    c = KMeans(n_clusters=5, random_state=0).fit(torch.from_numpy(X))
    d = KMeans(n_clusters=5, random_state=0).fit(X.tolist())
    for other in (b, c, d):
        np.testing.assert_array_equal(other.labels_, a.labels_)
    np.testing.assert_array_equal(a.predict(torch.from_numpy(X)), a.labels_)


def test_copy_x_false_centres_in_place_and_gives_the_same_clusters():
    # Values around the mean, some of them (88 of 2,400 entries) rounded by (x - m) + m: those are kept
    # aside and put back, the rest restored by adding the mean.
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(600, 4)) * 2 + rng.integers(0, 3, (600, 1)) * 5 + 6).astype(np.float32)
    kept = X.copy()
    copied = KMeans(3, n_init=3, random_state=0).fit(X)
    seen = []
    original = _lloyd.lloyd

    def spy(Xs, *args, **kwargs):
        seen.append(np.shares_memory(Xs.numpy(), X))
        return original(Xs, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_lloyd, "lloyd", spy)
        in_place = KMeans(3, n_init=3, copy_x=False, random_state=0).fit(X)
    assert seen and all(seen)  # the fit ran on X itself, no centred copy
    np.testing.assert_array_equal(X, kept)  # given back bit for bit
    np.testing.assert_array_equal(in_place.labels_, copied.labels_)
    np.testing.assert_array_equal(in_place.cluster_centers_, copied.cluster_centers_)


def test_copy_x_false_copies_when_the_round_trip_would_lose_many_bits():
    # Tiny values around a large mean: (x - m) + m rounds most of them, so a copy is centred instead.
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(1e-3, 1e-4, (300, 3)), rng.normal(1e4, 1, (300, 3))]).astype(np.float32)
    kept = X.copy()
    fit = KMeans(2, n_init=2, copy_x=False, random_state=0).fit(X)
    np.testing.assert_array_equal(X, kept)
    np.testing.assert_array_equal(fit.labels_, KMeans(2, n_init=2, random_state=0).fit(X).labels_)


def test_clone_and_get_params():
    init = np.zeros((3, 2), dtype=np.float32)
    km = KMeans(n_clusters=3, init=init, n_init=4, max_iter=50, tol=1e-3, init_size=100,
                algorithm="minibatch", batch_size=128, backend="torch", device="cpu", chunk_size=1024,
                random_state=7)
    params = km.get_params()
    assert params["n_clusters"] == 3 and params["init"] is init and params["chunk_size"] == 1024
    assert set(params) == {"n_clusters", "init", "n_init", "max_iter", "tol", "init_size", "algorithm",
                           "batch_size", "backend", "device", "chunk_size", "copy_x", "random_state",
                           "verbose"}
    twin = clone(km)
    assert twin is not km
    p2 = twin.get_params()
    np.testing.assert_array_equal(p2.pop("init"), params["init"])
    assert p2 == {k: v for k, v in params.items() if k != "init"}
    assert KMeans(**km.get_params()).get_params()["batch_size"] == 128
    km.set_params(n_clusters=4, backend="sklearn")
    assert km.get_params()["n_clusters"] == 4 and km.backend == "sklearn"
    fitted = KMeans(n_clusters=2, random_state=0).fit(np.random.default_rng(0).random((20, 2)))
    fresh = clone(fitted)
    assert not hasattr(fresh, "cluster_centers_")


# --------------------------------------------------------------------------------------- faiss specific
def test_faiss_with_given_init(blobs):
    pytest.importorskip("faiss")
    X, y = blobs
    init = np.stack([X[y == j][0] for j in range(5)])
    km = KMeans(n_clusters=5, init=init, backend="faiss").fit(X)
    assert adjusted_rand_score(y, km.labels_) == 1.0
    np.testing.assert_allclose(km.inertia_, brute_inertia(X, km.labels_, km.cluster_centers_), rtol=1e-5)


# ------------------------------------------------------------------------------------------ real MNIST
def _read_idx_gz(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


@pytest.mark.data
def test_mnist_test_set_accuracy():
    images, labels = MNIST_DIR / "t10k-images-idx3-ubyte.gz", MNIST_DIR / "t10k-labels-idx1-ubyte.gz"
    if not (images.is_file() and labels.is_file()):
        pytest.skip(f"MNIST test files not found in {MNIST_DIR} (expected t10k-images/labels-idx*-ubyte.gz)")
    X = _read_idx_gz(images, 16).reshape(10_000, 784).astype(np.float32) / 255.0
    y = _read_idx_gz(labels, 8).astype(np.int64)
    assert y.shape == (10_000,)
    km = KMeans(n_clusters=10, n_init=10, random_state=0).fit(X)
    acc = clustering_accuracy(y, km.labels_)
    assert 0.45 <= acc <= 0.65, f"k-means ACC on MNIST test pixels {acc:.3f} (literature ~0.54)"
    np.testing.assert_allclose(km.inertia_, brute_inertia(X, km.labels_, km.cluster_centers_), rtol=1e-5)


def test_minibatch_stops_when_centres_settle():
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=3000, centers=4, cluster_std=0.5, random_state=0)
    km = KMeans(n_clusters=4, algorithm="minibatch", batch_size=256, max_iter=300, random_state=0).fit(X)
    assert km.n_iter_ < 300  # stopped on tol, long before max_iter passes
    never = KMeans(n_clusters=4, algorithm="minibatch", batch_size=256, max_iter=5, tol=0.0,
                   random_state=0).fit(X)
    assert never.n_iter_ == 5


@pytest.mark.parametrize("d, k, expected", [(64, 10, True), (20, 10, True), (10, 10, False), (3, 40, False)])
def test_bounds_only_where_rows_are_long(monkeypatch, d, k, expected):
    """Elkan's (n, k) bounds are kept only where they are at most half the size of the rows they spare
    reading: an autoencoder's 10-d embedding with 10 clusters runs plain Lloyd in O(n) memory."""
    used = []
    real = _lloyd._suspects
    monkeypatch.setattr(_lloyd, "_suspects", lambda *a, **kw: used.append(True) or real(*a, **kw))
    X = torch.from_numpy(np.random.default_rng(0).standard_normal((500, d)).astype(np.float32))
    x_sq = _lloyd.squared_norms(X, 128)
    _lloyd.lloyd(X, x_sq, X[:k].clone(), max_iter=5, tol=0.0, chunk_size=128)
    assert bool(used) is expected
