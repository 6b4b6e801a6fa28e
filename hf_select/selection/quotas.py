"""Composition quotas: ``stratify_by`` for every budgeted selection step, implemented once.

A step given ``stratify_by`` keeps the same number of rows it would keep without it (its *budget*), but shares that
budget out over strata in proportion to each stratum's share of the step's input rows, and runs itself inside each
stratum with that stratum's row count. (So the step runs once on all rows, which fixes the budget with the step's
own rules -- ``fraction``, ``of``, rows without a score -- and then once per stratum, with ``count``/``k`` set to
the stratum's quota: expect about twice the step's usual time.) The strata come from

- a column: ``stratify_by: source`` (any value type; null values form their own stratum ``null``), or
- embedding clusters: ``stratify_by: {clusters: 20, column: embedding}`` (seeded k-means over the vectors; rows
  without a vector form the stratum ``no_embedding``).

Quotas are rounded by the largest-remainder method, so they add up to the budget exactly. A stratum with fewer
eligible rows than its quota keeps what it has; the shortfall is shared out over the other strata (again in
proportion to their pool shares) and counted in the step's provenance ``info["quotas"]["shortfall_moved"]``; the
budget never changes silently (if every stratum runs dry, ``shortfall_unfilled`` says how many rows are missing,
with a warning).

``min_share`` (default 1.0) relaxes the quotas to a floor: every stratum keeps at least ``min_share`` x its
proportional quota (rounded down); the rest of the budget is shared in proportion to how many rows beyond its
floor the unstratified step chose in each stratum, so ``min_share=0`` reproduces the unstratified composition.

Which steps can be stratified: those with a row budget (a ``count`` or ``k`` parameter, e.g. ``top``,
``ifd_rule``, ``random``, ``longest``, ``kcenter``, ``facility_location``, ``fused_diverse``,
``target_similarity``, ``length_stratified_top``), and ``threshold``. A threshold has no budget to share and cannot
add rows that fail it, so there ``stratify_by`` keeps the largest subset of the passing rows whose composition is
exactly the pool's (largest-remainder quotas of that size fit every stratum's passing rows); the passing rows cut
to get there are dropped as ``over_quota``, lowest first with ``min`` (highest first with only ``max``), and
``info["quotas"]`` gives the passing count and the kept size. A stratum where no row passes cannot fill any share,
so it leaves the composition: the passing rows keep the pool's shares among the strata that have passing rows, with
a warning naming the empty strata (``info["quotas"]["empty_strata"]``); without that, one empty stratum would cut
the kept subset to the few rows whose exact share rounds it to zero. ``min_share`` does not apply to a threshold.

Example:
    >>> from datasets import Dataset
    >>> from hf_select.selection import select
    >>> ds = Dataset.from_dict({"s": [9.0, 8.0, 7.0, 6.0, 1.0, 2.0], "src": ["a", "a", "a", "a", "b", "b"]})
    >>> select(ds, [{"step": "top", "column": "s", "count": 3, "stratify_by": "src"}]).row_ids
    [0, 1, 5]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import HFSelectError
from .base import StepResult, column_values, embedding_matrix

QUOTA_PARAMS = ("stratify_by", "min_share")
BUDGET_PARAMS = ("count", "k")
_FRACTION_PARAMS = ("fraction", "top")
NULL_STRATUM = "null"
NO_EMBEDDING_STRATUM = "no_embedding"


def wants_stratify(params: Mapping[str, Any]) -> bool:
    """Whether a step's parameters ask for quotas (``stratify_by`` given and not null).

    Raises:
        HFSelectError: ``min_share`` without ``stratify_by`` (it would do nothing).
    """
    if params.get("stratify_by") is None and params.get("min_share") is not None:
        raise HFSelectError("min_share is a floor on stratum quotas and needs stratify_by (a column or "
                            "{clusters: N, column: embedding})")
    return params.get("stratify_by") is not None


def largest_remainder(total: int, weights: Sequence[float], caps: Sequence[int] | None = None) -> np.ndarray:
    """Integers proportional to ``weights`` that add up to ``total`` exactly (largest-remainder rounding; ties go
    to the earlier entry). With ``caps`` no entry exceeds its cap (what does not fit goes to the others, in
    proportion to their weights); the sum is then ``min(total, sum(caps))``.

    Example:
        >>> largest_remainder(10, [1, 1, 1]).tolist()
        [4, 3, 3]
        >>> largest_remainder(10, [1, 1, 1], caps=[1, 100, 100]).tolist()
        [1, 5, 4]
    """
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError(f"weights must be finite and >= 0, got {w.tolist()}")
    k = len(w)
    cap = np.full(k, max(0, int(total)), dtype=np.int64) if caps is None else np.asarray(caps, np.int64)
    out = np.zeros(k, dtype=np.int64)
    left = int(min(total, cap.sum()))
    while left > 0:
        open_ = out < cap
        ww = np.where(open_, w, 0.0)
        if ww.sum() <= 0:  # only zero-weight entries can still take rows: share equally among them
            ww = open_.astype(np.float64)
        exact = left * ww / ww.sum()
        add = np.floor(exact).astype(np.int64)
        rest = left - int(add.sum())
        if rest > 0:
            frac = exact - add
            order = np.lexsort((np.arange(k), -frac))
            order = order[ww[order] > 0]
            add[order[:rest]] += 1
        add = np.minimum(add, cap - out)
        out += add
        left -= int(add.sum())
    return out


# -- strata ---------------------------------------------------------------------------------------------------------


def strata_labels(dataset: Any, stratify_by: Any, step: str, seed: int = 0) -> tuple[np.ndarray, list[str], dict]:
    """Stratum of every row: (codes 0..S-1, label of each code, info for the provenance).

    Raises:
        HFSelectError: a missing or all-null column, or a malformed ``stratify_by`` (naming the step and field).

    Example:
        >>> from datasets import Dataset
        >>> codes, labels, _ = strata_labels(Dataset.from_dict({"src": ["b", "a", None, "b"]}), "src", "top")
        >>> codes.tolist(), labels
        ([1, 0, 2, 1], ['a', 'b', 'null'])
    """
    n = len(dataset)
    if isinstance(stratify_by, str):
        if stratify_by not in dataset.column_names:
            raise HFSelectError(f"{step}: stratify_by names the column {stratify_by!r}, which the dataset does not "
                                f"have (columns: {dataset.column_names}); name a column such as source or category.")
        values = dataset.with_format(None)[stratify_by]
        if all(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            raise HFSelectError(f"{step}: stratify_by column {stratify_by!r} is null in every row; fill it (e.g. "
                                "with the source file of each row) or stratify by another column.")
        keys = [NULL_STRATUM if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values]
        labels = sorted(set(keys) - {NULL_STRATUM}) + ([NULL_STRATUM] if NULL_STRATUM in keys else [])
        index = {lab: i for i, lab in enumerate(labels)}
        codes = np.fromiter((index[k] for k in keys), dtype=np.int64, count=n)
        return codes, labels, {"column": stratify_by, "null_rows": int(keys.count(NULL_STRATUM))}
    if isinstance(stratify_by, Mapping):
        unknown = sorted(set(stratify_by) - {"clusters", "column"})
        if unknown or "clusters" not in stratify_by:
            raise HFSelectError(f"{step}: stratify_by must be a column name or {{clusters: N, column: embedding}}; "
                                f"got {dict(stratify_by)!r}")
        k = stratify_by["clusters"]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise HFSelectError(f"{step}: stratify_by.clusters must be a positive integer, got {k!r}")
        column = str(stratify_by.get("column", "embedding"))
        x, rows = embedding_matrix(dataset, column, step)
        if len(rows) == 0:
            raise HFSelectError(f"{step}: stratify_by clusters: column {column!r} holds no vector in any row; "
                                "compute embeddings first (`hf-select score embed`).")
        from sklearn.cluster import KMeans

        k_eff = int(min(k, len(np.unique(x, axis=0))))
        km = KMeans(n_clusters=k_eff, random_state=seed, n_init="auto").fit(x)
        codes = np.full(n, k_eff, dtype=np.int64)
        codes[rows] = km.labels_
        labels = [f"cluster_{i}" for i in range(k_eff)]
        if len(rows) < n:
            labels.append(NO_EMBEDDING_STRATUM)
        info = {"clusters": k_eff, "column": column, "rows_without_embedding": int(n - len(rows)), "seed": seed}
        return codes, labels, info
    raise HFSelectError(f"{step}: stratify_by must be a column name or {{clusters: N, column: embedding}}; got "
                        f"{stratify_by!r}")


# -- running a step per stratum -------------------------------------------------------------------------------------


def _threshold_order(dataset: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Order in which a threshold's passing rows are kept under a quota: farthest from the bound first."""
    v = column_values(dataset, params["column"], "threshold")
    descending = params.get("min") is not None
    vv = np.nan_to_num(v, nan=-np.inf if descending else np.inf)
    return np.lexsort((np.arange(len(v)), -vv if descending else vv))


def _stratified_threshold(function: Callable[..., StepResult], dataset: Any, kw: Mapping[str, Any],
                          codes: np.ndarray, labels: list[str], strata_info: dict, sizes: np.ndarray,
                          stratify_by: Any) -> StepResult:
    """The largest pool-proportional subset of the rows passing a threshold (see the module docstring)."""
    res = function(dataset, **kw)
    s_count = len(labels)
    passing_rows = np.asarray(res.keep, dtype=np.int64)
    passing = np.bincount(codes[passing_rows], minlength=s_count)
    # a stratum with no passing row cannot fill any share: the composition is kept among the others (warned)
    empty = (sizes > 0) & (passing == 0)
    if empty.any() and passing.sum() > 0:
        names = ", ".join(f"{labels[s]!r} ({int(sizes[s])} rows)" for s in np.flatnonzero(empty))
        warnings.warn(f"threshold: stratify_by {stratify_by!r}: no row of stratum {names} passes the threshold; the "
                      "passing rows keep the pool's composition among the other strata (info.quotas.empty_strata). "
                      "Loosen the threshold or stratify by another column to keep those rows.", UserWarning,
                      stacklevel=4)
        weights = np.where(empty, 0, sizes)
    else:
        weights = sizes
    n = int(weights.sum())
    occupied = weights > 0
    # a size whose exact share in some stratum is >= its passing rows + 1 can never fit: start just below it
    upper = int(passing.sum())
    if occupied.any():
        upper = min(upper, int(np.floor(((passing[occupied] + 1) * n / weights[occupied]).min())))
    size = upper
    quota = largest_remainder(size, weights)
    while size > 0 and (quota > passing).any():
        size -= 1
        quota = largest_remainder(size, weights)
    order = _threshold_order(dataset, kw)
    is_passing = np.zeros(len(codes), bool)
    is_passing[passing_rows] = True
    keep = np.zeros(len(codes), bool)
    taken = np.zeros(s_count, dtype=np.int64)
    for i in order[is_passing[order]]:
        c = codes[i]
        if taken[c] < quota[c]:
            keep[i] = True
            taken[c] += 1
    dropped = {r: v for r, v in res.dropped.items()}
    over = np.flatnonzero(is_passing & ~keep)
    if len(over):
        dropped["over_quota"] = over
    info = dict(res.info)
    info["quotas"] = {"stratify_by": stratify_by, **strata_info, "passing": int(len(
        passing_rows)), "kept": int(keep.sum()), "cut_over_quota": int(len(over)),
        "empty_strata": [labels[s] for s in np.flatnonzero(empty)],
        "strata": {labels[s]: {"rows": int(sizes[s]), "passing": int(passing[s]), "quota": int(quota[s]),
                               "kept": int(taken[s])} for s in range(s_count)}}
    return StepResult(np.flatnonzero(keep), dropped, info)


def run_stratified(
    function: Callable[..., StepResult],
    dataset: Any,
    kwargs: Mapping[str, Any],
    *,
    step: str,
    step_params: Sequence[str],
) -> StepResult:
    """Run a step with ``stratify_by`` (see the module docstring); ``kwargs`` are its parameters (with ``seed``).

    Raises:
        HFSelectError: the step has no row budget, or ``stratify_by``/``min_share`` is unusable.
    """
    kw = dict(kwargs)
    stratify_by = kw.pop("stratify_by")
    min_share = kw.pop("min_share", None)
    min_share = 1.0 if min_share is None else min_share
    if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not 0.0 <= min_share <= 1.0:
        raise HFSelectError(f"{step}: min_share must be a number in [0, 1] (1 = exact pool shares), got {min_share!r}")
    budget_param = next((p for p in BUDGET_PARAMS if p in step_params), None)
    if budget_param is None and step != "threshold":
        raise HFSelectError(f"{step}: stratify_by needs a step with a row budget (a count or k parameter) or "
                            f"threshold; {step} has neither.")
    codes, labels, strata_info = strata_labels(dataset, stratify_by, step, seed=int(kw.get("seed", 0) or 0))
    s_count = len(labels)
    sizes = np.bincount(codes, minlength=s_count)
    if budget_param is None:
        if kwargs.get("min_share") is not None:
            raise HFSelectError(f"{step}: min_share applies to steps with a row budget, not to threshold")
        return _stratified_threshold(function, dataset, kw, codes, labels, strata_info, sizes, stratify_by)
    whole = function(dataset, **kw)  # the unstratified run fixes the budget (and its warnings are the user's)
    budget = int(len(whole.keep))
    picked = np.bincount(codes[np.asarray(whole.keep, dtype=np.int64)], minlength=s_count)
    proportional = largest_remainder(budget, sizes)
    if min_share >= 1.0:
        target = proportional
    else:
        floors = np.floor(min_share * proportional + 1e-9).astype(np.int64)
        extra = largest_remainder(budget - int(floors.sum()), np.maximum(picked - floors, 0))
        target = floors + extra

    members = [np.flatnonzero(codes == s) for s in range(s_count)]
    subsets: dict[int, Any] = {}
    results: dict[int, StepResult] = {}

    def run_in(s: int, want: int) -> StepResult:
        if s not in subsets:
            subsets[s] = dataset.select(members[s])
        sub = subsets[s]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a stratum short of rows is counted, not warned
            inner = {k: v for k, v in kw.items() if k not in _FRACTION_PARAMS and k not in BUDGET_PARAMS}
            inner[budget_param] = int(want)  # (kcenter takes k or count: one of them, the stratum's quota)
            return function(sub, **inner)

    quota = target.copy()
    capped = np.zeros(s_count, bool)
    moved = 0
    for _ in range(s_count + 1):
        short = 0
        for s in range(s_count):
            if s in results and len(results[s].keep) == quota[s]:
                continue
            if quota[s] == 0 and s not in results:
                continue
            results[s] = run_in(s, int(quota[s]))
            got = len(results[s].keep)
            if got < quota[s]:
                capped[s] = True
                short += int(quota[s] - got)
                quota[s] = got
        if short == 0:
            break
        open_ = ~capped
        if not open_.any():
            break
        room = np.where(open_, sizes - quota, 0)
        add = largest_remainder(short, np.where(open_, sizes, 0), caps=room)
        moved += int(add.sum())
        quota += add
        if add.sum() == 0:
            break
    keep_parts: list[np.ndarray] = []
    dropped: dict[str, list[np.ndarray]] = {}
    strata: dict[str, dict[str, int]] = {}
    for s in range(s_count):
        rows = members[s]
        res = results.get(s)
        if res is None:
            dropped.setdefault("over_quota", []).append(rows)
            kept = 0
        else:
            keep_parts.append(rows[np.asarray(res.keep, dtype=np.int64)])
            for reason, idx in res.dropped.items():
                dropped.setdefault(reason, []).append(rows[np.asarray(idx, dtype=np.int64)])
            kept = len(res.keep)
        strata[labels[s]] = {"rows": int(sizes[s]), "quota": int(target[s]), "kept": int(kept)}
    keep = np.sort(np.concatenate(keep_parts)) if keep_parts else np.zeros(0, np.int64)
    total = int(len(keep))
    unfilled = budget - total
    if unfilled > 0:
        warnings.warn(f"{step}: stratified selection kept {total} of its {budget}-row budget; every stratum ran out "
                      "of eligible rows (see info.quotas.shortfall_unfilled).", UserWarning, stacklevel=3)
    info = dict(whole.info)
    info.pop("cutoff", None)  # the unstratified cutoff does not describe the stratified result
    info["quotas"] = {
        "stratify_by": stratify_by,
        **strata_info,
        "min_share": min_share,
        "budget": budget,
        "kept": total,
        "shortfall_moved": moved,
        "shortfall_unfilled": max(0, unfilled),
        "unstratified_kept": {labels[s]: int(picked[s]) for s in range(s_count)},
        "strata": strata,
    }
    merged = {r: np.sort(np.concatenate(v)) for r, v in dropped.items()}
    return StepResult(keep, merged, info)
