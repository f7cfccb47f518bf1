"""Graph degree linkage, and the default run that uses it on grey images larger than 32 x 32 (COIL-20).

Fitting, predicting, saving and determinism are tested for every registered method in
test_methods_contract.py; here: the graph, the merging (against a plain re-implementation that
recomputes every affinity at every step), the small-cluster rule and the choice of default."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from deepclust.cluster import GraphDegreeLinkage, KMeans
from deepclust.cluster.graph_linkage import _Agglomeration, initial_clusters, neighbour_graph
from deepclust.config import DEFAULT_METHOD, RunConfig
from deepclust.metrics import clustering_accuracy
from deepclust.pipeline.defaults import LINKAGE_METHOD, LINKAGE_SET_IMAGES, method_for_data


def _loops(n_per_loop: int = 72, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three noisy closed curves in 5-d that pass close to each other (as COIL-20's turntable views do):
    each loop's far side is further from its own near side than from the next loop."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n_per_loop, endpoint=False)
    loops = []
    for c in range(3):
        flat = np.zeros_like(t)
        ring = np.stack([3 * np.cos(t), 3 * np.sin(t), 0.4 * np.sin(2 * t), flat, flat], 1)
        ring[:, 0] += 4.5 * c  # neighbouring loops 1.5 apart where they pass, 6 across
        ring[:, 3] = 0.3 * c
        loops.append(ring + rng.normal(0, 0.03, ring.shape))
    return np.vstack(loops).astype(np.float32), np.repeat(np.arange(3), n_per_loop)


def _reference(X: np.ndarray, k: int, n_neighbors: int, min_fraction: float) -> np.ndarray:
    """Graph degree linkage as the paper states it: every affinity recomputed from the dense graph at
    every merge; pairs with a cluster below the size limit first; ties to the lower numbers. (The test
    data never leave k + 1 large clusters without a shared path, the one case not written here.)"""
    graph = neighbour_graph(X, n_neighbors)
    W = graph.toarray()
    start = initial_clusters(graph, k)
    clusters = {c: list(np.flatnonzero(start == c)) for c in range(start.max() + 1)}
    min_size = min_fraction * len(X) / k
    while len(clusters) > k:
        ids = sorted(clusters)
        small = any(len(clusters[c]) < min_size for c in ids)
        best = None
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                A, B = clusters[a], clusters[b]
                ab, ba = W[np.ix_(A, B)], W[np.ix_(B, A)]
                affinity = (ab.sum(0) @ ba.sum(1)) / len(A) ** 2 + (ba.sum(0) @ ab.sum(1)) / len(B) ** 2
                if affinity <= 0 or (small and min(len(A), len(B)) >= min_size):
                    continue
                if best is None or affinity > best[0]:
                    best = (affinity, a, b)
        if best is None:  # no pair shares a path: a small cluster joins where its edges go
            a = next(c for c in ids if len(clusters[c]) < min_size)
            reach = W[clusters[a]].sum(0)  # out-edge weight into each point
            c = max((c for c in ids if c != a), key=lambda c: (reach[clusters[c]].sum(), -c))
            best = (0.0, min(a, c), max(a, c))
        _, a, b = best
        clusters[a] += clusters.pop(b)
    labels = np.empty(len(X), dtype=np.int64)
    for c, (_, members) in enumerate(sorted(clusters.items(), key=lambda item: min(item[1]))):
        labels[members] = c
    return labels


@pytest.fixture(scope="module")
def loops():
    return _loops()


def test_the_graph_is_each_points_nearest_neighbours_weighted_by_distance():
    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    graph = neighbour_graph(X, 4, bandwidth=2.0)
    dist, index = NearestNeighbors(n_neighbors=5).fit(X).kneighbors(X)
    assert graph.shape == (40, 40) and graph.nnz == 40 * 4
    for i in range(40):
        row = graph.getrow(i)
        assert set(row.indices) == set(index[i, 1:])  # not the point itself
    sigma2 = 2.0 * np.mean(dist[:, 1:] ** 2)
    expected = np.exp(-dist[:, 1:] ** 2 / sigma2)
    got = np.stack([graph[i, index[i, 1:]].toarray().ravel() for i in range(40)])
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("seed,min_fraction", [(0, 0.0), (1, 0.5), (2, 0.5), (3, 1.0)])
def test_the_merges_are_those_of_the_plain_algorithm(seed, min_fraction):
    """Updating only the affinities a merge changes gives what recomputing them all gives."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(3.0 * c, 1.0, size=(25, 4)) for c in range(4)]).astype(np.float32)
    est = GraphDegreeLinkage(4, n_neighbors=6, min_cluster_fraction=min_fraction).fit(X)
    assert np.array_equal(est.labels_, _reference(X, 4, 6, min_fraction))


def test_every_affinity_is_kept_exact_through_the_merges():
    rng = np.random.default_rng(5)
    X = np.vstack([rng.normal(3.0 * c, 1.0, size=(20, 4)) for c in range(3)]).astype(np.float32)
    graph = neighbour_graph(X, 5)
    W = graph.toarray()
    merging = _Agglomeration(graph, initial_clusters(graph, 3), X)
    merging.n_small = 0
    while merging.alive.sum() > 3:
        merging._merge(*merging._best_pair(0.0), 0.0)
        ids = np.flatnonzero(merging.alive)
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                A, B = merging.members[a], merging.members[b]
                ab, ba = W[np.ix_(A, B)], W[np.ix_(B, A)]
                exact = (ab.sum(0) @ ba.sum(1)) / len(A) ** 2 + (ba.sum(0) @ ab.sum(1)) / len(B) ** 2
                assert merging.affinity(a, b) == pytest.approx(exact, rel=1e-9, abs=1e-12)
                assert merging.affinity(b, a) == pytest.approx(exact, rel=1e-9, abs=1e-12)


def test_linking_along_the_graph_follows_loops_that_centroids_cut(loops):
    X, y = loops
    est = GraphDegreeLinkage(3, n_neighbors=5).fit(X)
    assert clustering_accuracy(y, est.labels_) == 1.0
    assert clustering_accuracy(y, KMeans(3, random_state=0).fit(X).labels_) < 0.9  # the baseline fails
    assert est.cluster_centers_.shape == (3, 5) and est.n_features_in_ == 5
    assert 3 < est.n_initial_clusters_ < len(X) // 2
    np.testing.assert_allclose(est.posterior_.sum(1), 1.0, rtol=1e-5)
    assert np.array_equal(est.posterior_.argmax(1), est.labels_)
    assert np.array_equal(est.labels_[[0, 72, 144]], [0, 1, 2])  # numbered by their first point


def test_small_clusters_merge_first(loops):
    """A few stray points far from everything stay a cluster of their own without the rule, taking one
    of the k places (so two loops share one); with it they join their nearest loop."""
    X, y = loops
    strays = np.array([[4.5, 12.0, 0, 0, 0], [4.6, 12.0, 0, 0, 0], [4.5, 12.1, 0, 0, 0]], dtype=np.float32)
    X = np.vstack([X, strays])
    plain = GraphDegreeLinkage(3, n_neighbors=5, min_cluster_fraction=0.0).fit(X).labels_
    assert len(np.unique(plain[-3:])) == 1 and np.sum(plain == plain[-1]) == 3  # the strays alone
    ruled = GraphDegreeLinkage(3, n_neighbors=5).fit(X).labels_
    assert clustering_accuracy(y, ruled[:-3]) == 1.0


def test_the_clusters_do_not_depend_on_the_order_of_the_rows(loops):
    X, y = loops
    order = np.random.default_rng(1).permutation(len(X))
    first = GraphDegreeLinkage(3).fit(X).labels_
    shuffled = GraphDegreeLinkage(3).fit(X[order]).labels_
    assert clustering_accuracy(first[order], shuffled) == 1.0
    assert np.array_equal(GraphDegreeLinkage(3).fit(X).labels_, first)


def test_edge_cases():
    X = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    assert np.array_equal(GraphDegreeLinkage(12).fit(X).labels_, np.arange(12))  # every point its own
    assert np.array_equal(GraphDegreeLinkage(1).fit(X).labels_, np.zeros(12))
    assert GraphDegreeLinkage(1).fit(X[:1]).labels_.tolist() == [0]
    same = np.ones((10, 4), dtype=np.float32)  # all distances 0: every edge weighs 1
    assert len(np.unique(GraphDegreeLinkage(2, n_neighbors=3).fit(same).labels_)) == 2
    # two far-apart pairs of groups: no path joins the groups, so the closest means merge
    groups = np.vstack([np.zeros((5, 2)), np.ones((5, 2)) * 0.1 + [0, 50], np.ones((5, 2)) * 100,
                        np.ones((5, 2)) * 100 + [0, 50]]).astype(np.float32)
    labels = GraphDegreeLinkage(2, n_neighbors=2).fit(groups).labels_
    assert len(np.unique(labels[:10])) == 1 and len(np.unique(labels[10:])) == 1 and labels[0] != labels[10]


@pytest.mark.parametrize("params,message", [
    ({"n_neighbors": 0}, "n_neighbors must be an integer >= 1"),
    ({"bandwidth": 0.0}, "bandwidth must be > 0"),
    ({"min_cluster_fraction": 1.5}, r"min_cluster_fraction must be in \[0, 1\]"),
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        GraphDegreeLinkage(2, **params).fit(np.zeros((5, 2), dtype=np.float32))


def test_the_default_run_takes_graph_linkage_for_sets_of_larger_grey_images():
    default = RunConfig(method=DEFAULT_METHOD)
    chosen, why = method_for_data(default, (128, 128, 1), 1440)
    assert chosen.method == LINKAGE_METHOD == "graph-linkage"
    assert "1,440 grey images larger than 32 x 32 pixels" in why
    assert method_for_data(default, (64, 48), 100)[0].method == LINKAGE_METHOD
    for shape, n in (((128, 128, 1), LINKAGE_SET_IMAGES),  # large sets keep N2D
                     ((32, 32, 1), 1440),  # small grey images: N2D's recipe
                     ((128, 128, 3), 1440)):  # colour
        assert method_for_data(default, shape, n) == (default, None), (shape, n)
    named = RunConfig(method="kmeans")
    assert method_for_data(named, (128, 128, 1), 1440) == (named, None)
    for option in ({"pretrain_epochs": 5}, {"umap_neighbors": 15}, {"self_label_rounds": 1}):
        config = RunConfig(method=DEFAULT_METHOD, **option)  # an option of N2D's: the user wants N2D
        assert method_for_data(config, (128, 128, 1), 1440) == (config, None), option
    linkage = RunConfig(method=DEFAULT_METHOD, linkage_neighbors=7)
    assert method_for_data(linkage, (128, 128, 1), 1440)[0] \
        == RunConfig(method=LINKAGE_METHOD, linkage_neighbors=7)
