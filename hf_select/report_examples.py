"""Example rows for a selection report: a few rows kept at the top, at the cutoff (the lowest-ranked kept rows), and
dropped for each reason, each with its instruction and response cut to a readable length and its score columns.

:func:`example_groups` picks the rows (``report.json`` keeps them under ``summary.examples``, for dataset cards);
:func:`examples_markdown` writes the "Example rows" section of ``report.md``. The ranking is the selection's main
score (:func:`main_score`: the column of its last ranking step); without one, the first kept rows are shown and there
is no cutoff.

Example:
    >>> from datasets import Dataset
    >>> import numpy as np
    >>> ds = Dataset.from_dict({"instruction": ["a", "b", "c", "d"], "output": ["w", "x", "y", "z"],
    ...                         "ifd": [0.9, 0.2, 0.7, 0.5]})
    >>> chosen = np.array([True, False, True, True])
    >>> groups = example_groups(ds, chosen, [(1, "step 1 (top)", "not_top")], ["ifd"],
    ...                         [{"step": "top", "params": {"column": "ifd", "count": 3}}], per_group=1)
    >>> for g in groups:
    ...     print(g["title"], [r["row_id"] for r in g["rows"]])
    Kept: top by `ifd` (highest first) [0]
    Kept: at the cutoff (the lowest-ranked kept rows) [3]
    Dropped at step 1 (top): not_top (1 row) [1]
    >>> print(examples_markdown(groups[:1]))  # doctest: +NORMALIZE_WHITESPACE
    ## Example rows
    <BLANKLINE>
    Texts are cut to 200 characters; the score columns are the report's (the main score first).
    <BLANKLINE>
    ### Kept: top by `ifd` (highest first)
    <BLANKLINE>
    | row | ifd | instruction | response |
    |---|---|---|---|
    | 0 | 0.9 | a | w |
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

EXAMPLES_PER_GROUP = 3  # kept rows shown at the top and at the cutoff
EXAMPLES_PER_REASON = 2  # dropped rows shown per drop reason
MAX_TEXT_CHARS = 200
MAX_REASONS = 12  # drop reasons shown (the rest counted in a note)
MAX_SCORE_COLUMNS = 6

# Steps that keep rows by a score column, and the parameters that name it (the first one set wins).
_RANKING_PARAMS = {
    "top": ("column",),
    "threshold": ("column",),
    "ifd_rule": ("column",),
    "length_stratified_top": ("column",),
    "token_budget": ("order_by",),
}
_DEFAULT_COLUMN = {"ifd_rule": "ifd"}

Drop = tuple[int, str, str]  # (position in the scored dataset, step label, reason)


def cut_text(text: Any, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` on one line (runs of whitespace as one space), cut to ``limit`` characters with an ellipsis.

    Example:
        >>> cut_text("word " * 100, 20)
        'word word word word…'
        >>> cut_text("two\\nlines")
        'two lines'
    """
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def main_score(provenance: Sequence[Mapping[str, Any]], numeric_columns: Sequence[str]) -> tuple[str, bool] | None:
    """The selection's main score: the column its last ranking step (``top``, ``threshold``, ``ifd_rule``,
    ``length_stratified_top``, ``token_budget``'s ``order_by``) kept rows by, if it is one of ``numeric_columns``,
    with whether higher values rank first; None when no step ranked by a score or the last ranking came before a
    ``union`` of several selections (e.g. MoDS's seed + necessary rows: no one ranking covers the kept rows).

    Example:
        >>> main_score([{"step": "ifd_rule", "params": {"fraction": 0.1}}, {"step": "kcenter", "params": {"k": 5}}],
        ...            ["ifd", "quality"])
        ('ifd', True)
        >>> main_score([{"step": "threshold", "params": {"column": "ppl", "max": 30}}], ["ppl"])
        ('ppl', False)
        >>> main_score([{"step": "random", "params": {"count": 5}}], ["ifd"]) is None
        True
        >>> main_score([{"step": "top", "params": {"column": "ifd"}}, {"step": "union", "params": {}}], ["ifd"])
    """
    for entry in reversed(list(provenance)):
        step, params = entry.get("step"), entry.get("params") or {}
        if step == "union":
            return None
        for key in _RANKING_PARAMS.get(str(step), ()):
            name = params.get(key, _DEFAULT_COLUMN.get(str(step)))
            if isinstance(name, str) and name in numeric_columns:
                high = bool(params.get("descending", True))
                if step == "threshold" and params.get("min") is None and params.get("max") is not None:
                    high = False  # only an upper bound: the low values are the ones it wants
                return name, high
    return None


def example_groups(
    scored: Any,
    chosen: np.ndarray,
    drops: Sequence[Drop],
    score_columns: Sequence[str],
    provenance: Sequence[Mapping[str, Any]],
    column_mapping: Mapping[str, str] | None = None,
    *,
    per_group: int = EXAMPLES_PER_GROUP,
    per_reason: int = EXAMPLES_PER_REASON,
    limit: int = MAX_TEXT_CHARS,
) -> list[dict[str, Any]]:
    """The example rows of a report, in groups: kept at the top (by the main score, else the first kept rows), kept at
    the cutoff (the lowest-ranked kept rows; only with a main score), then dropped for each reason.

    Args:
        scored: the dataset the selection was made from.
        chosen: a bool mask over ``scored``'s rows: the kept ones.
        drops: the dropped rows as (position in ``scored``, step label, reason), in the order to show them.
        score_columns: the numeric columns to show (the main score first, at most :data:`MAX_SCORE_COLUMNS`).
        provenance: the selection's steps (for :func:`main_score`).
        column_mapping: your column names -> instruction/output/messages/... (to read the texts).
        per_group: kept rows shown at the top and at the cutoff.
        per_reason: dropped rows shown per reason (at most :data:`MAX_REASONS` reasons).
        limit: characters of each instruction and response.

    Returns:
        One dict per group: ``group`` (top/cutoff/dropped), ``title``, ``rows`` (``row_id``, ``instruction``,
        ``response``, ``scores``), and for a drop reason ``step``, ``reason`` and ``count``.
    """
    from .selection.filters import column_values

    n = len(scored)
    numeric = [c for c in score_columns if c in scored.column_names]
    main = main_score(provenance, numeric)
    if main is not None:
        numeric = [main[0], *[c for c in numeric if c != main[0]]]
    numeric = numeric[:MAX_SCORE_COLUMNS]
    values = {c: column_values(scored, c, "report") for c in numeric}
    kept = np.flatnonzero(np.asarray(chosen, bool)[:n])

    groups: list[dict[str, Any]] = []
    if main is not None:
        col, high = main
        v = values[col][kept]
        ranked = kept[np.isfinite(v)]
        order = np.argsort(-v[np.isfinite(v)] if high else v[np.isfinite(v)], kind="stable")
        ranked = ranked[order]
        groups.append({"group": "top", "title": f"Kept: top by `{col}` ({'highest' if high else 'lowest'} first)",
                       "positions": ranked[:per_group]})
        groups.append({"group": "cutoff", "title": "Kept: at the cutoff (the lowest-ranked kept rows)",
                       "positions": ranked[max(per_group, len(ranked) - per_group):]})
    else:
        groups.append({"group": "top", "title": "Kept: the first rows (no single score ranks the kept rows)",
                       "positions": kept[:per_group]})

    by_reason: dict[tuple[str, str], list[int]] = {}
    for pos, step, reason in drops:
        by_reason.setdefault((step, reason), []).append(int(pos))
    for (step, reason), positions in list(by_reason.items())[:MAX_REASONS]:
        count = len(positions)
        title = f"Dropped at {step}: {reason} ({count:,} row{'s' * (count != 1)})"
        groups.append({"group": "dropped", "title": title, "step": step, "reason": reason, "count": count,
                       "positions": np.asarray(positions[:per_reason], dtype=np.int64)})
    if len(by_reason) > MAX_REASONS:
        groups.append({"group": "note", "title": f"{len(by_reason) - MAX_REASONS} more drop reasons not shown",
                       "positions": np.zeros(0, np.int64)})

    texts = _texts(scored, sorted({int(p) for g in groups for p in g["positions"]}), column_mapping, limit)
    row_ids = _row_ids(scored)
    for g in groups:
        positions = [int(p) for p in g.pop("positions")]
        g["columns"] = numeric
        g["rows"] = [{"row_id": int(row_ids[p]) if row_ids is not None else p,
                      "instruction": texts[p][0], "response": texts[p][1],
                      "scores": {c: _number(values[c][p]) for c in numeric}} for p in positions]
    return [g for g in groups if g["rows"] or g["group"] == "note"]


def examples_markdown(groups: Sequence[Mapping[str, Any]], limit: int = MAX_TEXT_CHARS) -> str:
    """The "Example rows" section of ``report.md`` for :func:`example_groups`' groups ("" for none)."""
    if not groups:
        return ""
    lines = ["## Example rows", "",
             f"Texts are cut to {limit} characters; the score columns are the report's (the main score first)."]
    for g in groups:
        if g["group"] == "note":
            lines += ["", f"({g['title']}.)"]
            continue
        columns = list(g.get("columns") or [])
        lines += ["", f"### {g['title']}", "", "| " + " | ".join(["row", *columns, "instruction", "response"]) + " |",
                  "|" + "---|" * (len(columns) + 3)]
        for row in g["rows"]:
            cells = [str(row["row_id"]), *[_fmt(row["scores"].get(c)) for c in columns], _cell(row["instruction"]),
                     _cell(row["response"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _row_ids(scored: Any) -> np.ndarray | None:
    from .columns import ROW_ID

    if ROW_ID not in scored.column_names:
        return None
    return np.asarray(scored.with_format(None)[ROW_ID], dtype=np.int64)


def _texts(scored: Any, positions: Sequence[int], column_mapping: Mapping[str, str] | None,
           limit: int) -> dict[int, tuple[str, str]]:
    """(instruction, response) of the rows at ``positions``, cut to ``limit``; "" when the rows have no text
    columns, the reason in brackets for a row that cannot be read."""
    from .formats import DatasetFormatError, RowError, assistant_turns, detect_format, last_user_text, row_to_messages

    out = {p: ("", "") for p in positions}
    try:
        fmt = detect_format(scored.column_names, column_mapping)
    except DatasetFormatError:
        return out
    if not positions:
        return out
    vectors = [c for c, f in scored.features.items()  # embeddings are not read
               if getattr(getattr(f, "feature", None), "dtype", "") in ("float16", "float32", "float64")]
    rows = scored.remove_columns(vectors).with_format(None)[list(positions)]
    for r, p in enumerate(positions):
        try:
            messages = row_to_messages({k: rows[k][r] for k in rows}, fmt, column_mapping)
            turn = assistant_turns(messages)[0]
            out[p] = (cut_text(last_user_text(messages, turn), limit), cut_text(messages[turn]["content"], limit))
        except (RowError, IndexError, KeyError) as err:
            out[p] = (f"(unreadable: {cut_text(err, 80)})", "")
    return out


def _number(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("<", "&lt;") or " "
