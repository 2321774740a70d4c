"""Modularity against networkx, the kNN graph against brute force and scikit-learn, and the
best-model clusters on planted groups of voxels."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.neighbors import kneighbors_graph

from jaxenc.analysis import best_model_clusters, knn_graph, modularity
from jaxenc.errors import AlignmentError, ConfigError


def _random_graph(rng, n, density=0.2):
    upper = np.triu(rng.random((n, n)) * (rng.random((n, n)) < density), k=1)
    return upper + upper.T


def _networkx_q(A, labels, resolution=1.0):
    keep = np.flatnonzero(labels >= 0)
    G = nx.from_numpy_array(A[np.ix_(keep, keep)])
    communities = [set(np.flatnonzero(labels[keep] == c)) for c in np.unique(labels[keep])]
    return nx.community.modularity(G, communities, weight="weight", resolution=resolution)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modularity_matches_networkx_on_random_weighted_graphs(seed):
    rng = np.random.default_rng(seed)
    A = _random_graph(rng, 40)
    labels = rng.integers(-1, 4, size=40)
    expected = _networkx_q(A, labels)
    assert modularity(A, labels) == pytest.approx(expected, abs=1e-10)
    assert modularity(sp.csr_matrix(A), labels) == pytest.approx(expected, abs=1e-10)
    assert modularity(sp.coo_matrix(A), labels, resolution=0.5) == pytest.approx(
        _networkx_q(A, labels, resolution=0.5), abs=1e-10)


def test_modularity_of_two_disconnected_cliques_is_one_half():
    clique = np.ones((5, 5)) - np.eye(5)
    A = sp.block_diag([clique, clique])
    assert modularity(A, np.repeat([0, 1], 5)) == pytest.approx(0.5, abs=1e-12)
    # One community holding everything: Q = 1 - 1 = 0.
    assert modularity(A, np.zeros(10, int)) == pytest.approx(0.0, abs=1e-12)


def test_modularity_self_loop_convention_matches_networkx():
    rng = np.random.default_rng(3)
    A = _random_graph(rng, 12, density=0.5)
    labels = rng.integers(0, 3, size=12)
    G = nx.from_numpy_array(A)
    G.add_edge(4, 4, weight=0.7)
    communities = [set(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    with_loop = A.copy()
    with_loop[4, 4] = 2 * 0.7
    assert modularity(with_loop, labels) == pytest.approx(
        nx.community.modularity(G, communities, weight="weight"), abs=1e-10)


def test_modularity_rejects_bad_graphs():
    A = np.array([[0, 1.0], [0.5, 0]])
    with pytest.raises(ConfigError, match="not symmetric"):
        modularity(A, [0, 1])
    with pytest.raises(ConfigError, match="non-negative"):
        modularity(-np.ones((2, 2)), [0, 1])
    with pytest.raises(AlignmentError, match="3 nodes"):
        modularity(np.ones((3, 3)), [0, 1])
    with pytest.raises(ConfigError, match="no edges"):
        modularity(np.ones((3, 3)) - np.eye(3), [-1, -1, 0])


def _brute_force_knn(profiles, k, metric):
    if metric == "correlation":
        S = np.corrcoef(profiles)
    else:
        unit = profiles / np.linalg.norm(profiles, axis=1, keepdims=True)
        S = unit @ unit.T
    np.fill_diagonal(S, -np.inf)
    W = np.zeros_like(S)
    for i, row in enumerate(S):
        nearest = np.argsort(-row)[:k]
        W[i, nearest] = np.clip(row[nearest], 0, None)
    return np.maximum(W, W.T)


@pytest.mark.parametrize("metric", ["correlation", "cosine"])
def test_knn_graph_matches_brute_force_and_sklearn(metric):
    rng = np.random.default_rng(0)
    profiles = rng.standard_normal((60, 25)) + rng.standard_normal(25)
    graph = knn_graph(profiles, k=5, metric=metric, chunk_size=17)
    assert sp.issparse(graph)
    np.testing.assert_allclose(graph.toarray(), _brute_force_knn(profiles, 5, metric), atol=1e-12)
    # scikit-learn's directed kNN (distance 1 - similarity) has the same neighbours.
    directed = kneighbors_graph(profiles, 5, metric=metric, mode="distance", include_self=False)
    union = (directed + directed.T).toarray() > 0
    similarity = 1 - (directed.maximum(directed.T)).toarray()
    positive = union & (similarity > 0)
    np.testing.assert_array_equal(graph.toarray() > 0, positive)
    np.testing.assert_allclose(graph.toarray()[positive], similarity[positive], atol=1e-10)


def test_knn_graph_checks_inputs():
    with pytest.raises(ConfigError, match="k must be"):
        knn_graph(np.zeros((4, 3)), k=4)
    with pytest.raises(ConfigError, match="metric"):
        knn_graph(np.zeros((4, 3)), k=2, metric="euclid")
    bad = np.ones((4, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ConfigError, match="voxel 2"):
        knn_graph(bad, k=2)


def _planted(seed, n_per_group=60, n_trs=120, noise=1.0):
    """Two groups of voxels sharing two latent time courses; model A wins on group 0."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((2, n_trs))
    group = np.repeat([0, 1], n_per_group)
    profiles = latent[group] + noise * rng.standard_normal((group.size, n_trs))
    margin = 0.1 + 0.05 * rng.random(group.size)
    scores = {"A": 0.3 + np.where(group == 0, margin, -margin), "B": np.full(group.size, 0.3)}
    significant = rng.random(group.size) > 0.1
    return scores, significant, profiles, group


def test_planted_groups_are_far_above_the_null():
    scores, significant, profiles, group = _planted(0)
    result = best_model_clusters(scores, significant, profiles, k=8, n_null=200, seed=1)
    np.testing.assert_array_equal(result.labels, np.where(significant, group, -1))
    assert result.label_names == ("A", "B")
    np.testing.assert_array_equal(result.counts, [np.sum(significant & (group == 0)),
                                                  np.sum(significant & (group == 1))])
    # Labels follow the two latent groups: the kNN graph has no edge across them, so Q
    # reaches its two-community bound of about 0.5 while the shuffled labels stay near 0.
    assert result.modularity > 0.45
    assert abs(result.null_mean) < 0.05
    assert result.z > 20
    assert result.p == pytest.approx(1 / 201)
    assert result.modularity == pytest.approx(
        modularity(knn_graph(profiles[significant], 8), group[significant]), abs=1e-12)


def test_shuffled_labels_are_within_the_null():
    scores, significant, profiles, _ = _planted(0)
    order = np.random.default_rng(5).permutation(significant.size)
    shuffled = {name: s[order] for name, s in scores.items()}
    result = best_model_clusters(shuffled, significant, profiles, k=8, n_null=200, seed=1)
    assert abs(result.z) < 3
    assert result.p > 0.01


def test_best_model_clusters_with_an_adjacency():
    clique = np.ones((5, 5)) - np.eye(5)
    adjacency = sp.block_diag([clique, clique]).tocsr()
    scores = {"a": np.r_[np.ones(5), np.zeros(5)], "b": np.r_[np.zeros(5), np.ones(5)]}
    significant = np.ones(10, bool)
    significant[0] = False
    result = best_model_clusters(scores, significant, adjacency=adjacency, n_null=50)
    assert result.labels[0] == -1
    # Removing voxel 0 leaves a 4-clique (6 edges) and a 5-clique (10 edges).
    expected = (6 + 10) / 16 - ((12 / 32) ** 2 + (20 / 32) ** 2)
    assert result.modularity == pytest.approx(expected, abs=1e-12)
    assert result.null.shape == (50,)
    summary = result.summary()
    assert summary["counts"] == {"a": 4, "b": 5}


def test_best_model_clusters_errors():
    scores = {"a": np.zeros(4), "b": np.ones(4)}
    with pytest.raises(ConfigError, match="profiles"):
        best_model_clusters(scores, np.ones(4, bool))
    with pytest.raises(AlignmentError, match="significant"):
        best_model_clusters(scores, np.ones(5, bool), np.zeros((4, 3)))
    with pytest.raises(AlignmentError, match="profiles"):
        best_model_clusters(scores, np.ones(4, bool), np.zeros((5, 3)))
    with pytest.raises(ConfigError, match="labelled voxel"):
        best_model_clusters(scores, np.zeros(4, bool), np.zeros((4, 3)))
