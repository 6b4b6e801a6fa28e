"""k-means band sampling and facility location against brute-force versions written here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.cluster import KMeans

from hf_select.selection import (
    facility_location,
    facility_location_objective,
    kmeans_cluster_sample,
    knn_similarity_graph,
)


def blobs(n_per: int = 40, centers: int = 4, dim: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(scale=10, size=(centers, dim))
    return np.concatenate([c[i] + rng.normal(size=(n_per, dim)) for i in range(centers)]).astype(np.float32)


# -- k-means band sampling -------------------------------------------------------------------------------------------


def test_kmeans_sample_follows_the_band_rule():
    x = blobs()
    scores = np.random.default_rng(1).uniform(0, 10, size=len(x))
    res = kmeans_cluster_sample(x, scores, n_clusters=4, per_cluster=5, seed=0, return_result=True)
    labels = KMeans(n_clusters=4, random_state=0, n_init="auto").fit_predict(x)
    np.testing.assert_array_equal(res.labels, labels)
    expected = []
    for c in range(4):
        members = np.flatnonzero(labels == c)
        lo, hi = np.percentile(scores[members], [25, 75])
        band = [int(i) for i in members if lo <= scores[i] <= hi]
        step = len(band) // 5
        expected += band[::step][:5]
    assert res.indices == sorted(expected)
    assert len(res.indices) == 20
    assert all(res.in_band[i] for i in res.indices)


def test_kmeans_sample_seeds_repeat_and_random_pick():
    x = blobs(seed=2)
    s = np.random.default_rng(3).normal(size=len(x))
    a = kmeans_cluster_sample(x, s, n_clusters=3, per_cluster=4, seed=5, pick="random")
    assert a == kmeans_cluster_sample(x, s, n_clusters=3, per_cluster=4, seed=5, pick="random")
    assert len(a) == 12


def test_kmeans_sample_nan_scores_never_picked_and_small_clusters_give_all():
    x = np.concatenate([blobs(n_per=30, centers=1, seed=4), np.full((3, 5), 100.0) + np.eye(3, 5)])
    s = np.arange(len(x), dtype=float)
    s[:10] = np.nan
    picks = kmeans_cluster_sample(x, s, n_clusters=2, per_cluster=5, seed=0)
    assert not set(picks) & set(range(10))
    assert {30, 31, 32} <= set(picks)  # the 3-row cluster is smaller than per_cluster: all of it
    with pytest.warns(UserWarning, match="n_clusters=50"):
        assert len(kmeans_cluster_sample(x[:4], None, n_clusters=50, per_cluster=1)) == 4


def test_kmeans_sample_minibatch_path_and_bad_args():
    x = blobs(seed=6)
    picks = kmeans_cluster_sample(x, None, n_clusters=4, per_cluster=2, minibatch=True, seed=0)
    assert len(picks) == 8
    with pytest.raises(ValueError, match="scores has 3 values"):
        kmeans_cluster_sample(x, [1.0, 2.0, 3.0], n_clusters=2)
    with pytest.raises(ValueError, match="band"):
        kmeans_cluster_sample(x, None, band=(80, 20))


# -- facility location -----------------------------------------------------------------------------------------------


def dense_similarity(x: np.ndarray, k: int, metric: str) -> np.ndarray:
    """The same k-NN similarity graph, brute force and dense (small N only)."""
    n = len(x)
    if metric == "cosine":
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        s = u @ u.T
        w = np.zeros((n, n))
        for i in range(n):
            order = [i] + [j for j in np.argsort(-s[i], kind="stable") if j != i][: k - 1]
            w[i, order] = np.clip(s[i, order], 0, 1)
            w[i, i] = 1.0
        return w
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    w = np.zeros((n, n))
    neigh = []
    for i in range(n):
        order = [i] + [j for j in np.argsort(d2[i], kind="stable") if j != i][: k - 1]
        neigh.append(order)
    m = np.median([d2[i, j] for i in range(n) for j in neigh[i][1:]])
    for i in range(n):
        w[i, neigh[i]] = np.exp(-d2[i, neigh[i]] / m)
    return w


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_graph_matches_dense_brute_force(metric):
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    g = knn_similarity_graph(x, 6, metric=metric).toarray()
    np.testing.assert_allclose(g, dense_similarity(x, 6, metric), atol=1e-5)


def plain_greedy(w: np.ndarray, k: int) -> list[int]:
    cur = np.zeros(len(w))
    picks: list[int] = []
    for _ in range(k):
        gains = [-1.0 if j in picks else float(np.maximum(w[:, j] - cur, 0).sum()) for j in range(len(w))]
        j = int(np.argmax(gains))
        picks.append(j)
        cur = np.maximum(cur, w[:, j])
    return picks


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("n_neighbors", [4, 10])
def test_facility_location_within_1_minus_1_over_e_of_brute_force(seed, n_neighbors):
    x = np.random.default_rng(seed).normal(size=(10, 3)).astype(np.float32)
    k = 3
    res = facility_location(x, k, n_neighbors=n_neighbors, seed=seed, return_result=True)
    g = knn_similarity_graph(x, n_neighbors)
    best = max(facility_location_objective(g, s) for s in itertools.combinations(range(10), k))
    got = facility_location_objective(g, res.indices)
    assert got >= (1 - 1 / math.e) * best - 1e-9
    assert res.objective[-1] == pytest.approx(got, rel=1e-6)
    assert np.allclose(np.cumsum(res.gains), res.objective)
    assert res.max_objective == pytest.approx(10.0)  # every row covers itself with similarity 1
    w = g.toarray()
    assert [facility_location_objective(g, res.indices[:i]) for i in range(1, k + 1)] == pytest.approx(
        [facility_location_objective(g, plain_greedy(w, k)[:i]) for i in range(1, k + 1)], rel=1e-6
    )  # lazy greedy makes the same choices as plain greedy (up to exact ties)


def test_facility_location_prefers_covering_each_cluster():
    x = blobs(n_per=25, centers=4, seed=9)
    picks = facility_location(x, 4, n_neighbors=25, metric="euclidean", seed=0)
    assert sorted({p // 25 for p in picks}) == [0, 1, 2, 3]
    assert picks == facility_location(x, 4, n_neighbors=25, metric="euclidean", seed=0)


def test_facility_location_k_too_large_and_empty():
    x = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.warns(UserWarning, match="k=9"):
        assert sorted(facility_location(x, 9, n_neighbors=3)) == [0, 1, 2, 3, 4]
    with pytest.warns(UserWarning, match="no rows"):
        assert facility_location(np.zeros((0, 3)), 2) == []


def test_graph_is_sparse():
    x = np.random.default_rng(0).normal(size=(500, 8))
    g = knn_similarity_graph(x, 7)
    assert g.nnz == 500 * 7
