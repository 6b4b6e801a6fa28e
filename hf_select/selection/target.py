"""Target-aware selection (RDS+): keep the pool rows whose embeddings are closest to a small target set.

Given embeddings of a few example rows of the kind the user wants (never the evaluation set itself), every pool row
gets its cosine similarity to each target; the rows are ranked by

- ``max`` (default): the similarity to the nearest target;
- ``mean``: the mean similarity over all targets;
- ``round_robin``: the targets take turns, each taking its most similar row not yet chosen, until the budget
  (so every target gets about the same number of rows, whatever the shape of the pool).

A selector never loads a model: the target embeddings come from a file or folder holding an ``embedding`` column
(a ``save_to_disk`` folder, a parquet/json/jsonl file of rows with an ``embedding`` field, or a ``.npy`` matrix),
or from Python as an array (wrap it in :class:`TargetEmbeddings` to give it a short name in the provenance).
``hf-select select --target FILE`` embeds a prompts/answers file with an embedder and passes the vectors in. The
pool and the targets must come from the same embedder (same model, same ``text``): the dimension is checked, the
model cannot be.

Reasons: ``no_embedding``, ``not_similar``.

Example:
    >>> import numpy as np
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"embedding": [[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]})
    >>> target_similarity(ds, target=np.array([[1.0, 0.1]]), count=1).keep.tolist()
    [0]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HFSelectError
from .base import StepResult, embedding_matrix, resolve_count

AGGREGATES = ("max", "mean", "round_robin")


class TargetEmbeddings:
    """A target set's embedding matrix (T x d) with a name for the provenance (``name_or_path``).

    Example:
        >>> t = TargetEmbeddings(np.eye(2), name="two targets")
        >>> t.matrix.shape, t.name_or_path
        ((2, 2), 'two targets (2 target rows)')
    """

    def __init__(self, matrix: Any, name: str = "array", rows_skipped: int = 0):
        self.matrix = np.asarray(matrix, dtype=np.float32)
        self.name = name
        self.rows_skipped = rows_skipped

    @property
    def name_or_path(self) -> str:
        return f"{self.name} ({self.matrix.shape[0]} target rows)" if self.matrix.ndim == 2 else self.name

    def __repr__(self) -> str:
        return f"TargetEmbeddings({self.name_or_path})"


def load_target_embeddings(target: Any, column: str = "embedding", step: str = "target_similarity"
                           ) -> TargetEmbeddings:
    """The target set's usable vectors (finite, non-empty; others are skipped and counted).

    ``target``: a :class:`TargetEmbeddings`, an array/list of vectors, a ``.npy`` file, or a dataset file/folder
    with an embedding ``column``.

    Raises:
        HFSelectError: no usable target row, a missing file or column, or a matrix that is not 2-D.

    Example:
        >>> load_target_embeddings([[1.0, 0.0], [float("nan"), 1.0]]).matrix.tolist()
        [[1.0, 0.0]]
    """
    if isinstance(target, TargetEmbeddings):
        matrix, name, skipped = target.matrix, target.name, target.rows_skipped
    elif isinstance(target, (str, os.PathLike)):
        path = Path(target)
        name = str(path)
        if not path.exists():
            raise HFSelectError(f"{step}: target {path}: no such file or folder (a .npy matrix or a dataset with an "
                                f"{column!r} column).")
        if path.suffix == ".npy":
            matrix = np.load(path, allow_pickle=False)
        else:
            from ..io import load_rows

            rows = load_rows(path)
            x, kept = embedding_matrix(rows, column, step)
            if len(kept) == 0:
                raise HFSelectError(f"{step}: target {path} has no usable row in field {column!r} ({len(rows)} rows, "
                                    "none with a finite vector); embed the target rows first.")
            matrix = x
            skipped = len(rows) - len(kept)
            return TargetEmbeddings(matrix, name=name, rows_skipped=skipped)
        skipped = 0
    elif target is None:
        raise HFSelectError(f"{step}: no target given; pass target: <file or folder with an {column!r} field> (or "
                            "`hf-select select --target FILE`).")
    else:
        matrix, name, skipped = target, "array", 0
    try:
        m = np.asarray(matrix, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise HFSelectError(f"{step}: target {name}: not a matrix of numbers ({err}).") from err
    if m.ndim == 1 and m.size:
        m = m[None, :]
    if m.ndim != 2:
        raise HFSelectError(f"{step}: target {name}: expected a 2-D matrix (targets x dimensions), got shape "
                            f"{m.shape}.")
    usable = np.isfinite(m).all(1) & (np.abs(m).sum(1) > 0) if m.shape[1] else np.zeros(len(m), bool)
    if not usable.any():
        raise HFSelectError(f"{step}: the target set {name} has no usable row in field {column!r} ({len(m)} rows, "
                            "none with a finite non-zero vector).")
    return TargetEmbeddings(m[usable], name=str(name), rows_skipped=skipped + int((~usable).sum()))


def cosine_to_targets(x: np.ndarray, targets: np.ndarray, aggregate: str, block_rows: int = 8192) -> np.ndarray:
    """Per pool row: max or mean cosine similarity to the targets (computed in blocks of pool rows).

    Example:
        >>> cosine_to_targets(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]), "mean").tolist()
        [0.5]
    """
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    tn = targets / np.maximum(np.linalg.norm(targets, axis=1, keepdims=True), 1e-12)
    out = np.empty(len(x), dtype=np.float64)
    for lo in range(0, len(x), block_rows):
        sims = xn[lo : lo + block_rows].astype(np.float64) @ tn.T.astype(np.float64)
        out[lo : lo + block_rows] = sims.max(1) if aggregate == "max" else sims.mean(1)
    return out


def _top_order(sims: np.ndarray, want: int) -> np.ndarray:
    """The ``want`` most similar rows of one target's similarity column, best first (ties by row order)."""
    m = len(sims)
    if want < m:
        part = np.argpartition(-sims, want - 1)[:want]
        cut = sims[part].min()
        part = np.flatnonzero(sims >= cut)  # every row tied at the cut, so that ties resolve by row order
    else:
        part = np.arange(m)
    return part[np.lexsort((part, -sims[part]))][:want]


def _take_in_turns(orders: list[np.ndarray], want: int) -> np.ndarray:
    taken: set[int] = set()
    ptr = [0] * len(orders)
    out: list[int] = []
    j = 0
    while len(out) < want:
        order = orders[j]
        while int(order[ptr[j]]) in taken:  # fewer than ``want`` rows are taken, so a target's top-want suffices
            ptr[j] += 1
        r = int(order[ptr[j]])
        taken.add(r)
        out.append(r)
        j = (j + 1) % len(orders)
    return np.asarray(out, dtype=np.int64)


def round_robin(sims: np.ndarray, want: int) -> np.ndarray:
    """Rows chosen by targets in turn (target 0, 1, ..., T-1, 0, ...), each its most similar row not yet chosen
    (ties by row order). ``sims`` is rows x targets.

    Example:
        >>> round_robin(np.array([[0.9, 0.8], [0.1, 0.7], [0.5, 0.2]]), 3).tolist()
        [0, 1, 2]
    """
    want = min(want, sims.shape[0])
    return _take_in_turns([_top_order(sims[:, j], want) for j in range(sims.shape[1])], want)


def _round_robin_blocks(xn: np.ndarray, tn: np.ndarray, want: int, block_targets: int = 64) -> np.ndarray:
    """:func:`round_robin` without the rows x targets matrix: targets in blocks, each keeping its top-``want``."""
    want = min(want, len(xn))
    orders: list[np.ndarray] = []
    for lo in range(0, len(tn), block_targets):
        sims = xn @ tn[lo : lo + block_targets].T
        orders.extend(_top_order(sims[:, j], want) for j in range(sims.shape[1]))
    return _take_in_turns(orders, want)


def target_similarity(
    dataset: Any,
    *,
    target: Any = None,
    count: int | None = None,
    fraction: float | None = None,
    of: str = "all",
    aggregate: str = "max",
    column: str = "embedding",
    target_column: str = "embedding",
) -> StepResult:
    """Keep the pool rows most similar (cosine, ``aggregate`` = max | mean | round_robin over the targets) to the
    target set's embeddings (see the module docstring).

    Raises:
        HFSelectError: no target or no usable target row, a dimension mismatch, a bad ``aggregate``.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"embedding": [[1.0, 0.0], [0.0, 1.0], [0.9, 0.2]]})
        >>> targets = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> target_similarity(ds, target=targets, count=2, aggregate="round_robin").keep.tolist()
        [0, 1]
    """
    if aggregate not in AGGREGATES:
        raise HFSelectError(f"target_similarity: aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    t = load_target_embeddings(target, target_column, "target_similarity")
    x, rows = embedding_matrix(dataset, column, "target_similarity")
    n = len(dataset)
    if len(rows) and x.shape[1] != t.matrix.shape[1]:
        raise HFSelectError(f"target_similarity: the pool's {column!r} vectors have {x.shape[1]} dimensions but the "
                            f"target's have {t.matrix.shape[1]}; embed both with the same model (and text).")
    missing = np.ones(n, bool)
    missing[rows] = False
    want = resolve_count(n, len(rows), fraction=fraction, count=count, of=of, step="target_similarity")
    keep = np.zeros(n, bool)
    info: dict[str, Any] = {"aggregate": aggregate, "targets": int(len(t.matrix)),
                            "target_rows_skipped": int(t.rows_skipped), "target": t.name_or_path}
    if want and aggregate == "round_robin":
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        tn = t.matrix / np.maximum(np.linalg.norm(t.matrix, axis=1, keepdims=True), 1e-12)
        picked = _round_robin_blocks(xn.astype(np.float64), tn.astype(np.float64), want)
        keep[rows[picked]] = True
    elif want:
        sim = cosine_to_targets(x, t.matrix, aggregate)
        local = np.lexsort((np.arange(len(rows)), -sim))[:want]
        keep[rows[local]] = True
        info["cutoff"] = float(sim[local[-1]])
        info["mean_similarity_kept"] = float(sim[local].mean())
        info["mean_similarity_pool"] = float(sim.mean())
    return StepResult.from_mask(keep, {"no_embedding": missing, "not_similar": ~keep}, info)
