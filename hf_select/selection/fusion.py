"""Score fusion with a diversity walk, in the spirit of DEITA's score-first, diversity-aware selection.

:func:`fused_diverse` does three things:

1. **Normalise** each score column named in ``scores`` (``{column: weight}``) over the rows that have every score:
   ``rank`` (default): the row's percentile, ``rank / m`` in (0, 1], the highest value 1 (ties share their
   average rank); ``zscore``: ``(value - mean) / sd``; ``minmax``: ``(value - min) / (max - min)`` in [0, 1].
   A negative weight means "lower is better": the column is negated before normalising, and ``|weight|`` is used.
2. **Combine**: ``sum`` (default) = sum of ``|weight| x normalised``; ``product`` = product of
   ``normalised ** |weight|`` (DEITA's complexity x quality; needs ``rank`` or ``minmax``, which are >= 0).
3. **Walk** the rows from the best combined score down and add a row only when its cosine distance
   (1 - cosine similarity) to every row already chosen is more than ``min_distance``, until the budget. With
   ``min_distance`` 0 or ``None`` no embedding is read and the step is a plain top-k of the combined score.

If the walk ends short of the budget (too many rows are near others), ``fill="best"`` (default) tops the subset up
with the best-scoring rows the walk passed over, counted in ``info["filled"]``; ``fill="error"`` raises instead.
The budget is never silently smaller.

Reasons: ``<column>_status:<status>`` (a score's status column, when present, is not ok), ``nan_score:<column>``
(first NaN score column), ``no_embedding``, ``too_close`` (skipped by the walk and not needed for the fill),
``not_top`` (not reached).

Example:
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"ifd": [0.9, 0.8, 0.7, 0.1], "judge": [5.0, 5.0, 1.0, 4.0],
    ...                         "embedding": [[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.7, 0.7]]})
    >>> fused_diverse(ds, scores={"ifd": 1.0, "judge": 1.0}, count=2, min_distance=0.05).keep.tolist()
    [0, 2]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import HFSelectError
from .base import StepResult, column_values, embedding_matrix, resolve_count, string_values

NORMALISATIONS = ("rank", "zscore", "minmax")
COMBINES = ("sum", "product")
FILLS = ("best", "error")


def normalise(values: np.ndarray, method: str) -> np.ndarray:
    """Normalise finite ``values`` (higher = better): ``rank`` percentile in (0, 1], ``zscore`` or ``minmax``.

    Example:
        >>> normalise(np.array([3.0, 1.0, 2.0]), "rank").tolist()
        [1.0, 0.3333333333333333, 0.6666666666666666]
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {method!r}")
    m = len(values)
    if m == 0:
        return values.astype(np.float64)
    if method == "rank":
        from scipy.stats import rankdata

        return rankdata(values, method="average") / m
    if method == "zscore":
        sd = values.std()
        return (values - values.mean()) / sd if sd > 0 else np.zeros(m)
    lo, hi = values.min(), values.max()
    return (values - lo) / (hi - lo) if hi > lo else np.ones(m)


def fused_scores(dataset: Any, scores: Mapping[str, float], *, method: str = "rank", combine: str = "sum",
                 step: str = "fused_diverse") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The combined score of every row (NaN where a score is missing or its status is not ok) and the drop masks
    per reason (``<column>_status:<status>``, ``nan_score:<column>``).

    Raises:
        HFSelectError: ``scores`` empty or not ``{column: weight}``, a weight of 0 or not finite, a missing column.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"a": [1.0, 2.0, float("nan")], "b": [2.0, 1.0, 0.0]})
        >>> fused_scores(ds, {"a": 1.0, "b": 1.0})[0].tolist()  # rank percentiles: 0.5 + 1.0 and 1.0 + 0.5
        [1.5, 1.5, nan]
    """
    if not isinstance(scores, Mapping) or not scores:
        raise HFSelectError(f"{step}: scores must be a mapping {{column: weight}} with at least one column, e.g. "
                            f"{{ifd: 1.0, quality: 1.0}}; got {scores!r}")
    if method not in NORMALISATIONS:
        raise HFSelectError(f"{step}: normalise must be one of {NORMALISATIONS}, got {method!r}")
    if combine not in COMBINES:
        raise HFSelectError(f"{step}: combine must be one of {COMBINES}, got {combine!r}")
    if combine == "product" and method == "zscore":
        raise HFSelectError(f"{step}: combine='product' needs non-negative scores: use normalise='rank' or 'minmax'")
    n = len(dataset)
    reasons: dict[str, np.ndarray] = {}
    raw: dict[str, np.ndarray] = {}
    bad = np.zeros(n, bool)
    for col, w in scores.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w == 0:
            raise HFSelectError(f"{step}: scores.{col} weight must be a non-zero number, got {w!r}")
        v = column_values(dataset, col, step)
        status_col = f"{col}_status"
        if status_col in dataset.column_names:
            status = np.asarray(string_values(dataset, status_col, step), dtype=object)
            for st in sorted({s for s in status if s != "ok"}, key=str):
                reasons[f"{status_col}:{st}"] = status == st
            bad |= status != "ok"
        nan = np.isnan(v)
        reasons[f"nan_score:{col}"] = nan
        bad |= nan
        raw[col] = v
    ok = np.flatnonzero(~bad)
    total = np.full(n, np.nan)
    acc = np.zeros(len(ok)) if combine == "sum" else np.ones(len(ok))
    for col, w in scores.items():
        u = normalise(raw[col][ok] * (1.0 if w > 0 else -1.0), method)
        acc = acc + abs(w) * u if combine == "sum" else acc * np.power(u, abs(w))
    total[ok] = acc
    return total, reasons


def fused_diverse(
    dataset: Any,
    *,
    scores: Mapping[str, float],
    count: int | None = None,
    fraction: float | None = None,
    of: str = "all",
    normalise: str = "rank",
    combine: str = "sum",
    column: str = "embedding",
    min_distance: float | None = 0.1,
    fill: str = "best",
    block_size: int = 512,
) -> StepResult:
    """Rank by a weighted combination of normalised scores, then add rows best first only when their cosine
    distance to every chosen row exceeds ``min_distance``, until the budget (see the module docstring).

    Args:
        scores: ``{column: weight}``; a negative weight ranks that column low-is-better.
        count, fraction, of: the budget (``of="scored"``: a fraction of the rows with every score).
        normalise: ``rank`` | ``zscore`` | ``minmax``.
        combine: ``sum`` | ``product``.
        column: the embedding column of the diversity walk.
        min_distance: cosine distance in [0, 2]; 0 or None turns the walk off.
        fill: ``best`` (top up with the best skipped rows, counted) or ``error``.
        block_size: candidates compared with the chosen rows at once.

    Raises:
        HFSelectError: bad ``scores``/``normalise``/``combine``/``fill``, a missing column, or (``fill="error"``)
            a walk that ends short of the budget.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"q": [3.0, 2.0, 1.0]})
        >>> fused_diverse(ds, scores={"q": 1.0}, count=2, min_distance=None).keep.tolist()
        [0, 1]
    """
    import torch

    if fill not in FILLS:
        raise HFSelectError(f"fused_diverse: fill must be one of {FILLS}, got {fill!r}")
    if min_distance is not None and not 0.0 <= float(min_distance) <= 2.0:
        raise HFSelectError(f"fused_diverse: min_distance is a cosine distance in [0, 2], got {min_distance!r}")
    if block_size < 1:
        raise HFSelectError(f"fused_diverse: block_size must be >= 1, got {block_size}")
    n = len(dataset)
    total, reasons = fused_scores(dataset, scores, method=normalise, combine=combine)
    scored = ~np.isnan(total)
    walk = bool(min_distance)
    no_emb = np.zeros(n, bool)
    pos_in_x = np.full(n, -1, dtype=np.int64)
    x = np.zeros((0, 0), np.float32)
    if walk:
        x, rows = embedding_matrix(dataset, column, "fused_diverse")
        pos_in_x[rows] = np.arange(len(rows))
        no_emb = pos_in_x < 0
    eligible = np.flatnonzero(scored & ~no_emb)
    want = resolve_count(n, len(eligible), fraction=fraction, count=count, of=of, step="fused_diverse",
                         n_scored=int(scored.sum()))
    order = eligible[np.lexsort((eligible, -total[eligible]))]
    keep = np.zeros(n, bool)
    skipped: list[int] = []
    reached = len(order)
    if not walk:
        keep[order[:want]] = True
        reached = want
    elif want > 0:
        xt = torch.from_numpy(x)
        xt = xt / xt.norm(dim=1, keepdim=True).clamp_min(1e-12)
        chosen = torch.empty((want, xt.shape[1]), dtype=xt.dtype)
        n_chosen = 0
        max_sim = 1.0 - float(min_distance)  # type: ignore[arg-type]
        for lo in range(0, len(order), block_size):
            block = order[lo : lo + block_size]
            b = xt[torch.from_numpy(pos_in_x[block])]
            near_prev = (b @ chosen[:n_chosen].T >= max_sim).any(1).numpy() if n_chosen else np.zeros(len(block), bool)
            within = (b @ b.T).numpy() >= max_sim
            taken_here: list[int] = []
            for r in range(len(block)):
                if near_prev[r] or (taken_here and within[r, taken_here].any()):
                    skipped.append(int(block[r]))
                    continue
                taken_here.append(r)
                keep[block[r]] = True
                chosen[n_chosen] = b[r]
                n_chosen += 1
                if n_chosen == want:
                    reached = lo + r + 1
                    break
            if n_chosen == want:
                break
    short = want - int(keep.sum())
    filled = 0
    if short > 0:
        if fill == "error":
            raise HFSelectError(f"fused_diverse: the diversity walk chose {want - short} of {want} rows (every other "
                                f"row is within cosine distance {min_distance} of a chosen one); lower min_distance "
                                "or use fill: best")
        top_up = skipped[:short]
        keep[top_up] = True
        filled = len(top_up)
    too_close = np.zeros(n, bool)
    too_close[skipped] = True
    info: dict[str, Any] = {"budget": want, "eligible": int(len(eligible)), "normalise": normalise,
                            "combine": combine, "weights": dict(scores), "min_distance": min_distance,
                            "walked": int(reached), "skipped_too_close": int(len(skipped)), "filled": filled}
    if keep.any():
        info["cutoff"] = float(total[keep].min())
    all_reasons = dict(reasons)
    all_reasons["no_embedding"] = no_emb
    all_reasons["too_close"] = too_close
    all_reasons["not_top"] = ~keep
    return StepResult.from_mask(keep, all_reasons, info)
