"""The report's figures, drawn so that they cannot mislead: readable ticks on every axis, one pair of bars per
selection step (rows in and out, so branches such as MoDS's seed and necessity sets show as branches), the kept side
of every threshold and cutoff shaded, the embedding map saying which rows it shows, and every "rows without a
score" count broken down by the score's status.

:mod:`hf_select.report` decides what to plot and writes the markdown; this module only draws. Plots are drawn with
matplotlib's Agg canvas directly, so no global backend is changed.

Example:
    >>> import numpy as np
    >>> missing_text(np.array([1.0, np.nan, np.nan]), np.array(["ok", "prompt_too_long", None], dtype=object),
    ...              "ifd_status")
    '2 rows without a score (ifd_status: not given to the scorer (no status) 1, prompt_too_long 1)'
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ALL_COLOR = "#9e9e9e"
CHOSEN_COLOR = "#d62728"
INPUT_COLOR = "#c6dbef"
MARK_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]

# (value, label, line style, kept side: "above" or "below" the value, the step's number)
Mark = tuple[float, str, str, str, int]


def new_figure(width: float = 7.0, height: float = 4.5) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png")


def shares(values: np.ndarray) -> np.ndarray:
    """Histogram weights that make each group's bars add up to 100 (%), so groups of any size compare."""
    return np.full(len(values), 100.0 / max(1, len(values)))


def stats(values: np.ndarray) -> dict[str, Any]:
    ok = values[np.isfinite(values)]
    if not len(ok):
        return {"n": 0, "nan": int(len(values)), "mean": None, "median": None}
    return {"n": int(len(ok)), "nan": int(len(values) - len(ok)), "mean": float(ok.mean()),
            "median": float(np.median(ok))}


def status_column_for(column: str, names: Sequence[str]) -> str | None:
    """The status companion of a score column: ``<column>_status``, else the longest ``<prefix>_status`` of it
    (``ifd_ppl`` -> ``ifd_status``, ``ind_mtld`` -> ``ind_status``), else a known alias (``judge_score`` ->
    ``quality_status``).

    Example:
        >>> status_column_for("ifd_ppl", ["ifd_ppl", "ifd_status"]), status_column_for("x", ["x"])
        ('ifd_status', None)
    """
    parts = column.split("_")
    for i in range(len(parts), 0, -1):
        name = "_".join(parts[:i]) + "_status"
        if name in names and name != column:
            return name
    alias = {"judge_score": "quality_status", "judge_mass": "quality_status", "instructmining_pred": "ind_status"}
    return alias.get(column) if alias.get(column) in names else None


def missing_text(values: np.ndarray, status: np.ndarray | None, status_column: str | None) -> str:
    """"N rows without a score (<status column>: <status> <count>, ...)", or "" when every row has one."""
    missing = ~np.isfinite(values)
    n = int(missing.sum())
    if not n:
        return ""
    rows = "1 row" if n == 1 else f"{n:,} rows"
    if status is None:
        return f"{rows} without a score (no status column: not given to the scorer)"
    counts = Counter("not given to the scorer (no status)" if s is None else str(s) for s in status[missing])
    parts = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{rows} without a score ({status_column}: {parts})"


def marks_for(column: str, provenance: Sequence[dict[str, Any]]) -> list[Mark]:
    """The lines the selection steps put on a score column, each with the side of it that the step kept."""
    marks: list[Mark] = []
    for i, e in enumerate(provenance, 1):
        p, info, step = e.get("params", {}), e.get("info", {}) or {}, e.get("step")
        where = f"step {i}" + (f" ({e['stage']})" if e.get("stage") else "")
        if step == "threshold" and p.get("column") == column:
            strict = bool(p.get("strict"))
            if p.get("min") is not None:
                marks.append((float(p["min"]), f"{where} threshold: kept {'>' if strict else '>='} {p['min']:g}",
                              "--", "above", i))
            if p.get("max") is not None:
                marks.append((float(p["max"]), f"{where} threshold: kept {'<' if strict else '<='} {p['max']:g}",
                              "--", "below", i))
        elif step == "ifd_rule" and p.get("column", "ifd") == column:
            max_ifd = float(p.get("max_ifd", 1.0))
            marks.append((max_ifd, f"{where} ifd_rule: dropped >= {max_ifd:g}", "--", "below", i))
            if info.get("cutoff") is not None:
                marks.append((float(info["cutoff"]), f"{where} ifd_rule: kept the highest, >= {info['cutoff']:.3g}",
                              ":", "above", i))
        elif step == "top" and p.get("column") == column and info.get("cutoff") is not None:
            high = p.get("descending", True)
            marks.append((float(info["cutoff"]), f"{where} top: kept the {'highest' if high else 'lowest'}, "
                          f"{'>=' if high else '<='} {info['cutoff']:.3g}", ":", "above" if high else "below", i))
    return marks


def score_histogram(values: np.ndarray, chosen: np.ndarray, column: str, marks: Sequence[Mark], path: Path,
                    missing: str = "") -> dict[str, Any]:
    """All rows vs the selected ones; every mark a line, the side its step kept shaded in the line's colour."""
    finite = np.isfinite(values)
    all_v, sel_v = values[finite], values[finite & chosen]
    lo, hi = np.percentile(all_v, [0.5, 99.5]) if len(all_v) else (0.0, 1.0)
    for value, *_ in marks:  # keep every line on the axis
        if math.isfinite(value):
            lo, hi = min(lo, value), max(hi, value)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.02 * (hi - lo)
    bins = np.linspace(lo, hi, 50)
    fig = new_figure(7.0, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(np.clip(all_v, lo, hi), bins=bins, weights=shares(all_v), color=ALL_COLOR, alpha=0.6,
            label=f"all rows with a score (n={len(all_v):,})")
    if len(sel_v):
        ax.hist(np.clip(sel_v, lo, hi), bins=bins, weights=shares(sel_v), color=CHOSEN_COLOR, alpha=0.55,
                label=f"selected (n={len(sel_v):,})")
    for j, (value, label, style, _, _) in enumerate(marks):
        ax.axvline(value, color=MARK_COLORS[j % len(MARK_COLORS)], linestyle=style, linewidth=1.8, label=label)
    for k, step in enumerate(sorted({m[4] for m in marks})):  # one shaded range per step: what it kept
        mine = [m for m in marks if m[4] == step]
        low = max([m[0] for m in mine if m[3] == "above"], default=lo - pad)
        high = min([m[0] for m in mine if m[3] == "below"], default=hi + pad)
        if low < high:
            ax.axvspan(low, high, color=MARK_COLORS[k % len(MARK_COLORS)], alpha=0.1, linewidth=0,
                       label=f"step {step} kept this range")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_title(f"{column}: all rows vs selected" + (" (shaded: the range each step kept)" if marks else ""),
                 fontsize=11)
    if missing:
        ax.text(0.5, 1.0, missing, transform=ax.transAxes, ha="center", va="bottom", fontsize=8, color="#555555")
        ax.set_title(ax.get_title() + "\n", fontsize=11)
    ax.set_xlabel(f"{column} (0.5-99.5 percentile range; outliers at the edges)")
    ax.set_ylabel("share of the group's rows (%)")
    ax.legend(fontsize=7, loc="best")
    save(fig, path)
    return {"all": stats(values), "selected": stats(values[chosen])}


def embedding_map(x: np.ndarray, rows: np.ndarray, chosen: np.ndarray, path: Path, max_points: int,
                  n_rows: int, missing: str = "", seed: int = 0) -> dict[str, Any]:
    """A 2-D PCA map of the rows that have a vector, the chosen ones highlighted; its subtitle says which rows are
    shown and why (the rows without a vector, and any seeded sample)."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    fit_rows = np.arange(len(x)) if len(x) <= max_points else np.sort(rng.choice(len(x), max_points, replace=False))
    pca = PCA(n_components=2, random_state=seed).fit(x[fit_rows])
    sel_local = np.flatnonzero(chosen[rows])
    rest_local = np.flatnonzero(~chosen[rows])
    n_rest, n_sel = len(rest_local), len(sel_local)
    if len(rest_local) > max_points:
        rest_local = np.sort(rng.choice(rest_local, max_points, replace=False))
    if len(sel_local) > max_points:
        sel_local = np.sort(rng.choice(sel_local, max_points, replace=False))
    shown = len(rest_local) + len(sel_local)
    why = [f"{shown:,} of {n_rows:,} rows shown"]
    if len(rows) < n_rows:
        why.append(f"only rows with a vector; {missing or f'{n_rows - len(rows):,} rows have none'}")
    if shown < len(rows):
        why.append(f"a seeded sample of at most {max_points:,} per group")
    fig = new_figure(7.0, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    if len(rest_local):
        p = pca.transform(x[rest_local])
        ax.scatter(p[:, 0], p[:, 1], s=6, c=ALL_COLOR, alpha=0.5, linewidths=0, label=f"not selected ({n_rest:,})")
    if len(sel_local):
        p = pca.transform(x[sel_local])
        ax.scatter(p[:, 0], p[:, 1], s=12, c=CHOSEN_COLOR, alpha=0.85, linewidths=0, label=f"selected ({n_sel:,})")
    ev = pca.explained_variance_ratio_
    ax.set_title("Embeddings, PCA to 2-D: selected rows highlighted\n", fontsize=11)
    ax.text(0.5, 1.0, "; ".join(why), transform=ax.transAxes, ha="center", va="bottom", fontsize=8,
            color="#555555", wrap=True)
    ax.set_xlabel(f"PC1 ({ev[0]:.1%} of variance)")
    ax.set_ylabel(f"PC2 ({ev[1]:.1%} of variance)" if len(ev) > 1 else "PC2")
    ax.legend(loc="best", markerscale=2)
    save(fig, path)
    return {"explained_variance": [float(v) for v in ev], "points_plotted": int(shown), "rows": int(n_rows),
            "rows_with_vector": int(len(rows)), "subtitle": "; ".join(why)}


def _log_ticks(ax: Any) -> None:
    """Log x axis with plain labels at 1-2-5 steps and unlabelled minor ticks (no overlapping 3x10^1 4x10^1)."""
    from matplotlib import ticker

    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10), numticks=12))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def lengths_figure(prompt: np.ndarray, response: np.ndarray, chosen: np.ndarray, path: Path) -> dict[str, Any]:
    fig = new_figure(10.0, 4.2)
    out = {}
    for j, (name, values) in enumerate((("prompt (instruction + input)", prompt), ("response", response))):
        ax = fig.add_subplot(1, 2, j + 1)
        ok = np.isfinite(values)
        v = np.maximum(values[ok], 1.0)
        low = float(v.min()) if len(v) else 1.0
        high = max(low * 10.0, float(v.max()) if len(v) else 10.0)
        bins = np.logspace(math.log10(low), math.log10(high), 40)
        ax.hist(v, bins=bins, weights=shares(v), color=ALL_COLOR, alpha=0.6,
                label=f"all rows (median {np.median(v) if len(v) else 0:,.0f})")
        vs = np.maximum(values[ok & chosen], 1.0)
        if len(vs):
            ax.hist(vs, bins=bins, weights=shares(vs), color=CHOSEN_COLOR, alpha=0.55,
                    label=f"selected (median {np.median(vs):,.0f})")
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        _log_ticks(ax)
        ax.set_title(f"{name.split(' ')[0].capitalize()} length")
        ax.set_xlabel(f"{name} length (characters, log scale)")
        ax.set_ylabel("share of the group's rows (%)")
        ax.legend(fontsize=8)
        out[name.split(" ")[0]] = {"all": stats(values), "selected": stats(values[chosen])}
    save(fig, path)
    return out


def composition_figure(values: list[Any], chosen: np.ndarray, column: str, path: Path, top_n: int = 15
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
    fig = new_figure(8.0, max(3.0, 0.38 * len(cats) + 1.5))
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
    save(fig, path)
    return {"all": dict(all_counts.most_common()), "selected": dict(sel_counts.most_common())}


def steps_figure(provenance: Sequence[dict[str, Any]], input_rows: int, path: Path) -> dict[str, Any]:
    """One pair of bars per step: the rows it was given (light) and the rows it kept (dark). A step whose input is
    not the previous step's output (a branch, e.g. MoDS's necessity set beside its seed set, or a union of two
    sets) is marked so, so the bars never read as one chain when they are not."""
    names = ["input"]
    rows_in = [input_rows]
    rows_out = [input_rows]
    branch = [False]
    prev = input_rows
    for i, e in enumerate(provenance, 1):
        names.append(f"{i}. {e['stage'] + ': ' if e.get('stage') else ''}{e['step']}")
        r_in = int(e.get("rows_in", prev))
        rows_in.append(r_in)
        rows_out.append(int(e["rows_out"]))
        branch.append(r_in != prev)
        prev = int(e["rows_out"])
    fig = new_figure(8.5, max(3.0, 0.5 * len(names) + 1.6))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    ax.barh(y, rows_in, height=0.7, color=INPUT_COLOR, label="rows in (the step's input)")
    ax.barh(y[:1], rows_out[:1], height=0.4, color=ALL_COLOR, label="rows read")
    if len(provenance):
        ax.barh(y[1:], rows_out[1:], height=0.4, color=CHOSEN_COLOR, label="rows out (kept by the step)")
    for yi, (a, b, br) in enumerate(zip(rows_in, rows_out, branch, strict=True)):
        text = f" {b:,}" if yi == 0 else f" {a:,} -> {b:,}" + ("  (own input: a branch)" if br else "")
        ax.text(max(a, b), yi, text, va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("rows")
    top = max(max(rows_in), max(rows_out))
    ax.set_xlim(0, top * 1.55 if top else 1)
    ax.set_title("Rows into and out of each selection step"
                 + ("\n(steps marked 'a branch' start from their own input, not the step above)" if any(branch)
                    else ""), fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    save(fig, path)
    return {"branches": [n for n, b in zip(names, branch, strict=True) if b]}
