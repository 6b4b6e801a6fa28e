"""k-center greedy with a per-row prior (a length or quality prior inside a diversity objective, MIG-style).

Plain k-center greedy picks the row farthest from every chosen center, ``argmax_i d(i, S)``, so it favours outliers
whatever they hold. The weighted version scales each row's distance by its weight, ``argmax_i w_i d(i, S)``
(``d(i, S)``: the distance to the nearest chosen center), so a heavy row (a long response, a high quality score) is
picked over a light one at the same distance, and a light row only where it covers ground no heavy row covers: the
greedy rule of the weighted k-center problem, whose covering radius is ``max_i w_i d(i, S)``. With every weight
equal it is plain k-center greedy (after the first pick).

The first center is the heaviest row (ties: the lowest position): every distance to an empty set is infinite, and the
weights break that tie; with ``initial`` centers the first pick follows the rule. The arithmetic is float64 on the CPU
(one pass over the rows per pick: ``O(N d)`` per pick, ``N x d`` float64 in memory), so picks are exact ties of the
brute-force rule and go to the lowest position.

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [5.0, 5.0]])
    >>> weighted_k_center_greedy(x, 2, np.array([1.0, 1.0, 1.0, 5.0])).indices  # row 3 is heaviest, then 0
    [3, 0]
    >>> weighted_k_center_greedy(x, 2, np.array([1.0, 1.0, 1.0, 1.0]), initial=[0]).indices  # plain k-center
    [2, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .kcenter import METRICS, KCenterResult


def _distances(x: np.ndarray, center: int, metric: str) -> np.ndarray:
    if metric == "cosine":  # rows are unit vectors here
        return np.maximum(1.0 - x @ x[center], 0.0)
    diff = x - x[center]
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def weighted_k_center_greedy(embeddings: Any, k: int, weights: Any, *, initial: Sequence[int] = (),
                             metric: str = "euclidean") -> KCenterResult:
    """Pick ``k`` rows by ``argmax_i weights[i] * d(i, chosen)`` (see the module docstring); ``initial`` rows are
    centers from the start (their weights are not read). ``radii[j]``: ``max_i w_i d(i, S)`` after pick ``j``.

    Raises:
        ValueError: a weight that is negative or not finite (outside ``initial``), a bad metric, a zero row for
            ``cosine``, or shapes that do not match.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (rows x dimensions), got shape {x.shape}")
    n = len(x)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != n:
        raise ValueError(f"weights has {len(w)} entries for {n} rows")
    init = np.asarray(list(initial), dtype=np.int64)
    candidate = np.ones(n, bool)
    candidate[init] = False
    if (~np.isfinite(w[candidate]) | (w[candidate] < 0)).any():
        raise ValueError("weights must be finite and >= 0 (drop or fill the rows without one first)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1)
        if (norms == 0).any():
            raise ValueError(f"embeddings: row {int(np.flatnonzero(norms == 0)[0])} is all zeros, which has no "
                             "cosine distance")
        x = x / norms[:, None]
    mind = np.full(n, np.inf)
    for c in init:
        np.minimum(mind, _distances(x, int(c), metric), out=mind)
    result = KCenterResult(indices=[], metric=metric)
    w_safe = np.where(candidate, w, 0.0)
    if len(init):
        result.initial_radius = float((w_safe * mind)[candidate].max()) if candidate.any() else 0.0
    order = np.arange(n)
    for _ in range(int(min(k, candidate.sum()))):
        if np.isinf(mind[candidate]).all():  # no center yet: the heaviest row
            score = np.where(candidate, w_safe, -np.inf)
        else:
            with np.errstate(invalid="ignore"):  # 0 x inf for a weightless row far from everything: it scores 0
                score = np.where(candidate, np.nan_to_num(w_safe * mind, nan=0.0, posinf=np.inf), -np.inf)
        best = int(order[np.lexsort((order, -score))][0])
        result.indices.append(best)
        candidate[best] = False
        np.minimum(mind, _distances(x, best, metric), out=mind)
        mind[best] = 0.0
        result.radii.append(float((w_safe * mind)[candidate].max()) if candidate.any() else 0.0)
    return result
