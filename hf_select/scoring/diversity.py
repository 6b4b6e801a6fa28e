"""The model-free InstructMining indicators: MTLD lexical diversity of a text, and KNN-k distance of each row to its
neighbours in embedding space.

Both are plain functions of text or vectors (no model is loaded here); :class:`~hf_select.scoring.indicators.
IndicatorScorer` writes them as the columns ``ind_mtld`` and ``ind_knn{k}``.

Example:
    >>> mtld("a b a b a b a b")
    4.0
    >>> knn_distance([[0.0], [1.0], [3.0]], k=1).tolist()
    [1.0, 1.0, 2.0]
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

KNN_METRICS = ("euclidean", "cosine")
KNN_REDUCE = ("kth", "mean")
MTLD_THRESHOLD = 0.72

# -- MTLD -------------------------------------------------------------------------------------------------------------
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


def mtld_words(text: str) -> list[str]:
    """The words MTLD counts: lower-cased runs of letters and digits (inner apostrophes kept), punctuation dropped.

    Example:
        >>> mtld_words("The cat's hat, THE hat!")
        ['the', "cat's", 'hat', 'the', 'hat']
    """
    return _WORD.findall(text.lower())


def _mtld_pass(words: Sequence[str], threshold: float) -> float:
    """Factor count of one pass: +1 each time the running TTR falls to ``threshold`` or below (then reset), plus a
    partial factor ``(1 - TTR) / (1 - threshold)`` for the unfinished last segment."""
    factors = 0.0
    types: set[str] = set()
    count = 0
    ttr = 1.0
    for w in words:
        count += 1
        types.add(w)
        ttr = len(types) / count
        if ttr <= threshold:
            factors += 1.0
            types, count, ttr = set(), 0, 1.0
    if count:
        factors += (1.0 - ttr) / (1.0 - threshold)
    return factors


def mtld(text: str | Sequence[str], threshold: float = MTLD_THRESHOLD) -> float:
    """Measure of Textual Lexical Diversity (McCarthy and Jarvis, 2010), bidirectional.

    Each pass (forward, then over the reversed words) counts factors: a factor ends when the running type-token
    ratio falls to ``threshold`` (0.72) or below; the unfinished last segment adds ``(1 - TTR) / (1 - threshold)``.
    A pass's MTLD is ``words / factors`` and the result is the mean of the two passes. Conventions here: a text with
    no words gives NaN; a text whose words are all distinct has no factor at all (its TTR never drops) and gets its
    word count (the length of its one unbroken segment).

    Args:
        text: a string (split with :func:`mtld_words`) or an already split list of words.

    Example:
        >>> mtld("a b a b a b a b")
        4.0
        >>> round(mtld("a a b c"), 4)
        4.24
    """
    words = mtld_words(text) if isinstance(text, str) else list(text)
    if not words:
        return math.nan
    if not 0 < threshold < 1:
        raise ValueError(f"the MTLD threshold must be in (0, 1), got {threshold}")
    forward = _mtld_pass(words, threshold)
    backward = _mtld_pass(words[::-1], threshold)
    if forward == 0 or backward == 0:
        return float(len(words))
    return (len(words) / forward + len(words) / backward) / 2.0


# -- KNN-k ------------------------------------------------------------------------------------------------------------
def _as_matrix(embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
    """(n x d float array with zero rows where invalid, valid mask) from an array or a list of float lists/None."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    try:
        mat = np.asarray(embeddings, dtype=np.float64)
    except (TypeError, ValueError):  # ragged, or None rows
        mat = None
    if mat is not None:
        if mat.ndim == 2:
            valid = np.isfinite(mat).all(axis=1)
            return np.where(valid[:, None], mat, 0.0), valid
        if mat.size == 0:
            return np.zeros((0, 0)), np.zeros(0, dtype=bool)
        raise ValueError(f"expected one embedding (a list of floats) per row, got an array of shape {mat.shape}")
    rows = list(embeddings)
    dims = {len(r) for r in rows if r is not None and len(r) > 0}
    if len(dims) > 1:
        raise ValueError(f"the embeddings have different lengths {sorted(dims)}; every row needs the same dimension")
    dim = dims.pop() if dims else 0
    mat = np.zeros((len(rows), dim), dtype=np.float64)
    valid = np.zeros(len(rows), dtype=bool)
    for i, r in enumerate(rows):
        if r is None or dim == 0 or len(r) != dim:
            continue
        v = np.asarray(r, dtype=np.float64)
        if np.isfinite(v).all():
            mat[i], valid[i] = v, True
    return mat, valid


def knn_distance(
    embeddings: Any,
    k: int = 6,
    *,
    metric: str = "euclidean",
    reduce: str = "kth",
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Distance of each row to its ``k``-th nearest *other* row (InstructMining's KNN-k), exact.

    The rows are compared by brute force in chunks of query rows (torch; float64 on CPU, float32 on GPU), so memory
    stays at ``chunk_size x n`` distances. A row is never its own neighbour; exact duplicates are neighbours at
    distance 0. Rows whose embedding is missing (None, empty) or not finite get NaN and are nobody's neighbour.
    With fewer than ``k + 1`` valid rows, ``k`` is lowered to (valid rows - 1), with a warning.

    Args:
        embeddings: an ``n x d`` array/tensor or a list of float lists (e.g. ``dataset["embedding"]``).
        k: which neighbour (6 in InstructMining).
        metric: ``euclidean`` (L2 distance) or ``cosine`` (1 - cosine similarity).
        reduce: ``kth`` (distance to the k-th nearest neighbour) or ``mean`` (mean distance to the k nearest).
        chunk_size: query rows per chunk; default: as many as keep a chunk near 2**25 distances.
        device: default CUDA when available, else CPU.

    Example:
        >>> knn_distance([[0.0], [1.0], [3.0], [7.0]], k=1).tolist()
        [1.0, 1.0, 2.0, 4.0]
        >>> knn_distance([[0.0], [1.0], [3.0], [7.0]], k=2, reduce="mean").tolist()
        [2.0, 1.5, 2.5, 5.0]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if metric not in KNN_METRICS:
        raise ValueError(f"metric must be one of {KNN_METRICS}, got {metric!r}")
    if reduce not in KNN_REDUCE:
        raise ValueError(f"reduce must be one of {KNN_REDUCE}, got {reduce!r}")
    mat, valid = _as_matrix(embeddings)
    n = len(mat)
    out = np.full(n, np.nan)
    idx = np.flatnonzero(valid)
    m = len(idx)
    if m < 2:
        logger.warning("knn_distance: %d valid embeddings; no row has a neighbour (all NaN).", m)
        return out
    k_eff = min(k, m - 1)
    if k_eff < k:
        logger.warning("knn_distance: only %d valid embeddings, so k=%d is lowered to %d.", m, k, k_eff)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float64 if dev.type == "cpu" else torch.float32
    x = torch.as_tensor(mat[idx], dtype=dtype, device=dev)
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    sq = (x * x).sum(1)
    step = chunk_size or max(1, min(m, (1 << 25) // m))
    result = torch.empty(m, dtype=dtype, device=dev)
    for lo in range(0, m, step):
        hi = min(m, lo + step)
        sim = x[lo:hi] @ x.T
        if metric == "euclidean":
            dist = (sq[lo:hi, None] + sq[None, :] - 2 * sim).clamp_min_(0).sqrt_()
        else:
            dist = (1 - sim).clamp_min_(0)
        rows = torch.arange(hi - lo, device=dev)
        dist[rows, rows + lo] = math.inf
        near = torch.topk(dist, k_eff, dim=1, largest=False).values
        result[lo:hi] = near[:, -1] if reduce == "kth" else near.mean(1)
    out[idx] = result.cpu().numpy()
    return out


