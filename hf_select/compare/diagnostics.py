"""What a method's score tracks, for the comparison's table: over the pool, the score's Spearman correlation with
response length, its median per source, over the chosen rows and over the pool (never a reason to fail a method).

Example:
    >>> import numpy as np
    >>> values = np.array([1.0, 2.0, 9.0])
    >>> median_where(values, np.array([True, True, False])), median_where(values, np.zeros(3, bool))
    (1.5, None)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .pool import SOURCE_COLUMN

# Where each recipe leaves the score it ranks by (stage folder, column, higher is chosen first).
SCORE_STAGES = {
    "ifd": ("ifd", "ifd", True),
    "cherry": ("ifd", "ifd", True),
    "mods": ("quality", None, True),
    "instructmining": ("rule", "instructmining_pred", False),
}


def step_diagnostics(method: str, scored: Any, pool: Any, lengths: Mapping[str, list[float]],
                      selection: Any) -> dict[str, Any]:
    """Diagnostics of a step method: its ranking score (a preset's ``rank_column``) against response length."""
    from ..selection.presets import PRESETS

    column = PRESETS[method].rank_column if method in PRESETS else None
    if column is None or scored is None or column not in scored.column_names:
        return {}
    return score_diagnostics(column, True, scored, pool, lengths, selection)


def recipe_diagnostics(method: str, folder: Path, pool: Any, lengths: Mapping[str, list[float]],
                       selection: Any) -> dict[str, Any]:
    """Why a method chose what it chose: its score against response length, and per source."""
    from ..stages import load_stage_dataset

    stage, column, higher_first = SCORE_STAGES[method]
    try:
        scored = load_stage_dataset(folder / stage)
    except Exception as err:  # diagnostics never fail a method
        return {"error": str(err)}
    if column is None:  # MoDS: the quality backend's column
        column = next((c for c in ("quality", "judge_score") if c in scored.column_names), None)
    if column is None:
        return {}
    return score_diagnostics(column, higher_first, scored, pool, lengths, selection)


def score_diagnostics(column: str, higher_first: bool, scored: Any, pool: Any, lengths: Mapping[str, list[float]],
                      selection: Any) -> dict[str, Any]:
    """``column`` of ``scored`` (the pool's rows, in order) against response length, per source, over the chosen
    rows (``selection.row_ids``) and over the pool; ``{}`` when the column is absent or the rows do not match."""
    import numpy as np

    if column not in scored.column_names or len(scored) != len(pool):
        return {}
    values = np.asarray([np.nan if v is None else float(v) for v in scored[column]], dtype=np.float64)
    ok = np.isfinite(values)
    chars = np.asarray(lengths["chars"], dtype=np.float64)
    out: dict[str, Any] = {"column": column, "scored_rows": int(ok.sum()), "higher_chosen_first": higher_first}
    if ok.sum() > 2:
        from scipy.stats import spearmanr

        out["spearman_vs_response_chars"] = round(float(spearmanr(values[ok], chars[ok]).statistic), 3)
        if lengths["tokens"]:
            tokens = np.asarray(lengths["tokens"], dtype=np.float64)
            out["spearman_vs_response_tokens"] = round(float(spearmanr(values[ok], tokens[ok]).statistic), 3)
    if column.startswith("ifd"):
        out["share_ifd_ge_1"] = round(float(np.mean(values[ok] >= 1)), 3) if ok.any() else None
    sources = np.asarray(pool[SOURCE_COLUMN], dtype=object)
    by_source = {str(s): median_where(values, ok & (sources == s)) for s in dict.fromkeys(sources)}
    out["median_by_source"] = {s: v for s, v in by_source.items() if v is not None}
    chosen = np.zeros(len(pool), bool)
    chosen[selection.row_ids] = True
    out["median_chosen"] = median_where(values, ok & chosen)
    out["median_pool"] = median_where(values, ok)
    return out


def median_where(values: Any, mask: Any) -> float | None:
    """The median of ``values[mask]`` rounded to 4 decimals, None where the mask picks nothing."""
    import numpy as np

    picked = values[mask]
    return round(float(np.median(picked)), 4) if picked.size else None


