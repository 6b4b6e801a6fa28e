"""Feasibility gates: drop rows whose response does not fit their instruction before any ranking by IFD.

A high IFD says the model finds a row hard; a misaligned pair (another task's answer, a cut-off answer) is hard
too, for the wrong reason. Reflection-Tuning's answer is to look the other way as well: reverse IFD,
r-IFD = ppl(Q | A) / ppl(Q), asks whether the *response* helps predict the *instruction*. A response written for
this instruction does (r-IFD < 1); one written for something else does not (r-IFD near or above 1). The gate keeps
the rows whose r-IFD is below ``max_reverse`` (default 1.0: "the context helps", the same criterion as the IFD < 1
rule), optionally also a minimum quality score and a ceiling on forward IFD, and drops the rest with one reason
each:

- ``<status_column>:<status>`` (e.g. ``ifd_reverse_status:prompt_too_long``): reverse IFD could not be computed;
- ``nan_score``: the reverse column is NaN although the status is ok (or there is no status column);
- ``reverse_ifd_high``: r-IFD >= ``max_reverse``;
- ``quality_nan`` / ``quality_low``: the quality column is NaN / below ``min_quality``;
- ``ifd_nan`` / ``ifd_high``: the forward IFD column is NaN / >= ``max_ifd`` (only with ``max_ifd``).

Measured on the demo rows (``benchmarks/demo_gate.py``, 500 rows, SmolLM2-135M-Instruct, demo seeds 0 / 1 / 2):
every row there has r-IFD < 1, swapped ones included (seed 0: median 0.69 against 0.34 for clean rows), because
the direct pass scores the instruction after a bare BOS token while the conditioned pass has the reverse prompt's
scaffold to lean on; so the default gate keeps every row and the Superfiltering 10% stays 58% / 70% / 66%
corrupted. A pool-relative bound (``max_reverse_quantile=0.5``) brings it to 8% / 12% / 14% (no swapped row left),
and ranking by ``fused_diverse`` with ``{ifd: 1, ifd_reverse: -1, loss_conditioned: -1}`` and ``min_distance: 0.1``
to 10% / 2% / 2% (no swapped or truncated row; what is left are fluent wrong answers, which no likelihood ratio of
a 135M model tells from right ones).

The reverse columns come from ``IFDScorer(IFDConfig(reverse=True))`` (``ifd_reverse``, ``ifd_reverse_ppl``).
With ``ifd_reverse_ppl`` (the perplexity ratio) the same 1.0 criterion applies, since both ratios are below 1
exactly when the conditioned loss is below the direct loss.

Example:
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"ifd_reverse": [0.6, 1.1, float("nan"), 0.9],
    ...                         "ifd_reverse_status": ["ok", "ok", "prompt_too_long", "ok"]})
    >>> r = consistency_gate(ds)
    >>> r.keep.tolist(), {k: v.tolist() for k, v in r.dropped.items()}
    ([0, 3], {'ifd_reverse_status:prompt_too_long': [2], 'reverse_ifd_high': [1]})
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import StepResult, column_values, string_values


def consistency_gate(
    dataset: Any,
    *,
    column: str = "ifd_reverse",
    status_column: str | None = "ifd_reverse_status",
    max_reverse: float | None = 1.0,
    max_reverse_quantile: float | None = None,
    quality_column: str | None = None,
    min_quality: float | None = None,
    ifd_column: str | None = None,
    max_ifd: float | None = None,
    keep_status: list[str] | tuple[str, ...] | None = None,
) -> StepResult:
    """Keep rows whose response is consistent with their instruction: reverse IFD below ``max_reverse`` (default
    1.0), and optionally ``quality_column >= min_quality`` and forward ``ifd_column < max_ifd``.

    Args:
        column: the reverse-IFD column (``ifd_reverse``, or ``ifd_reverse_ppl``); ``None`` skips the reverse test
            (then give a quality or IFD test).
        status_column: its status column; rows whose status is not ``ok`` are dropped as
            ``<status_column>:<status>``; ignored when the dataset has no such column.
        max_reverse: rows with reverse IFD >= this are dropped (``reverse_ifd_high``); ``None`` keeps every
            scored row.
        max_reverse_quantile: a pool-relative bound instead (or as well): rows whose reverse IFD is above this
            quantile (in (0, 1]) of the step's scored rows are dropped (``reverse_ifd_high``); the bound used is in
            ``info["reverse_quantile_bound"]``. Use it when the scoring model puts every row below 1 (the demo
            with SmolLM2-135M does).
        quality_column, min_quality: a quality score (reward, judge) and its minimum (``quality_low``, and
            ``quality_nan`` for rows without one).
        ifd_column, max_ifd: a forward IFD ceiling (``ifd_high``, ``ifd_nan``): e.g. 1.0 to apply the IFD < 1
            rule here.
        keep_status: reverse-IFD statuses whose rows pass the reverse test unjudged instead of being dropped, e.g.
            ``["prompt_too_long"]``: the response alone fills the reverse pass's context, which says nothing about
            whether it fits its instruction (dropping them removes the longest responses: 674 of 3,000 real rows
            at 128 tokens, see benchmarks/RESULTS.md). They are counted in ``info["kept_unjudged"]``; the quantile
            bound is taken over judged rows only. The quality and IFD tests still apply to them.

    Raises:
        HFSelectError: a named column is missing or not numeric.
        ValueError: no test at all, or a minimum/ceiling without its column.

    Reasons: ``<status_column>:<status>``, ``nan_score``, ``reverse_ifd_high``, ``quality_nan``, ``quality_low``,
    ``ifd_nan``, ``ifd_high``.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"ifd_reverse": [0.5, 0.7], "judge": [4.0, 1.0]})
        >>> consistency_gate(ds, quality_column="judge", min_quality=3.0).keep.tolist()
        [0]
    """
    if column is None and quality_column is None and ifd_column is None:
        raise ValueError("consistency_gate: give column (reverse IFD), quality_column or ifd_column")
    if max_reverse_quantile is not None and (isinstance(max_reverse_quantile, bool)
                                             or not 0.0 < float(max_reverse_quantile) <= 1.0):
        raise ValueError(f"consistency_gate: max_reverse_quantile must be in (0, 1], got {max_reverse_quantile!r}")
    if (quality_column is None) != (min_quality is None):
        raise ValueError("consistency_gate: quality_column and min_quality go together (give both or neither)")
    if (ifd_column is None) != (max_ifd is None):
        raise ValueError("consistency_gate: ifd_column and max_ifd go together (give both or neither)")
    n = len(dataset)
    reasons: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"rows": n}
    fail = np.zeros(n, bool)
    passed = {str(s) for s in (keep_status or ())}
    if "ok" in passed:
        raise ValueError("consistency_gate: keep_status lists statuses of rows without a reverse score; 'ok' is not "
                         "one (scored rows are always judged)")
    unjudged = np.zeros(n, bool)
    if column is not None:
        rev = column_values(dataset, column, "consistency_gate")
        if status_column is not None and status_column in dataset.column_names:
            status = np.asarray(string_values(dataset, status_column, "consistency_gate"), dtype=object)
            for st in sorted({s for s in status if s != "ok"}, key=str):
                if st in passed:
                    unjudged |= status == st
                else:
                    reasons[f"{status_column}:{st}"] = status == st
        elif passed:
            raise ValueError(f"consistency_gate: keep_status needs the status column {status_column!r}, which the "
                             "dataset lacks (set status_column to the reverse scorer's status column)")
        nan = np.isnan(rev) & ~unjudged
        reasons["nan_score"] = nan
        fail |= nan
        judged = ~nan & ~unjudged  # rows with a reverse IFD that the tests below read
        high = np.zeros(n, bool)
        if max_reverse is not None:
            high |= judged & (rev >= float(max_reverse))
        if max_reverse_quantile is not None and judged.any():
            bound = float(np.quantile(rev[judged], float(max_reverse_quantile)))
            high |= judged & (rev > bound)
            info["reverse_quantile_bound"] = bound
        reasons["reverse_ifd_high"] = high
        fail |= high
        info.update(column=column, max_reverse=max_reverse, max_reverse_quantile=max_reverse_quantile)
        if judged.any():
            info["reverse_median"] = float(np.median(rev[judged]))
    if quality_column is not None:
        q = column_values(dataset, quality_column, "consistency_gate")
        qnan = np.isnan(q)
        with np.errstate(invalid="ignore"):
            low = ~qnan & (q < float(min_quality))  # type: ignore[arg-type]
        reasons["quality_nan"] = qnan
        reasons["quality_low"] = low
        fail |= qnan | low
        info.update(quality_column=quality_column, min_quality=min_quality)
    if ifd_column is not None:
        f = column_values(dataset, ifd_column, "consistency_gate")
        fnan = np.isnan(f)
        with np.errstate(invalid="ignore"):
            high_f = ~fnan & (f >= float(max_ifd))  # type: ignore[arg-type]
        reasons["ifd_nan"] = fnan
        reasons["ifd_high"] = high_f
        fail |= fnan | high_f
        info.update(ifd_column=ifd_column, max_ifd=max_ifd)
    keep = ~fail
    for mask in (m for r, m in reasons.items() if ":" in r):  # a bad status never passes, even with a number
        keep &= ~mask
    info["kept"] = int(keep.sum())
    if passed:
        info.update(keep_status=sorted(passed), kept_unjudged=int((unjudged & keep).sum()))
    return StepResult.from_mask(keep, reasons, info)


def median_gate_step(quantile: float = 0.5, *, max_ifd: float | None = 1.0,
                     keep_status: list[str] | None = None) -> dict[str, Any]:
    """The step mapping of a pool-relative consistency gate: reverse IFD at most its ``quantile`` over the step's
    rows (0.5 = the median), and forward IFD below ``max_ifd`` (None: no ceiling); rows whose reverse status is in
    ``keep_status`` pass the reverse test unjudged. Used by the presets and by the Superfiltering and Cherry recipes'
    ``consistency_gate`` option.

    Example:
        >>> median_gate_step()["max_reverse_quantile"]
        0.5
    """
    step: dict[str, Any] = {"step": "consistency_gate", "column": "ifd_reverse", "max_reverse": None,
                            "max_reverse_quantile": float(quantile)}
    if max_ifd is not None:
        step.update(ifd_column="ifd", max_ifd=float(max_ifd))
    if keep_status:
        step["keep_status"] = list(keep_status)
    return step
