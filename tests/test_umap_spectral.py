"""UMAP + spectral clustering, and the default run that uses it on small grey sets (the bundled digits).

Fitting, predicting, saving and determinism are tested for every registered method in
test_methods_contract.py; here: what is particular to the graph cut and to the choice of default."""

from __future__ import annotations

import numpy as np
import pytest

from deepclust.cluster import UMAPSpectral
from deepclust.config import DEFAULT_METHOD, RunConfig
from deepclust.metrics import clustering_accuracy
from deepclust.pipeline.defaults import SMALL_SET_IMAGES, SMALL_SET_METHOD, method_for_data


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three separate groups of 40, 60 and 80 points in 6-d, of different spreads."""
    rng = np.random.default_rng(seed)
    sizes, spreads = (40, 60, 80), (0.3, 0.6, 1.0)
    groups = zip(sizes, spreads, strict=True)
    X = np.vstack([rng.normal(6.0 * c, s, size=(n, 6)) for c, (n, s) in enumerate(groups)])
    return X.astype(np.float32), np.repeat(np.arange(3), sizes)


@pytest.fixture(scope="module")
def blobs():
    X, y = _blobs()
    return X, y, UMAPSpectral(3, n_neighbors=10, random_state=0).fit(X)


def test_the_cut_follows_the_neighbour_graph(blobs):
    X, y, est = blobs
    assert clustering_accuracy(y, est.labels_) == 1.0
    assert est.graph_neighbors_ == len(X) // (2 * 3)  # at most half the mean cluster size
    assert est.manifold_.shape == (len(X), 3) and est.cluster_centers_.shape == (3, 6)
    np.testing.assert_allclose(est.posterior_.sum(1), 1.0, rtol=1e-5)
    assert np.array_equal(est.posterior_.argmax(1), est.labels_)  # clean clusters: neighbours agree
    again = UMAPSpectral(3, n_neighbors=10, random_state=0).fit(X)
    assert np.array_equal(again.labels_, est.labels_) and np.array_equal(again.manifold_, est.manifold_)


def test_the_graph_width_is_bounded_and_checked(blobs):
    X, _, _ = blobs
    assert UMAPSpectral(3, n_neighbors=10, graph_neighbors=500, random_state=0).fit(X).graph_neighbors_ \
        == len(X) - 1
    with pytest.raises(ValueError, match="graph_neighbors must be an integer >= 1"):
        UMAPSpectral(3, graph_neighbors=0).fit(X)
    with pytest.raises(ValueError, match="n_epochs must be an integer >= 1"):
        UMAPSpectral(3, n_epochs=0).fit(X)


def test_the_default_run_takes_the_graph_cut_for_a_small_set_of_tiny_grey_images_only():
    default = RunConfig(method=DEFAULT_METHOD)
    chosen, why = method_for_data(default, (8, 8, 1), 1797)
    assert chosen.method == SMALL_SET_METHOD == "umap-spectral"
    assert "1,797 grey images of at most 8 x 8 pixels" in why
    assert method_for_data(default, (8, 8), 100)[0].method == SMALL_SET_METHOD
    for shape, n in (((8, 8, 1), SMALL_SET_IMAGES),  # MNIST and USPS keep N2D and its recipe
                     ((16, 16, 1), 9298), ((28, 28, 1), 70_000),
                     ((16, 16, 1), 2007),  # USPS's test split: the graph cut of its pixels gave 0.61
                     ((8, 8, 3), 1000)):  # colour
        assert method_for_data(default, shape, n) == (default, None), (shape, n)
    named = RunConfig(method="kmeans")
    assert method_for_data(named, (8, 8, 1), 1797) == (named, None)
    # an option only N2D reads (its autoencoder, its self-labelling) keeps N2D
    for option in ({"pretrain_epochs": 5}, {"arch": "dec-dense"}, {"self_label_rounds": 1}, {"noise": 0.2}):
        config = RunConfig(method=DEFAULT_METHOD, **option)
        assert method_for_data(config, (8, 8, 1), 1797) == (config, None), option
    # the options both read go with the switch
    assert method_for_data(RunConfig(method=DEFAULT_METHOD, umap_neighbors=15), (8, 8, 1), 1797)[0] \
        == RunConfig(method=SMALL_SET_METHOD, umap_neighbors=15)
