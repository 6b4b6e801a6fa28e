"""Cluster-based selectors: Cherry LLM's k-means band sampling and facility location on a sparse k-NN graph.

- :func:`kmeans_cluster_sample` picks Cherry LLM's "pre-experienced" rows: k-means on the embeddings
  (scikit-learn), then in each cluster only the rows whose score (prompt perplexity in Cherry) lies inside a
  percentile band, ``per_cluster`` of them, evenly spaced in row order (Cherry's rule) or at random.
- :func:`facility_location` maximises ``F(S) = sum_i max_{j in S} sim(i, j)`` by lazy greedy, where ``sim`` is
  kept only on a k-nearest-neighbour graph (each row's ``n_neighbors`` most similar rows, itself included). The
  graph is built in row blocks (torch), so nothing is N x N and it works on 100k+ rows. Greedy on a monotone
  submodular function is within ``1 - 1/e`` of the best subset of the same size.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 16)).astype("float32")
    >>> picks = facility_location(x, 10, n_neighbors=8)
    >>> len(picks), len(set(picks))
    (10, 10)
    >>> ppl = np.random.default_rng(1).uniform(1, 10, size=200)
    >>> len(kmeans_cluster_sample(x, ppl, n_clusters=5, per_cluster=3))
    15
"""

from __future__ import annotations

import heapq
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import dense_rows

logger = logging.getLogger(__name__)

FL_METRICS = ("cosine", "euclidean")
PICK_RULES = ("even", "random")
_BLOCK_ELEMENTS = 1 << 26
# Above this many rows KMeans becomes MiniBatchKMeans unless told otherwise.
MINIBATCH_ABOVE = 50_000


def _as_matrix(embeddings: Any, name: str = "embeddings") -> np.ndarray:
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    arr = dense_rows(embeddings, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x dimensions), got shape {arr.shape}")
    arr = np.asarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).all(1))[0])
        raise ValueError(f"{name}: row {bad} holds NaN or infinite values")
    return arr


# -- k-means band sampling (Cherry LLM) ---------------------------------------------------------------------------


@dataclass
class ClusterSample:
    """Result of :func:`kmeans_cluster_sample` with ``return_result=True``.

    ``in_band`` marks the rows eligible in their cluster (finite score inside the band, or any finite score in a
    cluster smaller than ``per_cluster``); ``inertia`` is the k-means objective.
    """

    indices: list[int]
    labels: np.ndarray
    in_band: np.ndarray
    inertia: float
    n_clusters: int


def kmeans_cluster_sample(
    embeddings: Any,
    scores: Any,
    *,
    n_clusters: int = 100,
    per_cluster: int = 10,
    band: tuple[float, float] = (25, 75),
    seed: int = 0,
    pick: str = "even",
    minibatch: bool | None = None,
    return_result: bool = False,
) -> list[int] | ClusterSample:
    """Cherry LLM's pre-experienced sample: ``per_cluster`` rows of each k-means cluster from the score band.

    Args:
        embeddings: N x d array (Cherry: mean-pooled last hidden states of the prompts).
        scores: N scores (Cherry: prompt perplexity) or None to sample clusters without a band. Rows with a NaN
            score are never picked.
        n_clusters: k of k-means (more than the rows: one cluster per row, with a warning).
        per_cluster: rows taken from each cluster; a cluster with fewer rows gives all of its rows (as Cherry).
        band: percentiles ``(low, high)`` of the cluster's scores; rows with ``low <= score <= high`` qualify.
        seed: k-means initialisation (and the draw with ``pick="random"``).
        pick: ``even`` (Cherry: every ``len(band_rows) // per_cluster``-th row in row order) or ``random``.
        minibatch: use ``MiniBatchKMeans``; default: when there are more than 50,000 rows.
        return_result: return a :class:`ClusterSample` instead of the index list.

    Returns:
        The picked row indices in increasing order.

    Example:
        >>> import numpy as np
        >>> x = np.concatenate([np.zeros((20, 2)), np.ones((20, 2)) * 10])
        >>> x += np.random.default_rng(0).normal(scale=0.1, size=x.shape)
        >>> picks = kmeans_cluster_sample(x, np.arange(40.0), n_clusters=2, per_cluster=2)
        >>> sum(p < 20 for p in picks), sum(p >= 20 for p in picks)
        (2, 2)
    """
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    if per_cluster < 1:
        raise ValueError(f"per_cluster must be >= 1, got {per_cluster}")
    lo_pct, hi_pct = (float(b) for b in band)
    if not 0 <= lo_pct <= hi_pct <= 100:
        raise ValueError(f"band must be two percentiles 0 <= low <= high <= 100, got {tuple(band)}")
    if pick not in PICK_RULES:
        raise ValueError(f"pick must be one of {PICK_RULES}, got {pick!r}")
    x = _as_matrix(embeddings)
    n = x.shape[0]
    s = np.full(n, 0.0) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.shape[0] != n:
        raise ValueError(f"scores has {s.shape[0]} values for {n} embedding rows")
    empty = ClusterSample([], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), 0.0, 0)
    if n == 0:
        warnings.warn("kmeans_cluster_sample: no rows; returning no picks.", UserWarning, stacklevel=2)
        return empty if return_result else []
    if n_clusters > n:
        warnings.warn(f"kmeans_cluster_sample: n_clusters={n_clusters} is more than the {n} rows; using {n}.",
                      UserWarning, stacklevel=2)
        n_clusters = n
    use_minibatch = n > MINIBATCH_ABOVE if minibatch is None else minibatch
    if use_minibatch:
        from sklearn.cluster import MiniBatchKMeans

        km: Any = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=3, batch_size=4096)
    else:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=n_clusters, random_state=seed, n_init="auto")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Number of distinct clusters.*")
        labels = km.fit_predict(x).astype(np.int64)
    rng = np.random.default_rng(seed)
    finite = np.isfinite(s)
    in_band = np.zeros(n, dtype=bool)
    picks: list[np.ndarray] = []
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_clusters + 1))
    for c in range(n_clusters):
        members = order[bounds[c] : bounds[c + 1]]  # increasing row order (stable sort)
        members = members[finite[members]]
        if len(members) == 0:
            continue
        if len(members) < per_cluster:
            eligible = members
        else:
            lo, hi = np.percentile(s[members], [lo_pct, hi_pct])
            eligible = members[(s[members] >= lo) & (s[members] <= hi)]
        in_band[eligible] = True
        if len(eligible) <= per_cluster:
            picks.append(eligible)
        elif pick == "even":
            picks.append(eligible[:: len(eligible) // per_cluster][:per_cluster])
        else:
            picks.append(np.sort(rng.choice(eligible, size=per_cluster, replace=False)))
    chosen = sorted(int(i) for i in np.concatenate(picks)) if picks else []
    if return_result:
        return ClusterSample(chosen, labels, in_band, float(getattr(km, "inertia_", math.nan)), n_clusters)
    return chosen


# -- facility location --------------------------------------------------------------------------------------------


def knn_similarity_graph(
    embeddings: Any,
    n_neighbors: int = 32,
    *,
    metric: str = "cosine",
    device: str | torch.device | None = None,
) -> Any:
    """Sparse N x N similarity matrix (``scipy.sparse.csr_matrix``): row i holds its ``n_neighbors`` most similar
    rows, itself included (similarity 1).

    Similarity: ``cosine`` = cosine similarity clipped at 0; ``euclidean`` = ``exp(-d^2 / m)`` with ``m`` the
    median squared distance to the neighbours. Built in blocks of rows (``block x N`` at a time), on ``device``.

    Example:
        >>> import numpy as np
        >>> g = knn_similarity_graph(np.eye(4), n_neighbors=2)
        >>> g.shape, g.nnz
        ((4, 4), 8)
    """
    from scipy.sparse import csr_matrix

    if metric not in FL_METRICS:
        raise ValueError(f"metric must be one of {FL_METRICS}, got {metric!r}")
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
    x = _as_matrix(embeddings)
    n = x.shape[0]
    if n == 0:
        return csr_matrix((0, 0), dtype=np.float32)
    kk = min(n_neighbors, n)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    xt = torch.from_numpy(x).to(dev)
    if metric == "cosine":
        norms = xt.norm(dim=1, keepdim=True)
        if n and bool((norms == 0).any()):
            bad = int(torch.nonzero(norms[:, 0] == 0)[0])
            raise ValueError(f"embeddings: row {bad} is all zeros, which has no cosine similarity")
        xt = xt / norms
    sq = (xt * xt).sum(1)
    cols = np.empty((n, kk), dtype=np.int64)
    vals = np.empty((n, kk), dtype=np.float32)
    step = max(1, _BLOCK_ELEMENTS // max(1, n))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        block = xt[lo:hi] @ xt.T
        if metric == "euclidean":  # larger is nearer: the negative squared distance
            block.mul_(2.0).sub_(sq[lo:hi, None]).sub_(sq[None, :]).clamp_max_(0.0)
        rows = torch.arange(hi - lo, device=dev)
        block[rows, rows + lo] = math.inf  # itself first, whatever the ties
        top_v, top_i = torch.topk(block, kk, dim=1)
        top_v[:, 0] = 1.0 if metric == "cosine" else 0.0
        cols[lo:hi] = top_i.cpu().numpy()
        vals[lo:hi] = top_v.cpu().numpy()
    if metric == "cosine":
        sims = np.clip(vals, 0.0, 1.0)
    else:
        d2 = -vals
        off = d2[:, 1:]
        scale = float(np.median(off)) if off.size else 1.0
        sims = np.exp(-d2 / (scale if scale > 0 else 1.0)).astype(np.float32)
    indptr = np.arange(0, n * kk + 1, kk, dtype=np.int64)
    graph = csr_matrix((sims.reshape(-1), cols.reshape(-1), indptr), shape=(n, n))
    graph.sort_indices()
    return graph


def facility_location_objective(graph: Any, indices: Any) -> float:
    """``F(S) = sum_i max_{j in S} graph[i, j]`` (0 for a row with no neighbour in S).

    Example:
        >>> import numpy as np
        >>> g = knn_similarity_graph(np.eye(3), n_neighbors=3)
        >>> facility_location_objective(g, [0, 1])
        2.0
    """
    idx = np.asarray(list(indices), dtype=np.int64)
    if idx.size == 0:
        return 0.0
    sub = graph[:, idx]
    return float(np.asarray(sub.max(axis=1).todense()).sum())


@dataclass
class FacilityLocationResult:
    """Result of :func:`facility_location` with ``return_result=True``.

    ``gains[j]`` is the objective added by pick j, ``objective[j]`` the objective after pick j, and
    ``max_objective`` the objective of all rows (so ``objective[-1] / max_objective`` is the coverage reached).
    """

    indices: list[int]
    gains: list[float] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    max_objective: float = 0.0
    evaluations: int = 0


def facility_location(
    embeddings: Any,
    k: int,
    *,
    n_neighbors: int = 32,
    seed: int = 0,
    metric: str = "cosine",
    device: str | torch.device | None = None,
    graph: Any = None,
    return_result: bool = False,
) -> list[int] | FacilityLocationResult:
    """Pick ``k`` rows maximising facility location on a sparse k-NN similarity graph, by lazy greedy.

    Args:
        embeddings: N x d array (ignored when ``graph`` is given, except for its row count).
        k: rows to pick (more than the rows: all of them, with a warning).
        n_neighbors: neighbours per row in the graph, itself included.
        seed: breaks exact ties in the gains (by a seeded permutation of the rows).
        metric: ``cosine`` or ``euclidean`` (see :func:`knn_similarity_graph`).
        device: where the graph is built (CUDA when available by default).
        graph: a precomputed similarity matrix (N x N scipy sparse) to use instead.
        return_result: return a :class:`FacilityLocationResult` with gains and objective values.

    Returns:
        The picked row indices in pick order (largest gain first).

    Example:
        >>> import numpy as np
        >>> x = np.concatenate([np.zeros((5, 2)), np.full((5, 2), 9.0)]) + np.arange(10)[:, None] * 0.01
        >>> sorted(p // 5 for p in facility_location(x, 2, n_neighbors=5, metric="euclidean"))
        [0, 1]
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    if graph is None:
        graph = knn_similarity_graph(embeddings, n_neighbors, metric=metric, device=device)
    n = graph.shape[0]
    if n == 0:
        warnings.warn("facility_location: no rows; returning no picks.", UserWarning, stacklevel=2)
    elif k > n:
        warnings.warn(f"facility_location: k={k} is more than the {n} rows; returning all of them.", UserWarning,
                      stacklevel=2)
    k = int(min(k, n))
    by_col = graph.T.tocsr()  # row j of by_col: the rows i that have j as a neighbour, with sim(i, j)
    indptr, rows_of, sims = by_col.indptr, by_col.indices, by_col.data.astype(np.float64)
    tiebreak = np.random.default_rng(seed).permutation(n)
    cur = np.zeros(n, dtype=np.float64)
    upper = np.add.reduceat(sims, indptr[:-1]) if sims.size else np.zeros(n)
    upper[np.diff(indptr) == 0] = 0.0  # reduceat repeats the next value for empty rows
    heap = [(-float(upper[j]), int(tiebreak[j]), j) for j in range(n)]
    heapq.heapify(heap)
    result = FacilityLocationResult(indices=[], max_objective=float(np.asarray(graph.max(axis=1).todense()).sum())
                                    if n else 0.0)
    total = 0.0
    while len(result.indices) < k and heap:
        _, tb, j = heapq.heappop(heap)
        s, e = indptr[j], indptr[j + 1]
        r = rows_of[s:e]
        gain = float(np.maximum(sims[s:e] - cur[r], 0.0).sum())
        result.evaluations += 1
        if heap and (-gain, tb) > heap[0][:2]:
            heapq.heappush(heap, (-gain, tb, j))  # its bound was stale; another row may do better now
            continue
        cur[r] = np.maximum(cur[r], sims[s:e])  # a row lists each neighbour once, so r holds no repeats
        total += gain
        result.indices.append(int(j))
        result.gains.append(gain)
        result.objective.append(total)
    return result if return_result else list(result.indices)
