"""A selection report: PNG plots and a markdown summary of what was chosen and why.

:func:`make_report` writes into one folder:

- ``hist_<column>.png``: each score's histogram for all rows and for the chosen rows, with the thresholds and
  cutoffs of the selection steps marked;
- ``embedding_map.png``: a 2-D PCA map of the embeddings with the chosen rows highlighted;
- ``lengths.png``: prompt and response lengths before and after;
- ``composition_<column>.png``: shares per source/category before and after (when such a column exists);
- ``steps.png``: rows left after each step;
- ``report.md`` linking them, with the provenance table, and ``report.json`` listing the figures (for dataset
  cards) and the numbers.

Plots are drawn with matplotlib's Agg canvas directly, so no global backend is changed.

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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HFSelectError

logger = logging.getLogger(__name__)

GROUP_COLUMNS = ("source", "category", "dataset", "task", "domain", "subset", "language")
_SKIP_SCORE_COLUMNS = {"_row_id", "drop_step_index"}
ALL_COLOR = "#9e9e9e"
CHOSEN_COLOR = "#d62728"
MAX_SCORE_PLOTS = 12


@dataclass
class _Figure:
    file: str
    kind: str
    caption: str
    column: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _new_figure(width: float = 7.0, height: float = 4.5) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png")


def _selection_parts(selection: Any) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
    """(row ids, provenance, provenance dict) from a SelectionResult, a folder, or a Dataset with ``_row_id``."""
    from .selection.select import ROW_ID, SelectionResult

    if isinstance(selection, (str, os.PathLike)):
        selection = SelectionResult.load(selection)
    if isinstance(selection, SelectionResult):
        return np.asarray(selection.row_ids, dtype=np.int64), selection.provenance, selection.to_dict()
    if hasattr(selection, "column_names"):
        if ROW_ID not in selection.column_names:
            raise HFSelectError(
                f"the selection dataset has no {ROW_ID!r} column (columns: {selection.column_names}); pass the "
                "SelectionResult or a subset made by hf_select.selection.select."
            )
        return np.asarray(selection.with_format(None)[ROW_ID], dtype=np.int64), [], {}
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


def _default_score_columns(scored: Any) -> list[str]:
    cols = []
    for name, feature in scored.features.items():
        dtype = getattr(feature, "dtype", None)
        if name in _SKIP_SCORE_COLUMNS or dtype not in ("float16", "float32", "float64"):
            continue
        cols.append(name)
    return cols


def _marks_for(column: str, provenance: Sequence[dict[str, Any]]) -> list[tuple[float, str, str]]:
    """Vertical lines (value, label, line style) that the selection steps put on a score column."""
    marks: list[tuple[float, str, str]] = []
    for i, e in enumerate(provenance, 1):
        p, info, step = e.get("params", {}), e.get("info", {}) or {}, e.get("step")
        if step == "threshold" and p.get("column") == column:
            if p.get("min") is not None:
                marks.append((float(p["min"]), f"step {i} threshold: min {p['min']:g}", "--"))
            if p.get("max") is not None:
                marks.append((float(p["max"]), f"step {i} threshold: max {p['max']:g}", "--"))
        elif step == "ifd_rule" and p.get("column", "ifd") == column:
            marks.append((float(p.get("max_ifd", 1.0)), f"step {i} ifd_rule: drop IFD >= {p.get('max_ifd', 1.0):g}",
                          "--"))
            if info.get("cutoff") is not None:
                marks.append((float(info["cutoff"]), f"step {i} ifd_rule: lowest kept {info['cutoff']:.3g}", ":"))
        elif step == "top" and p.get("column") == column and info.get("cutoff") is not None:
            marks.append((float(info["cutoff"]), f"step {i} top: cutoff {info['cutoff']:.3g}", ":"))
    return marks


def _shares(values: np.ndarray) -> np.ndarray:
    """Histogram weights that make each group's bars add up to 100 (%), so groups of any size compare."""
    return np.full(len(values), 100.0 / max(1, len(values)))


def _stats(values: np.ndarray) -> dict[str, Any]:
    ok = values[np.isfinite(values)]
    if not len(ok):
        return {"n": 0, "nan": int(len(values)), "mean": None, "median": None}
    return {"n": int(len(ok)), "nan": int(len(values) - len(ok)), "mean": float(ok.mean()),
            "median": float(np.median(ok))}


def _score_histogram(values: np.ndarray, chosen: np.ndarray, column: str, marks: list[tuple[float, str, str]],
                     path: Path) -> dict[str, Any]:
    finite = np.isfinite(values)
    all_v, sel_v = values[finite], values[finite & chosen]
    lo, hi = np.percentile(all_v, [0.5, 99.5]) if len(all_v) else (0.0, 1.0)
    for value, _, _ in marks:
        if math.isfinite(value):
            lo, hi = min(lo, value), max(hi, value)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 50)
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(np.clip(all_v, lo, hi), bins=bins, weights=_shares(all_v), color=ALL_COLOR, alpha=0.6,
            label=f"all rows (n={len(all_v):,})")
    if len(sel_v):
        ax.hist(np.clip(sel_v, lo, hi), bins=bins, weights=_shares(sel_v), color=CHOSEN_COLOR, alpha=0.55,
                label=f"selected (n={len(sel_v):,})")
    colors = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for j, (value, label, style) in enumerate(marks):
        ax.axvline(value, color=colors[j % len(colors)], linestyle=style, linewidth=1.8, label=label)
    nan = int((~finite).sum())
    ax.set_title(f"{column}: all rows vs selected" + (f" ({nan:,} rows without a score)" if nan else ""))
    ax.set_xlabel(f"{column} (0.5-99.5 percentile range; outliers at the edges)")
    ax.set_ylabel("share of the group's rows (%)")
    ax.legend(fontsize=8, loc="best")
    _save(fig, path)
    return {"all": _stats(values), "selected": _stats(values[chosen])}


def _embedding_map(x: np.ndarray, rows: np.ndarray, chosen: np.ndarray, path: Path, max_points: int,
                   seed: int = 0) -> dict[str, Any]:
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    fit_rows = np.arange(len(x)) if len(x) <= max_points else np.sort(rng.choice(len(x), max_points, replace=False))
    pca = PCA(n_components=2, random_state=seed).fit(x[fit_rows])
    sel_local = np.flatnonzero(chosen[rows])
    rest_local = np.flatnonzero(~chosen[rows])
    if len(rest_local) > max_points:
        rest_local = np.sort(rng.choice(rest_local, max_points, replace=False))
    if len(sel_local) > max_points:
        sel_local = np.sort(rng.choice(sel_local, max_points, replace=False))
    fig = _new_figure(7.0, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    if len(rest_local):
        p = pca.transform(x[rest_local])
        ax.scatter(p[:, 0], p[:, 1], s=4, c=ALL_COLOR, alpha=0.35, linewidths=0,
                   label=f"not selected ({int((~chosen[rows]).sum()):,})")
    if len(sel_local):
        p = pca.transform(x[sel_local])
        ax.scatter(p[:, 0], p[:, 1], s=10, c=CHOSEN_COLOR, alpha=0.85, linewidths=0,
                   label=f"selected ({int(chosen[rows].sum()):,})")
    ev = pca.explained_variance_ratio_
    ax.set_title("Embeddings, PCA to 2-D: selected rows highlighted")
    ax.set_xlabel(f"PC1 ({ev[0]:.1%} of variance)")
    ax.set_ylabel(f"PC2 ({ev[1]:.1%} of variance)" if len(ev) > 1 else "PC2")
    ax.legend(loc="best", markerscale=2)
    _save(fig, path)
    return {"explained_variance": [float(v) for v in ev], "points_plotted": int(len(rest_local) + len(sel_local))}


def _text_lengths(scored: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Characters of the prompt (last user turn) and of the response, NaN for unreadable rows."""
    from .formats import DatasetFormatError, RowError, assistant_turns, detect_format, last_user_text, row_to_messages

    try:
        fmt = detect_format(scored.column_names)
    except DatasetFormatError:
        return None
    plain = scored.with_format(None)
    prompt, response = [], []
    for lo in range(0, len(plain), 1000):
        batch = plain[lo : lo + 1000]
        keys = list(batch)
        for r in range(len(batch[keys[0]])):
            try:
                messages = row_to_messages({k: batch[k][r] for k in keys}, fmt)
                turn = assistant_turns(messages)[0]
                prompt.append(len(last_user_text(messages, turn)))
                response.append(len(messages[turn]["content"]))
            except RowError:
                prompt.append(math.nan)
                response.append(math.nan)
    return np.asarray(prompt, dtype=float), np.asarray(response, dtype=float)


def _lengths_figure(prompt: np.ndarray, response: np.ndarray, chosen: np.ndarray, path: Path) -> dict[str, Any]:
    fig = _new_figure(10.0, 4.2)
    out = {}
    for j, (name, values) in enumerate((("prompt (instruction + input)", prompt), ("response", response))):
        ax = fig.add_subplot(1, 2, j + 1)
        ok = np.isfinite(values)
        v = np.maximum(values[ok], 1.0)
        low = float(v.min()) if len(v) else 1.0
        high = max(low * 10.0, float(v.max()) if len(v) else 10.0)
        bins = np.logspace(math.log10(low), math.log10(high), 40)
        ax.hist(v, bins=bins, weights=_shares(v), color=ALL_COLOR, alpha=0.6,
                label=f"all rows (median {np.median(v) if len(v) else 0:,.0f})")
        vs = np.maximum(values[ok & chosen], 1.0)
        if len(vs):
            ax.hist(vs, bins=bins, weights=_shares(vs), color=CHOSEN_COLOR, alpha=0.55,
                    label=f"selected (median {np.median(vs):,.0f})")
        ax.set_xscale("log")
        ax.set_title(f"{name.split(' ')[0].capitalize()} length")
        ax.set_xlabel(f"{name} length (characters, log scale)")
        ax.set_ylabel("share of the group's rows (%)")
        ax.legend(fontsize=8)
        out[name.split(" ")[0]] = {"all": _stats(values), "selected": _stats(values[chosen])}
    _save(fig, path)
    return out


def _composition_figure(values: list[Any], chosen: np.ndarray, column: str, path: Path, top_n: int = 15
                        ) -> dict[str, Any]:
    labels = ["(missing)" if v is None else str(v) for v in values]
    all_counts = Counter(labels)
    sel_counts = Counter(lab for lab, c in zip(labels, chosen, strict=True) if c)
    cats = [c for c, _ in all_counts.most_common(top_n)]
    other_all = sum(all_counts.values()) - sum(all_counts[c] for c in cats)
    other_sel = sum(sel_counts.values()) - sum(sel_counts[c] for c in cats)
    if other_all:
        cats.append("(other)")
    n_all, n_sel = max(1, len(labels)), max(1, int(chosen.sum()))

    def share(counter: Counter, cat: str, other: int, total: int) -> float:
        return 100.0 * (other if cat == "(other)" else counter[cat]) / total

    a = [share(all_counts, c, other_all, n_all) for c in cats]
    s = [share(sel_counts, c, other_sel, n_sel) for c in cats]
    fig = _new_figure(8.0, max(3.0, 0.38 * len(cats) + 1.5))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(cats))
    ax.barh(y - 0.2, a, height=0.4, color=ALL_COLOR, label=f"all rows (n={len(labels):,})")
    ax.barh(y + 0.2, s, height=0.4, color=CHOSEN_COLOR, label=f"selected (n={int(chosen.sum()):,})")
    ax.set_yticks(y)
    ax.set_yticklabels([c if len(c) <= 30 else c[:27] + "..." for c in cats])
    ax.invert_yaxis()
    ax.set_xlabel("share of rows (%)")
    ax.set_title(f"Composition by {column}: before and after selection")
    ax.legend(loc="lower right")
    _save(fig, path)
    return {"all": dict(all_counts.most_common()), "selected": dict(sel_counts.most_common())}


def _steps_figure(provenance: Sequence[dict[str, Any]], input_rows: int, path: Path) -> None:
    names = ["input"] + [f"{i}. {e['step']}" for i, e in enumerate(provenance, 1)]
    counts = [input_rows] + [int(e["rows_out"]) for e in provenance]
    fig = _new_figure(8.0, max(3.0, 0.45 * len(names) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    ax.barh(y, counts, color=[ALL_COLOR] + [CHOSEN_COLOR] * len(provenance))
    for yi, c in zip(y, counts, strict=True):
        ax.text(c, yi, f" {c:,}", va="center", fontsize=9)
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlabel("rows left")
    ax.set_xlim(0, max(counts) * 1.18 if max(counts) else 1)
    ax.set_title("Rows left after each selection step")
    _save(fig, path)


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
    row_ids, provenance, prov_dict = _selection_parts(selection)
    chosen = _chosen_mask(scored, row_ids)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, n_sel = len(scored), int(chosen.sum())
    figures: list[_Figure] = []
    notes: list[str] = []
    summary: dict[str, Any] = {}

    if provenance:
        _steps_figure(provenance, int(prov_dict.get("input_rows", n)), out / "steps.png")
        figures.append(_Figure("steps.png", "steps", "Rows left after each selection step"))

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
        score_stats[col] = _score_histogram(values, chosen, col, _marks_for(col, provenance), out / name)
        figures.append(_Figure(name, "score_histogram", f"{col}: all rows vs selected, thresholds marked", col))
    summary["scores"] = score_stats

    if embedding_column in scored.column_names and n:
        x, rows = embedding_matrix(scored, embedding_column, "report")
        if len(rows) >= 3 and x.shape[1] >= 2:
            summary["embedding_map"] = _embedding_map(x, rows, chosen, out / "embedding_map.png", max_points)
            figures.append(_Figure("embedding_map.png", "embedding_map",
                                   "Embeddings in 2-D (PCA), selected rows highlighted", embedding_column))
        else:
            notes.append(f"Too few rows with a `{embedding_column}` vector for a map.")
    else:
        notes.append(f"No `{embedding_column}` column: no embedding map.")

    lengths = _text_lengths(scored) if n else None
    if lengths is not None:
        summary["lengths"] = _lengths_figure(lengths[0], lengths[1], chosen, out / "lengths.png")
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
        comp[col] = _composition_figure(list(values), chosen, col, out / name)
        figures.append(_Figure(name, "composition", f"Composition by {col} before and after", col))
    summary["composition"] = comp

    md = _markdown(title or "Selection report", n, n_sel, provenance, prov_dict, score_stats, figures, notes)
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
              score_stats: dict[str, Any], figures: Sequence[_Figure], notes: Sequence[str]) -> str:
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
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"
