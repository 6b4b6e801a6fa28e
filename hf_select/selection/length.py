"""Length control: rank a score so that "high" does not just mean "long".

IFD and most difficulty scores grow with the response length (on Alpaca rows, Spearman about +0.75 for IFD), so
"keep the highest" quietly becomes "keep the longest". :func:`length_stratified_top` offers two cures:

- ``mode="strata"`` (default): cut the rows into ``bins`` equal-frequency bins of response length (quantiles of the
  length over the rows with a score), give each bin its share of the budget (largest-remainder rounding: the total
  is exact) and keep the highest-scoring rows inside each bin. The chosen rows then have the pool's length
  distribution, up to the bin width;
- ``mode="residual"``: fit ``score ~ a + b * log(length)`` by least squares over the rows with a score and rank by
  the residual (the score the length does not explain), divided (``standardise=True``, default) by the residual's
  expected size at that length (a second least-squares fit, of ``|residual|`` on ``log(length)``, floored at a tenth
  of the mean ``|residual|``). Without that
  the ranking over-corrects: IFD spreads more on short answers, so their residuals are the largest (on 400 Alpaca
  rows the raw residual's top 10% had a mean of 20 response tokens where the pool has 60; standardised, 52).

Length is ``length_column`` if given, else ``response_tokens`` (written by IFD scoring) when present, else the
response's characters. The step's ``info`` reports Spearman(score, length) over the eligible rows and
Spearman(ranking key, length) (the key: the score's percentile inside its bin in strata mode, the residual in
residual mode), plus the mean length of the kept rows, of the rows
the plain top would keep, and of all eligible rows.

Example:
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"s": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "response_tokens": [1, 1, 1, 9, 9, 9]})
    >>> length_stratified_top(ds, "s", count=2, bins=2).keep.tolist()
    [2, 5]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import StepResult, column_values, iter_texts, rank_positions, resolve_count
from .quotas import largest_remainder

MODES = ("strata", "residual")


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(a, b).statistic
    return None if not np.isfinite(rho) else float(rho)


def response_lengths(dataset: Any, length_column: str | None = None,
                     column_mapping: Mapping[str, str] | None = None, step: str = "select") -> tuple[np.ndarray, str]:
    """Response length of every row (NaN where unknown) and what was measured.

    Example:
        >>> from datasets import Dataset
        >>> response_lengths(Dataset.from_dict({"instruction": ["a"], "output": ["abc"]}))[0].tolist()
        [3.0]
    """
    if length_column is None and "response_tokens" in dataset.column_names:
        length_column = "response_tokens"
    if length_column is not None:
        return column_values(dataset, length_column, step), length_column
    vals: list[float] = []
    for texts, _ in iter_texts(dataset, "response", column_mapping=column_mapping):
        vals.extend(np.nan if t is None else float(len(t)) for t in texts)
    return np.asarray(vals, dtype=np.float64), "response characters"


def length_bins(lengths: np.ndarray, bins: int) -> np.ndarray:
    """Equal-frequency bin (0..B-1) of every length: quantile edges, rows of equal length share a bin (so there may
    be fewer, uneven bins when many lengths tie).

    Example:
        >>> length_bins(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist()
        [0, 0, 1, 1]
    """
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.int64)
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, bins + 1)[1:-1]))
    raw = np.searchsorted(edges, lengths, side="left")
    _, codes = np.unique(raw, return_inverse=True)
    return codes.astype(np.int64)


def length_stratified_top(
    dataset: Any,
    column: str,
    *,
    fraction: float | None = None,
    count: int | None = None,
    of: str = "all",
    descending: bool = True,
    mode: str = "strata",
    bins: int = 5,
    length_column: str | None = None,
    standardise: bool = True,
    column_mapping: Mapping[str, str] | None = None,
) -> StepResult:
    """Keep the highest ``column`` rows within response-length bins (``mode="strata"``) or by the score's residual
    after log length (``mode="residual"``); see the module docstring.

    Reasons: ``nan_score`` (no score), ``no_length`` (length unknown or not positive in residual mode),
    ``not_top``.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"s": [1.0, 2.0, 3.0, 4.0], "response_tokens": [1, 2, 4, 8]})
        >>> length_stratified_top(ds, "s", count=2, mode="residual").info["mode"]
        'residual'
    """
    if mode not in MODES:
        raise ValueError(f"length_stratified_top: mode must be one of {MODES}, got {mode!r}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"length_stratified_top: bins must be a positive integer, got {bins!r}")
    v = column_values(dataset, column, "length_stratified_top")
    lengths, measured = response_lengths(dataset, length_column, column_mapping, "length_stratified_top")
    n = len(v)
    nan = np.isnan(v)
    no_len = np.isnan(lengths) | (lengths < 0)
    if mode == "residual":
        no_len |= ~(lengths > 0)
    eligible = np.flatnonzero(~nan & ~no_len)
    want = resolve_count(n, len(eligible), fraction=fraction, count=count, of=of, step="length_stratified_top",
                         n_scored=int((~nan).sum()))
    keep = np.zeros(n, bool)
    info: dict[str, Any] = {"mode": mode, "length": measured, "eligible": int(len(eligible))}
    key = np.full(n, np.nan)
    if mode == "strata":
        codes = length_bins(lengths[eligible], bins)
        n_bins = int(codes.max()) + 1 if len(codes) else 0
        sizes = np.bincount(codes, minlength=n_bins)
        quota = largest_remainder(want, sizes)
        for b in range(n_bins):
            members = eligible[codes == b]
            keep[rank_positions(v, members, descending)[: quota[b]]] = True
            if len(members):  # the effective ranking key: the score's percentile inside its bin
                order = rank_positions(v, members, not descending)
                key[order] = (np.arange(len(order)) + 1) / len(order)
        info["bins"] = [{"rows": int(sizes[b]), "quota": int(quota[b]),
                         "min_length": float(lengths[eligible[codes == b]].min()),
                         "max_length": float(lengths[eligible[codes == b]].max())} for b in range(n_bins)]
    else:
        x = np.log(lengths[eligible])
        y = v[eligible]
        if len(eligible) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
        else:
            slope, intercept = 0.0, float(np.mean(y)) if len(y) else 0.0
        resid = y - (intercept + slope * x)
        if standardise and len(eligible) >= 2 and np.ptp(x) > 0:
            s_slope, s_intercept = np.polyfit(x, np.abs(resid), 1)
            floor = max(0.1 * float(np.mean(np.abs(resid))), 1e-12)  # a fitted scale near or below 0 is not trusted
            resid = resid / np.maximum(s_intercept + s_slope * x, floor)
            info.update(scale_slope=float(s_slope), scale_intercept=float(s_intercept))
        key[eligible] = resid
        keep[rank_positions(key, eligible, descending)[:want]] = True
        info.update(slope=float(slope), intercept=float(intercept), standardise=bool(standardise))
    plain = rank_positions(v, eligible, descending)[:want]
    info["spearman_score_length"] = _spearman(v[eligible], lengths[eligible])
    info["spearman_key_length"] = _spearman(key[eligible], lengths[eligible])
    info["mean_length_kept"] = float(lengths[keep].mean()) if keep.any() else None
    info["mean_length_plain_top"] = float(lengths[plain].mean()) if len(plain) else None
    info["mean_length_eligible"] = float(lengths[eligible].mean()) if len(eligible) else None
    return StepResult.from_mask(keep, {"nan_score": nan, "no_length": no_len, "not_top": ~keep}, info)
