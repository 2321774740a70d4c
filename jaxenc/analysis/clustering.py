"""Voxel clusters by best-predicting model, and how coherent they are: graph modularity.

Each significant voxel is labelled by the model (or feature set) that predicts it best, e.g.
audio, semantic or joint. Whether those labels mark functionally coherent groups is a
question about a graph of voxels: connect voxels that respond alike (a k-nearest-neighbour
graph of their time courses, :func:`knn_graph`) or that are neighbours on cortex (an adjacency
the caller supplies), and measure how much more edge weight falls within label groups than
chance with Newman-Girvan modularity (:func:`modularity`). :func:`best_model_clusters` compares
that modularity with its distribution under random reassignments of the labels among the
same voxels.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.metrics import NOT_SIGNIFICANT, best_model

__all__ = ["modularity", "knn_graph", "ClusterResult", "best_model_clusters"]

METRICS = ("correlation", "cosine")
# Relative asymmetry tolerated in an adjacency (float rounding of a symmetrised matrix).
_SYMMETRY_RTOL = 1e-10


def _check_adjacency(adjacency, what: str) -> sp.csr_matrix:
    """A square, finite, non-negative, symmetric adjacency as float64 CSR."""
    if sp.issparse(adjacency):
        A = sp.csr_matrix(adjacency, dtype=np.float64)
    else:
        dense = np.asarray(adjacency, dtype=np.float64)
        if dense.ndim != 2:
            raise AlignmentError(f"{what}: adjacency has shape {dense.shape}; expected (n, n)")
        A = sp.csr_matrix(dense)
    if A.shape[0] != A.shape[1]:
        raise AlignmentError(f"{what}: adjacency has shape {A.shape}; expected a square (n, n)")
    values = A.data
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"{what}: adjacency holds NaN or inf")
    if values.size and values.min() < 0:
        raise ConfigError(f"{what}: adjacency weights must be non-negative, found {values.min()}")
    asymmetry = abs(A - A.T)
    scale = values.max() if values.size else 0.0
    if asymmetry.nnz and asymmetry.max() > _SYMMETRY_RTOL * scale:
        raise ConfigError(
            f"{what}: adjacency is not symmetric (largest |A_ij - A_ji| = {asymmetry.max():.3g}); "
            "an undirected graph is expected"
        )
    return A


def _check_labels(labels, n_nodes: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n_nodes,):
        raise AlignmentError(
            f"{what}: labels have shape {labels.shape}, the graph has {n_nodes} nodes"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"{what}: labels must be integers, got dtype {labels.dtype}")
    if labels.size and labels.min() < NOT_SIGNIFICANT:
        raise ConfigError(
            f"{what}: labels must be >= 0, or {NOT_SIGNIFICANT} for excluded nodes; "
            f"found {labels.min()}"
        )
    return labels


class _Graph:
    """The edges of a labelled subgraph in the form modularity needs, computed once."""

    def __init__(self, A: sp.csr_matrix, what: str):
        coo = A.tocoo()
        self.row, self.col, self.weight = coo.row, coo.col, coo.data
        self.degree = np.asarray(A.sum(axis=1)).ravel()  # k_i = sum_j A_ij
        self.two_m = float(self.degree.sum())
        if self.two_m <= 0:
            raise ConfigError(
                f"{what}: the graph has no edges among the labelled nodes; modularity is undefined"
            )

    def q(self, codes: np.ndarray, n_codes: int, resolution: float) -> float:
        """Q of the partition ``codes`` (n,) in ``0 .. n_codes - 1``."""
        within = self.weight[codes[self.row] == codes[self.col]].sum()
        community_degree = np.bincount(codes, weights=self.degree, minlength=n_codes)
        return float(within / self.two_m - resolution * np.sum((community_degree / self.two_m) ** 2))


def _labelled_subgraph(A: sp.csr_matrix, labels: np.ndarray):
    keep = np.flatnonzero(labels != NOT_SIGNIFICANT)
    _, codes = np.unique(labels[keep], return_inverse=True)
    return A[keep][:, keep], codes.astype(np.int64), int(codes.max(initial=-1)) + 1


def modularity(adjacency, labels, *, resolution: float = 1.0) -> float:
    """Newman-Girvan modularity of a partition of a weighted undirected graph.

    ``Q = (1 / 2m) sum_ij (A_ij - resolution * k_i k_j / 2m) delta(c_i, c_j)`` with
    ``k_i = sum_j A_ij`` and ``2m = sum_ij A_ij``, computed as
    ``sum_c [W_c / 2m - resolution * (K_c / 2m)^2]`` (``W_c`` the weight of ``A`` within
    community ``c``, ``K_c`` its total degree), so a sparse graph is never made dense.
    Q is 0 for a partition no better than chance given the degrees, and at most 1; two
    disconnected cliques split along the cliques give 0.5.

    Parameters
    ----------
    adjacency : scipy.sparse matrix or array of shape (n, n)
        Non-negative symmetric weights. A diagonal entry is read as in the formula: a self-loop
        of weight ``w`` in networkx's sense is ``A_ii = 2 w``.
    labels : array of int, shape (n,)
        Community of each node; nodes labelled -1 are removed from the graph (with their
        edges) before Q is computed.
    resolution : float
        Weight of the null-model term (1 is Newman-Girvan's).

    Returns
    -------
    float

    Raises
    ------
    AlignmentError
        A non-square adjacency, or labels of another length.
    ConfigError
        Negative, non-finite or asymmetric weights, labels below -1, or no edge left among
        the labelled nodes.
    """
    A = _check_adjacency(adjacency, "modularity")
    labels = _check_labels(labels, A.shape[0], "modularity")
    sub, codes, n_codes = _labelled_subgraph(A, labels)
    return _Graph(sub, "modularity").q(codes, n_codes, resolution)


def _unit_rows(profiles: np.ndarray, metric: str) -> np.ndarray:
    """Rows scaled so that their dot products are the similarities; constant rows become 0."""
    x = profiles
    if metric == "correlation":
        # Shifting by the first column first keeps constant rows exactly constant (as
        # jaxenc.metrics.pearson_r does), so they get similarity 0 rather than noise.
        x = x - x[:, :1]
        x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.where(norm > 0, norm, 1), 0.0)


def knn_graph(profiles, k: int = 10, *, metric: str = "correlation", chunk_size: int = 512) -> sp.csr_matrix:
    """Symmetric k-nearest-neighbour similarity graph of voxels.

    Each voxel is joined to the ``k`` other voxels most similar to it; the graph keeps an edge
    when either voxel is among the other's ``k`` nearest (the union), weighted by their
    similarity clipped at 0, so the matrix is symmetric and anti-correlated neighbours carry
    no weight. The similarities are computed exactly, ``chunk_size`` voxels at a time
    (memory ``8 * chunk_size * n_voxels`` bytes); ties among equally similar neighbours are
    broken arbitrarily.

    Parameters
    ----------
    profiles : array of shape (n_voxels, n_dims)
        One row per voxel, e.g. its response time course over the test story's TRs
        (``repeats.mean(0).T``) or its predicted time course.
    k : int
        Neighbours per voxel, ``1 <= k < n_voxels``.
    metric : {"correlation", "cosine"}
        Similarity: Pearson correlation of the rows, or the cosine of their angle. A constant
        row (zero row for cosine) is similar to nothing (similarity 0).
    chunk_size : int
        Voxels whose similarities are computed at once.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_voxels, n_voxels)
        Non-negative and symmetric, empty diagonal.

    Raises
    ------
    AlignmentError
        ``profiles`` not 2-D.
    ConfigError
        ``k`` out of range, an unknown metric, or NaN/inf in ``profiles``.
    """
    x = np.asarray(profiles, dtype=np.float64)
    if x.ndim != 2:
        raise AlignmentError(f"knn_graph: profiles have shape {x.shape}; expected (n_voxels, n_dims)")
    n = x.shape[0]
    if metric not in METRICS:
        raise ConfigError(f"knn_graph: metric must be one of {METRICS}, got {metric!r}")
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k < n:
        raise ConfigError(f"knn_graph: k must be an integer in [1, {n - 1}] for {n} voxels, got {k!r}")
    if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ConfigError(f"knn_graph: chunk_size must be a positive integer, got {chunk_size!r}")
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ConfigError(f"knn_graph: profiles hold NaN or inf (first in voxel {bad})")
    z = _unit_rows(x, metric)
    neighbours = np.empty((n, k), np.int64)
    similarity = np.empty((n, k), np.float64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        s = z[start:stop] @ z.T  # [chunk, n_voxels]
        s[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # never one's own neighbour
        idx = np.argpartition(-s, k - 1, axis=1)[:, :k]
        neighbours[start:stop] = idx
        similarity[start:stop] = np.take_along_axis(s, idx, axis=1)
    rows = np.repeat(np.arange(n), k)
    directed = sp.csr_matrix(
        (np.clip(similarity.ravel(), 0, None), (rows, neighbours.ravel())), shape=(n, n)
    )
    graph = directed.maximum(directed.T).tocsr()
    graph.eliminate_zeros()
    return graph


@dataclasses.dataclass(frozen=True)
class ClusterResult:
    """Voxels grouped by their best-predicting model, and the modularity of that grouping.

    Attributes
    ----------
    labels : ndarray of int, shape (n_voxels,)
        Index into ``label_names`` of the best model per voxel; -1 for voxels not significant
        (or with no defined score).
    label_names : tuple of str
        The models, in the order of the ``scores`` given.
    counts : ndarray of int, shape (n_models,)
        Voxels labelled with each model.
    modularity : float
        Newman-Girvan Q of the labels on the voxel graph (labelled voxels only).
    null_mean, null_std : float
        Mean and standard deviation (ddof 1) of Q over random permutations of the labels among
        the same voxels (NaN with fewer than 2 permutations).
    z : float
        ``(modularity - null_mean) / null_std`` (NaN when the null has no spread).
    p : float
        ``(1 + #{null Q >= Q}) / (1 + n_null)``: one-sided permutation p-value.
    null : ndarray of shape (n_null,)
        The null distribution.
    """

    labels: np.ndarray
    label_names: tuple
    counts: np.ndarray
    modularity: float
    null_mean: float
    null_std: float
    z: float
    p: float
    null: np.ndarray

    def summary(self) -> dict:
        """JSON-ready numbers: voxel counts per model, Q, its null and z."""
        return {
            "counts": {name: int(c) for name, c in zip(self.label_names, self.counts, strict=True)},
            "modularity": self.modularity,
            "null_mean": self.null_mean,
            "null_std": self.null_std,
            "z": self.z,
            "p": self.p,
            "n_null": int(self.null.size),
        }


def best_model_clusters(
    scores: Mapping[str, np.ndarray],
    significant,
    profiles=None,
    *,
    adjacency=None,
    k: int = 10,
    n_null: int = 200,
    seed: int = 0,
    metric: str = "correlation",
) -> ClusterResult:
    """Label voxels by their best model and test whether the labels form coherent groups.

    Labels are :func:`jaxenc.metrics.best_model` of the scores on the significant voxels. The
    graph joins the labelled voxels: ``adjacency`` restricted to them when given (e.g. the
    cortical neighbourhood of real data), else :func:`knn_graph` of their ``profiles``.
    A high modularity Q means that voxels which the same model predicts best are also
    connected to each other: they respond alike (kNN graph of time courses) or lie together
    on cortex (anatomical adjacency), i.e. the best-model map has functionally coherent
    regions rather than a salt-and-pepper pattern. The null permutes the labels among the
    same voxels (``n_null`` times, group sizes kept), so ``z`` and ``p`` say how far Q lies
    above what labels unrelated to the graph reach.

    Parameters
    ----------
    scores : mapping of str to array of shape (n_voxels,)
        Per model or feature set, a per-voxel score (e.g. test-story r2); higher is better.
    significant : array of bool, shape (n_voxels,)
        Voxels to label (e.g. :func:`jaxenc.analysis.any_significant` of the models' masks).
    profiles : array of shape (n_voxels, n_dims), optional
        Per voxel, the time course the kNN graph compares (e.g. ``repeats.mean(0).T``);
        needed when ``adjacency`` is not given.
    adjacency : scipy.sparse matrix or array of shape (n_voxels, n_voxels), optional
        Symmetric non-negative voxel graph used instead of the kNN graph.
    k : int
        Neighbours per voxel of the kNN graph.
    n_null : int
        Label permutations in the null distribution.
    seed : int
        Seed of the permutations (``numpy.random.default_rng``).
    metric : {"correlation", "cosine"}
        Similarity of the kNN graph.

    Returns
    -------
    ClusterResult

    Raises
    ------
    AlignmentError
        Scores, mask, profiles or adjacency that cover different numbers of voxels.
    ConfigError
        No scores, neither ``profiles`` nor ``adjacency``, fewer than 2 labelled voxels, a
        negative ``n_null``, or a graph without edges among the labelled voxels.
    """
    if not scores:
        raise ConfigError("best_model_clusters: no scores given")
    names = tuple(str(name) for name in scores)
    shapes = {name: np.shape(s) for name, s in zip(names, scores.values(), strict=True)}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
        raise AlignmentError(
            f"best_model_clusters: scores must share one shape (n_voxels,), got {shapes}"
        )
    n_voxels = next(iter(shapes.values()))[0]
    significant = np.asarray(significant, bool)
    if significant.shape != (n_voxels,):
        raise AlignmentError(
            f"best_model_clusters: significant has shape {significant.shape}, scores cover "
            f"{n_voxels} voxels"
        )
    if not isinstance(n_null, numbers.Integral) or n_null < 0:
        raise ConfigError(f"best_model_clusters: n_null must be a non-negative integer, got {n_null!r}")
    stacked = np.stack([np.asarray(s) for s in scores.values()])  # [model, voxel]
    labels = np.asarray(best_model(stacked, significant)).astype(np.int64)
    keep = np.flatnonzero(labels != NOT_SIGNIFICANT)
    if keep.size < 2:
        raise ConfigError(
            f"best_model_clusters: {keep.size} labelled voxel(s); at least 2 significant voxels "
            "with a defined score are needed"
        )
    if adjacency is not None:
        A = _check_adjacency(adjacency, "best_model_clusters")
        if A.shape[0] != n_voxels:
            raise AlignmentError(
                f"best_model_clusters: adjacency is {A.shape}, scores cover {n_voxels} voxels"
            )
        graph = A[keep][:, keep]
    elif profiles is not None:
        if np.ndim(profiles) != 2 or np.shape(profiles)[0] != n_voxels:
            raise AlignmentError(
                f"best_model_clusters: profiles have shape {np.shape(profiles)}; expected "
                f"({n_voxels}, n_dims), one row per voxel"
            )
        graph = knn_graph(np.asarray(profiles)[keep], k, metric=metric)
    else:
        raise ConfigError("best_model_clusters: give profiles (for a kNN graph) or an adjacency")

    codes = labels[keep]
    edges = _Graph(graph, "best_model_clusters")
    q = edges.q(codes, len(names), 1.0)
    rng = np.random.default_rng(seed)
    null = np.array([edges.q(rng.permutation(codes), len(names), 1.0) for _ in range(n_null)])
    if null.size >= 2:
        null_mean, null_std = float(null.mean()), float(null.std(ddof=1))
    else:
        null_mean, null_std = float("nan"), float("nan")
    z = (q - null_mean) / null_std if null_std > 0 else float("nan")
    p = float((1 + np.sum(null >= q)) / (1 + n_null))
    return ClusterResult(
        labels=labels,
        label_names=names,
        counts=np.bincount(codes, minlength=len(names)),
        modularity=q,
        null_mean=null_mean,
        null_std=null_std,
        z=float(z),
        p=p,
        null=null,
    )
