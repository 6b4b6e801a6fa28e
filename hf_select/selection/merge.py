"""Combining selections of the same source rows: score columns of a subset merged back onto the source table
(:func:`merge_columns`) and the union of several selections as one :class:`SelectionResult` with the provenance of
all of them (:func:`union_selection`, e.g. MoDS's seed + necessary rows). Rows are matched by ``_row_id``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..columns import ROW_ID
from .select import SelectionResult


def merge_columns(base: Any, part: Any, columns: Sequence[str]) -> Any:
    """``base`` with ``columns`` of ``part`` added, matched by ``_row_id`` (``part``'s ids index ``base``'s rows, or
    ``base``'s own ``_row_id``); rows ``part`` lacks get null (NaN for float columns).

    Example:
        >>> from datasets import Dataset
        >>> base = Dataset.from_dict({"x": ["a", "b", "c"]})
        >>> part = Dataset.from_dict({"_row_id": [2, 0], "s": [0.5, 1.5]})
        >>> list(merge_columns(base, part, ["s"])["s"])
        [1.5, nan, 0.5]
    """
    ids = list(base[ROW_ID]) if ROW_ID in base.column_names else list(range(len(base)))
    where = {int(r): i for i, r in enumerate(part[ROW_ID])}
    for col in columns:
        if col not in part.column_names:
            continue
        feature = part.features[col]
        values = part[col]
        is_float = getattr(feature, "dtype", "") in ("float16", "float32", "float64")
        fill = float("nan") if is_float else None
        full = [values[where[int(r)]] if int(r) in where else fill for r in ids]
        if col in base.column_names:
            base = base.remove_columns(col)
        base = base.add_column(col, full, feature=feature)
    return base


def union_selection(source: Any, parts: Mapping[str, Any], *, before: Sequence[tuple[str, Any]] = (),
                    seed: int = 0) -> Any:
    """One ``SelectionResult`` for the union of several selections of the same ``source`` rows (by ``_row_id``),
    deduplicated; e.g. MoDS's seed + necessary rows.

    The provenance lists the steps of ``before`` (earlier selections the parts were made from, e.g. the quality
    filter), then of each part, each entry tagged with its ``stage``, then a ``union`` step whose ``duplicate``
    count is the rows two parts share. Rows of ``source`` not in the union are in ``dropped`` with the reason of the
    last selection that dropped them.

    Example:
        >>> from datasets import Dataset
        >>> from hf_select.selection import select
        >>> rows = Dataset.from_dict({"s": [0.1, 0.9, 0.5, 0.7]})
        >>> best = select(rows, [{"step": "top", "column": "s", "count": 2}])
        >>> first = select(rows, [{"step": "top", "column": "s", "count": 1, "descending": False}])
        >>> union = union_selection(rows, {"best": best, "first": first})
        >>> sorted(union.row_ids), union.provenance[-1]["dropped"]
        ([0, 1, 3], {'duplicate': 0})
    """
    import numpy as np
    from datasets import Value

    chosen: list[int] = []
    total = 0
    for result in parts.values():
        chosen += result.row_ids
        total += len(result.row_ids)
    ids = sorted(set(chosen))
    src_ids = list(source[ROW_ID]) if ROW_ID in source.column_names else list(range(len(source)))
    pos = {int(r): i for i, r in enumerate(src_ids)}
    base = source if ROW_ID in source.column_names else source.add_column(ROW_ID, np.arange(len(source)))
    subset = base.select([pos[i] for i in ids])
    reasons: dict[int, tuple[str, str]] = {}
    for _, result in [*before, *parts.items()]:
        d = result.dropped
        if len(d):
            for rid, step, reason in zip(d[ROW_ID], d["drop_step"], d["drop_reason"], strict=True):
                reasons[int(rid)] = (step, reason)
    keep = set(ids)
    gone = [r for r in src_ids if int(r) not in keep]
    dropped = base.select([pos[int(r)] for r in gone])
    dropped = dropped.add_column("drop_step", [reasons.get(int(r), ("union", "not_selected"))[0] for r in gone],
                                 feature=Value("string"))
    dropped = dropped.add_column("drop_step_index", [-1] * len(gone), feature=Value("int64"))
    dropped = dropped.add_column("drop_reason", [reasons.get(int(r), ("union", "not_selected"))[1] for r in gone],
                                 feature=Value("string"))
    provenance = []
    for stage, result in [*before, *parts.items()]:
        for entry in result.provenance:
            provenance.append({**entry, "stage": stage})
    provenance.append({"step": "union", "stage": "+".join(parts), "params": {"of": list(parts)}, "seed": None,
                       "rows_in": total, "rows_out": len(ids), "dropped": {"duplicate": total - len(ids)},
                       "info": {}, "seconds": 0.0})
    return SelectionResult(dataset=subset, dropped=dropped, provenance=provenance, seed=seed,
                           input_rows=len(source), input_fingerprint=getattr(source, "_fingerprint", None))

