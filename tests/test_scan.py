"""SCAN on feature vectors: the maths, the estimator contract, determinism, saving and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.base import clone

from deepclust.cluster import SCAN
from deepclust.cluster.scan import l2_normalize, mine_neighbors, scan_loss
from deepclust.metrics import clustering_accuracy

FAST = dict(n_heads=3, epochs=30, self_label_epochs=10, batch_size=64)


def directional_blobs(n_per: int = 60, k: int = 4, d: int = 16, seed: int = 0):
    """k clusters around distinct random directions (what cosine geometry separates), shuffled."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    y = np.repeat(np.arange(k), n_per)
    X = 5.0 * centers[y] + rng.normal(scale=0.8, size=(len(y), d))
    order = rng.permutation(len(y))
    return X[order].astype(np.float32), y[order]


@pytest.fixture(scope="module")
def blobs():
    return directional_blobs()


@pytest.fixture(scope="module")
def fitted(blobs):
    X, _ = blobs
    return SCAN(4, random_state=0, **FAST).fit(X)


def test_mine_neighbors_matches_brute_force_and_excludes_self():
    X = l2_normalize(torch.from_numpy(np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32)))
    sim = (X @ X.T).numpy()
    np.fill_diagonal(sim, -np.inf)
    expected = np.argsort(-sim, axis=1, kind="stable")[:, :5]
    for chunk in (7, 50, 4096):  # chunking must not change the answer
        got = mine_neighbors(X, 5, chunk_size=chunk).numpy()
        assert (got != np.arange(50)[:, None]).all()
        np.testing.assert_array_equal(np.sort(got, 1), np.sort(expected, 1))


def test_scan_loss_by_hand():
    k = 4
    confident = torch.full((1, k, k), -30.0)
    confident[0, torch.arange(k), torch.arange(k)] = 30.0  # row r is sure of cluster r: balanced, one-hot
    total, consistency, entropy = scan_loss(confident, confident, entropy_weight=2.0)
    assert consistency.item() == pytest.approx(0.0, abs=1e-6)
    assert entropy.item() == pytest.approx(math.log(k), rel=1e-5)
    assert total.item() == pytest.approx(-2.0 * math.log(k), rel=1e-5)
    # Neighbours sure of different clusters: <p_i, p_j> is ~0, the consistency term is large.
    _, disagree, _ = scan_loss(confident, confident.roll(1, dims=1), entropy_weight=2.0)
    assert disagree.item() > 10


def test_recovers_directional_blobs(blobs, fitted):
    X, y = blobs
    assert fitted.labels_.shape == (len(X),) and fitted.labels_.dtype == np.int64
    assert clustering_accuracy(y, fitted.labels_) >= 0.95
    assert fitted.n_features_in_ == X.shape[1]
    assert fitted.cluster_centers_.shape == (4, X.shape[1])
    for c in np.unique(fitted.labels_):  # centres are the mean input row of each cluster
        np.testing.assert_allclose(fitted.cluster_centers_[c], X[fitted.labels_ == c].mean(0), rtol=1e-5)
    assert fitted.neighbors_.shape == (len(X), 20)
    assert fitted.head_losses_.shape == (3,) and fitted.best_head_ == int(np.argmin(fitted.head_losses_))
    stages = [row["stage"] for row in fitted.history_]
    assert stages == ["scan"] * 30 + ["self-label"] * 10
    assert all(np.isfinite(row["loss"]) for row in fitted.history_ if row["stage"] == "scan")
    confident = [row["confident"] for row in fitted.history_ if row["stage"] == "self-label"]
    assert min(confident) > 0.3  # self-labelling had pseudo-labels to train on


def test_same_seed_same_clusters(blobs, fitted):
    X, _ = blobs
    again = SCAN(4, random_state=0, **FAST).fit(X)
    np.testing.assert_array_equal(again.labels_, fitted.labels_)
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    assert [r["loss"] for r in again.history_] == [r["loss"] for r in fitted.history_]


def test_predict_on_new_data(blobs, fitted):
    X, _ = blobs
    np.testing.assert_array_equal(fitted.predict(X), fitted.labels_)
    X_new, y_new = directional_blobs(n_per=10, seed=0)  # same directions, fresh noise
    X_new = X_new + np.random.default_rng(5).normal(scale=0.3, size=X_new.shape).astype(np.float32)
    proba = fitted.predict_proba(X_new)
    assert proba.shape == (len(X_new), 4) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert clustering_accuracy(y_new, fitted.predict(X_new)) >= 0.95
    # Only the direction matters: features are L2-normalised inside.
    np.testing.assert_array_equal(fitted.predict(3.0 * X_new), fitted.predict(X_new))


def test_without_self_labelling(blobs):
    X, y = blobs
    model = SCAN(4, self_label=False, random_state=1, **FAST).fit(X)
    assert {row["stage"] for row in model.history_} == {"scan"}
    assert clustering_accuracy(y, model.labels_) >= 0.95


@pytest.mark.parametrize("augment", ["noise", "neighbor-mix", "none"])
def test_other_perturbations_run(blobs, augment):
    X, y = blobs
    model = SCAN(4, augment=augment, augment_scan=True, random_state=0, **FAST).fit(X)
    assert clustering_accuracy(y, model.labels_) >= 0.9


def test_params_and_clone():
    model = SCAN(7, n_neighbors=5, hidden=32, entropy_weight=3.0, random_state=4)
    params = model.get_params()
    assert params["n_clusters"] == 7 and params["hidden"] == 32 and params["random_state"] == 4
    twin = clone(model)
    assert twin is not model and twin.get_params() == params
    assert twin.set_params(confidence=0.9).confidence == 0.9


def test_save_and_load_through_the_checkpoint_module(blobs, fitted, tmp_path):
    from deepclust.deep import checkpoint

    X, _ = blobs
    checkpoint.save_model(fitted, tmp_path)
    loaded = checkpoint.load_model(tmp_path)
    assert isinstance(loaded, SCAN) and loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(loaded.labels_, fitted.labels_)
    np.testing.assert_array_equal(loaded.cluster_centers_, fitted.cluster_centers_)


def test_hidden_layer_head(blobs):
    X, y = blobs
    model = SCAN(4, hidden=16, random_state=0, **FAST).fit(X)
    assert clustering_accuracy(y, model.labels_) >= 0.9


@pytest.mark.parametrize("params, match", [
    (dict(n_clusters=500), "larger than the number of samples"),
    (dict(n_neighbors=0), "n_neighbors"),
    (dict(confidence=1.0), "confidence"),
    (dict(augment="cutout"), "augment"),
    (dict(augment="dropout", augment_strength=1.0), "dropout probability"),
    (dict(lr=0.0), "lr"),
    (dict(hidden=-1), "hidden"),
])
def test_bad_parameters(blobs, params, match):
    X, _ = blobs
    with pytest.raises(ValueError, match=match):
        SCAN(**{"n_clusters": 4, **params}).fit(X)


def test_bad_input(blobs, fitted):
    X, _ = blobs
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SCAN(4).fit(bad)
    with pytest.raises(ValueError, match="at least 2 samples"):
        SCAN(1).fit(X[:1])
    with pytest.raises(RuntimeError, match="not fitted"):
        SCAN(4).predict(X)
    with pytest.raises(ValueError, match="features"):
        fitted.predict(X[:, :5])


def test_an_empty_cluster_has_a_finite_centre_so_the_model_loads_again(blobs, fitted, tmp_path):
    """A NaN centre made a saved SCAN unloadable (load_model refuses non-finite centres)."""
    import copy

    from deepclust.cluster._means import cluster_means
    from deepclust.deep import checkpoint

    X, _ = blobs
    est = copy.deepcopy(fitted)
    emptied = np.where(est.labels_ == 0, 1, est.labels_)  # no row left in cluster 0
    est.cluster_centers_ = cluster_means(X, emptied, est.n_clusters)
    assert np.isfinite(est.cluster_centers_).all() and not est.cluster_centers_[0].any()
    checkpoint.save_model(est, tmp_path)
    loaded = checkpoint.load_model(tmp_path)
    np.testing.assert_array_equal(loaded.cluster_centers_, est.cluster_centers_)
