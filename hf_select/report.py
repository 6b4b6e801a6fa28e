"""A selection report: PNG plots and a markdown summary of what was chosen and why.

:func:`make_report` writes into one folder:

- ``hist_<column>.png``: each score's histogram for all rows and for the chosen rows, with the thresholds and
  cutoffs of the selection steps marked;
- ``embedding_map.png``: a 2-D PCA map of the embeddings with the chosen rows highlighted;
- ``lengths.png``: prompt and response lengths before and after;
- ``composition_<column>.png``: shares per source/category before and after (when such a column exists);
- ``steps.png``: rows into and out of each step (branches marked);
- ``report.md`` linking them, with the provenance table and example rows (a few kept at the top, at the cutoff, and
  dropped for each reason, cut to a readable length), and ``report.json`` listing the figures (for dataset cards),
  the numbers and the example rows.

The figures are drawn by :mod:`hf_select.report_plots` and the example rows picked by
:mod:`hf_select.report_examples`; this module chooses the figures and writes the markdown.

Example:
    >>> from hf_select.report import make_report
    >>> make_report(scored, result, "report/")  # doctest: +SKIP
    PosixPath('report/report.md')
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HFSelectError
from .report_examples import example_groups, examples_markdown
from .report_plots import (
    composition_figure,
    embedding_map,
    lengths_figure,
    marks_for,
    missing_text,
    score_histogram,
    status_column_for,
    steps_figure,
)

logger = logging.getLogger(__name__)

GROUP_COLUMNS = ("source", "category", "dataset", "task", "domain", "subset", "language")
_SKIP_SCORE_COLUMNS = {"_row_id", "drop_step_index"}
MAX_SCORE_PLOTS = 12


@dataclass
class _Figure:
    file: str
    kind: str
    caption: str
    column: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _selection_parts(selection: Any) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any], Any]:
    """(row ids, provenance, provenance dict, dropped rows or None) from a SelectionResult, a folder, or a Dataset
    with ``_row_id``."""
    from .selection.select import ROW_ID, SelectionResult

    if isinstance(selection, (str, os.PathLike)):
        selection = SelectionResult.load(selection)
    if isinstance(selection, SelectionResult):
        return (np.asarray(selection.row_ids, dtype=np.int64), selection.provenance, selection.to_dict(),
                selection.dropped)
    if hasattr(selection, "column_names"):
        if ROW_ID not in selection.column_names:
            raise HFSelectError(
                f"the selection dataset has no {ROW_ID!r} column (columns: {selection.column_names}); pass the "
                "SelectionResult or a subset made by hf_select.selection.select."
            )
        return np.asarray(selection.with_format(None)[ROW_ID], dtype=np.int64), [], {}, None
    raise HFSelectError(f"selection must be a SelectionResult, a saved selection folder or a Dataset with {ROW_ID}, "
                        f"got {type(selection).__name__}")


def _chosen_mask(scored: Any, row_ids: np.ndarray) -> np.ndarray:
    from .selection.select import ROW_ID

    n = len(scored)
    if ROW_ID in scored.column_names:
        ids = np.asarray(scored.with_format(None)[ROW_ID], dtype=np.int64)
        mask = np.isin(ids, row_ids)
        missing = len(np.setdiff1d(row_ids, ids))
    else:
        bad = row_ids[(row_ids < 0) | (row_ids >= n)]
        if len(bad):
            raise HFSelectError(
                f"the selection names row {int(bad.max())} but the scored dataset has {n} rows: pass the dataset "
                "the selection was made from."
            )
        mask = np.zeros(n, bool)
        mask[row_ids] = True
        missing = 0
    if missing:
        raise HFSelectError(f"{missing} selected rows are not in the scored dataset (matched by _row_id): pass the "
                            "dataset the selection was made from.")
    return mask


def _drops(scored: Any, dropped: Any, chosen: np.ndarray) -> list[tuple[int, str, str]]:
    """The dropped rows as (position in ``scored``, "step N (name)", reason), in the selection's order; without the
    selection's dropped rows (a plain subset was given), every row not chosen, with no reason recorded."""
    from .selection.select import ROW_ID

    if dropped is None:
        return [(int(p), "no recorded step", "not selected") for p in np.flatnonzero(~chosen)]
    names = [c for c in (ROW_ID, "drop_step", "drop_step_index", "drop_reason") if c in dropped.column_names]
    if ROW_ID not in names or not len(dropped):
        return []
    cols = dropped.select_columns(names).with_format(None).to_dict()
    if ROW_ID in scored.column_names:
        where = {int(i): p for p, i in enumerate(scored.with_format(None)[ROW_ID])}
    else:
        where = {i: i for i in range(len(scored))}
    out = []
    for r, row_id in enumerate(cols[ROW_ID]):
        pos = where.get(int(row_id))
        if pos is None:
            continue
        index = cols.get("drop_step_index", [None] * len(cols[ROW_ID]))[r]
        step = cols.get("drop_step", [None] * len(cols[ROW_ID]))[r] or "a step"
        label = f"step {int(index) + 1} ({step})" if index is not None and int(index) >= 0 else str(step)
        out.append((pos, label, str(cols.get("drop_reason", ["dropped"] * len(cols[ROW_ID]))[r])))
    return out  # the order select() wrote them in: by step, then reason, then row


def _default_score_columns(scored: Any) -> list[str]:
    cols = []
    for name, feature in scored.features.items():
        dtype = getattr(feature, "dtype", None)
        if name in _SKIP_SCORE_COLUMNS or dtype not in ("float16", "float32", "float64"):
            continue
        cols.append(name)
    return cols


def _text_lengths(scored: Any, column_mapping: Mapping[str, str] | None = None
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Characters of the prompt (last user turn) and of the response, NaN for unreadable rows."""
    from .formats import DatasetFormatError, RowError, assistant_turns, detect_format, last_user_text, row_to_messages

    try:
        fmt = detect_format(scored.column_names, column_mapping)
    except DatasetFormatError:
        return None
    plain = scored.with_format(None)
    prompt, response = [], []
    for lo in range(0, len(plain), 1000):
        batch = plain[lo : lo + 1000]
        keys = list(batch)
        for r in range(len(batch[keys[0]])):
            try:
                messages = row_to_messages({k: batch[k][r] for k in keys}, fmt, column_mapping)
                turn = assistant_turns(messages)[0]
                prompt.append(len(last_user_text(messages, turn)))
                response.append(len(messages[turn]["content"]))
            except RowError:
                prompt.append(math.nan)
                response.append(math.nan)
    return np.asarray(prompt, dtype=float), np.asarray(response, dtype=float)


def _missing(scored: Any, column: str, values: np.ndarray) -> str:
    """"N rows without a score (<status column>: <status> <count>, ...)" for ``column``, or ""."""
    status_column = status_column_for(column, scored.column_names)
    status = None
    if status_column is not None and np.isnan(values).any():
        status = np.asarray(scored.with_format(None)[status_column], dtype=object)
    return missing_text(values, status, status_column)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def make_report(
    scored: Any,
    selection: Any,
    output_dir: str | os.PathLike,
    *,
    score_columns: Sequence[str] | None = None,
    title: str | None = None,
    embedding_column: str = "embedding",
    group_columns: Sequence[str] | None = None,
    max_points: int = 20_000,
    column_mapping: Mapping[str, str] | None = None,
) -> Path:
    """Write the plots, ``report.md`` and ``report.json`` for a selection made from ``scored``.

    Args:
        scored: the dataset the selection was made from (with its score columns), or a path to it.
        selection: a :class:`~hf_select.selection.SelectionResult`, a folder it was saved to, or a Dataset with
            ``_row_id`` (the chosen rows' indices into ``scored``).
        output_dir: folder for the files (created).
        score_columns: score columns to plot; default every float column.
        title: the report's heading.
        embedding_column: the vector column for the PCA map (skipped when absent).
        group_columns: categorical columns for the composition plots; default those named like
            ``source``/``category``/``dataset``/``task``/``domain`` that exist.
        max_points: most points per group in the embedding map (a seeded sample beyond it).
        column_mapping: your column names -> instruction/output/messages/... (as the scorers take it), for the
            length plot.

    Returns:
        The path of ``report.md``. ``report.json`` beside it lists the PNG files (``figures``) for dataset cards.

    Raises:
        HFSelectError: a score column that is missing, or a selection that does not match ``scored``.

    Example:
        >>> from hf_select.selection import select
        >>> result = select(scored, [{"step": "top", "column": "ifd", "fraction": 0.1}])  # doctest: +SKIP
        >>> make_report(scored, result, "report/", title="Top 10% IFD")                  # doctest: +SKIP
    """
    from .selection.filters import column_values, embedding_matrix

    if isinstance(scored, (str, os.PathLike)):
        from .io import load_rows

        scored = load_rows(scored)
    row_ids, provenance, prov_dict, dropped = _selection_parts(selection)
    chosen = _chosen_mask(scored, row_ids)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, n_sel = len(scored), int(chosen.sum())
    figures: list[_Figure] = []
    notes: list[str] = []
    summary: dict[str, Any] = {}

    if provenance:
        summary["steps"] = steps_figure(provenance, int(prov_dict.get("input_rows", n)), out / "steps.png")
        figures.append(_Figure("steps.png", "steps", "Rows into and out of each selection step"))

    columns = list(score_columns) if score_columns is not None else _default_score_columns(scored)
    for col in columns:
        if col not in scored.column_names:
            raise HFSelectError(f"report: score column {col!r} is not in the dataset (columns: {scored.column_names})")
    if len(columns) > MAX_SCORE_PLOTS and score_columns is None:
        notes.append(f"Only the first {MAX_SCORE_PLOTS} of {len(columns)} float columns are plotted; pass "
                     "score_columns to choose.")
        columns = columns[:MAX_SCORE_PLOTS]
    score_stats: dict[str, Any] = {}
    for col in columns:
        values = column_values(scored, col, "report")
        if n == 0 or not np.isfinite(values).any():
            notes.append(f"`{col}` has no finite values; no histogram.")
            continue
        name = f"hist_{_slug(col)}.png"
        missing = _missing(scored, col, values)
        score_stats[col] = score_histogram(values, chosen, col, marks_for(col, provenance), out / name, missing)
        if missing:
            score_stats[col]["missing"] = missing
            notes.append(f"`{col}`: {missing}.")
        caption = f"{col}: all rows vs selected, the range each step kept shaded"
        figures.append(_Figure(name, "score_histogram", caption, col))
    summary["scores"] = score_stats

    if embedding_column in scored.column_names and n:
        x, rows = embedding_matrix(scored, embedding_column, "report")
        if len(rows) >= 3 and x.shape[1] >= 2:
            has = np.zeros(n, bool)
            has[rows] = True
            missing = _missing(scored, embedding_column, np.where(has, 0.0, np.nan))
            summary["embedding_map"] = embedding_map(x, rows, chosen, out / "embedding_map.png", max_points, n,
                                                     missing.replace(" without a score", " without a vector"))
            figures.append(_Figure("embedding_map.png", "embedding_map",
                                   "Embeddings in 2-D (PCA), selected rows highlighted", embedding_column))
        else:
            notes.append(f"Too few rows with a `{embedding_column}` vector for a map.")
    else:
        notes.append(f"No `{embedding_column}` column: no embedding map.")

    lengths = _text_lengths(scored, column_mapping) if n else None
    if lengths is not None:
        summary["lengths"] = lengths_figure(lengths[0], lengths[1], chosen, out / "lengths.png")
        figures.append(_Figure("lengths.png", "lengths", "Prompt and response lengths before and after selection"))
    else:
        notes.append("No instruction/response columns: no length plot.")

    groups = list(group_columns) if group_columns is not None else [c for c in GROUP_COLUMNS
                                                                      if c in scored.column_names]
    comp: dict[str, Any] = {}
    for col in groups:
        if col not in scored.column_names:
            raise HFSelectError(f"report: group column {col!r} is not in the dataset (columns: {scored.column_names})")
        values = list(scored.with_format(None)[col])
        if values and not isinstance(next((v for v in values if v is not None), ""), (str, int, bool)):
            notes.append(f"`{col}` is not a categorical column; no composition plot.")
            continue
        name = f"composition_{_slug(col)}.png"
        comp[col] = composition_figure(list(values), chosen, col, out / name)
        figures.append(_Figure(name, "composition", f"Composition by {col} before and after", col))
    summary["composition"] = comp

    examples = example_groups(scored, chosen, _drops(scored, dropped, chosen), columns, provenance, column_mapping)
    summary["examples"] = examples
    md = _markdown(title or "Selection report", n, n_sel, provenance, prov_dict, score_stats, figures, notes,
                   examples_markdown(examples))
    (out / "report.md").write_text(md, encoding="utf-8")
    report = {
        "title": title or "Selection report",
        "rows_in": n,
        "rows_selected": n_sel,
        "figures": [{"file": f.file, "kind": f.kind, "caption": f.caption, "column": f.column} for f in figures],
        "provenance": prov_dict or None,
        "summary": summary,
        "notes": notes,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return out / "report.md"


def _markdown(title: str, n: int, n_sel: int, provenance: Sequence[dict[str, Any]], prov_dict: dict[str, Any],
              score_stats: dict[str, Any], figures: Sequence[_Figure], notes: Sequence[str],
              examples: str = "") -> str:
    from .selection.select import provenance_table

    share = f" ({n_sel / n:.1%})" if n else ""
    lines = [f"# {title}", "", f"Selected **{n_sel:,}** of **{n:,}** rows{share}."]
    if prov_dict:
        lines.append(f"Seed: {prov_dict.get('seed')}; hf-select {prov_dict.get('hf_select_version')}.")
    lines += ["", "## Steps", ""]
    if provenance:
        lines.append(provenance_table(provenance))
    else:
        lines.append("No provenance was given (the selection was a plain dataset with `_row_id`).")
    by_kind: dict[str, list[_Figure]] = {}
    for f in figures:
        by_kind.setdefault(f.kind, []).append(f)
    for kind, heading in (("steps", None), ("score_histogram", "Scores"), ("embedding_map", "Embeddings"),
                          ("lengths", "Lengths"), ("composition", "Composition")):
        figs = by_kind.get(kind, [])
        if not figs:
            continue
        if heading:
            lines += ["", f"## {heading}", ""]
        else:
            lines.append("")
        if kind == "score_histogram" and score_stats:
            lines += ["| score | rows scored | mean (all) | median (all) | mean (selected) | median (selected) |",
                      "|---|---|---|---|---|---|"]
            for col, st in score_stats.items():
                a, s = st["all"], st["selected"]
                lines.append(f"| {col} | {a['n']:,} | {_fmt(a['mean'])} | {_fmt(a['median'])} | {_fmt(s['mean'])} "
                             f"| {_fmt(s['median'])} |")
            lines.append("")
        for f in figs:
            lines += [f"![{f.caption}]({f.file})", ""]
    if examples:
        lines += ["", examples]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"
