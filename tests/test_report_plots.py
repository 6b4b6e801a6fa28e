"""The report's figures cannot mislead: readable log ticks, branches in the steps chart, the kept side of every
mark, the embedding map's subtitle, and the statuses behind every "rows without a score"."""

from __future__ import annotations

import json

import numpy as np
from datasets import Dataset

from hf_select import report_plots as rp
from hf_select.report import make_report
from hf_select.selection import select

MODS_PROVENANCE = [
    {"step": "top", "stage": "quality", "params": {"column": "judge_score", "fraction": 0.5}, "rows_in": 160,
     "rows_out": 80, "info": {"cutoff": 3.2}},
    {"step": "kcenter", "stage": "seed", "params": {"k": 16}, "rows_in": 80, "rows_out": 16},
    {"step": "top", "stage": "necessary", "params": {"column": "necessity", "fraction": 0.5, "descending": False},
     "rows_in": 64, "rows_out": 32, "info": {"cutoff": 2.5}},
    {"step": "kcenter", "stage": "necessary", "params": {"k": 24}, "rows_in": 32, "rows_out": 24},
    {"step": "union", "stage": "seed+necessary", "params": {"of": ["seed", "necessary"]}, "rows_in": 40,
     "rows_out": 40},
]


def test_log_axis_has_plain_labels_and_no_minor_labels():
    for low, high in ((30.0, 60.0), (12.0, 150.0), (1.0, 5000.0)):
        fig = rp.new_figure()
        ax = fig.add_subplot(1, 1, 1)
        ax.hist(np.logspace(np.log10(low), np.log10(high), 50), bins=np.logspace(np.log10(low), np.log10(high), 20))
        ax.set_xscale("log")
        ax.set_xlim(low, max(high, low * 10))
        rp._log_ticks(ax)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        lo, hi = ax.get_xlim()
        major = [t for t in ax.xaxis.get_major_ticks() if lo <= t.get_loc() <= hi]
        labels = [t.label1.get_text() for t in major]
        assert len(labels) >= 2 and all(labels), labels
        assert not any("times" in s or "^" in s or "$" in s for s in labels), labels  # no 3x10^1 mathtext
        assert all(t.label1.get_text() == "" for t in ax.xaxis.get_minor_ticks()), "minor ticks are unlabelled"
        boxes = sorted((t.label1.get_window_extent(renderer) for t in major), key=lambda b: b.x0)
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False)), "tick labels overlap"


def test_steps_chart_marks_branches(tmp_path):
    info = rp.steps_figure(MODS_PROVENANCE, 160, tmp_path / "steps.png")
    assert info["branches"] == ["3. necessary: top", "5. seed+necessary: union"]
    chain = rp.steps_figure(MODS_PROVENANCE[:2], 160, tmp_path / "chain.png")
    assert chain["branches"] == []


def test_marks_say_which_side_was_kept():
    low = rp.marks_for("necessity", MODS_PROVENANCE)
    assert [(m[3], m[4]) for m in low] == [("below", 3)] and "kept the lowest, <= 2.5" in low[0][1]
    high = rp.marks_for("judge_score", MODS_PROVENANCE)
    assert [(m[3], m[4]) for m in high] == [("above", 1)] and "kept the highest" in high[0][1]
    rule = rp.marks_for("ifd", [{"step": "ifd_rule", "params": {"fraction": 0.1}, "info": {"cutoff": 0.8}}])
    assert [m[3] for m in rule] == ["below", "above"]  # kept: cutoff <= IFD < 1
    thr = rp.marks_for("q", [{"step": "threshold", "params": {"column": "q", "max": 2.0, "strict": True}}])
    assert thr[0][3] == "below" and "kept < 2" in thr[0][1]


def test_missing_counts_name_their_statuses():
    values = np.array([1.0, np.nan, np.nan, np.nan])
    status = np.array(["ok", "prompt_too_long", "prompt_too_long", None], dtype=object)
    assert rp.missing_text(values, status, "ifd_status") == (
        "3 rows without a score (ifd_status: prompt_too_long 2, not given to the scorer (no status) 1)")
    assert rp.missing_text(np.array([1.0]), None, None) == ""
    assert rp.status_column_for("judge_score", ["judge_score", "quality_status"]) == "quality_status"
    assert rp.status_column_for("ind_mtld", ["ind_mtld", "ind_status"]) == "ind_status"


def test_report_explains_missing_scores_and_the_embedding_rows(tmp_path):
    n = 40
    rng = np.random.default_rng(0)
    necessity = [float(x) if i % 2 else float("nan") for i, x in enumerate(rng.normal(size=n))]
    ds = Dataset.from_dict({
        "instruction": [f"task {i} " + "w " * int(rng.integers(1, 30)) for i in range(n)],
        "output": ["answer " * int(rng.integers(1, 40)) for _ in range(n)],
        "necessity": necessity,
        "necessity_status": ["ok" if i % 2 else None for i in range(n)],
        "embedding": [rng.normal(size=4).tolist() if i < 30 else None for i in range(n)],
    })
    result = select(ds, [{"step": "top", "column": "necessity", "count": 5, "descending": False}])
    make_report(ds, result, tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "report.json").read_text())
    assert "`necessity`: 20 rows without a score (necessity_status: not given to the scorer (no status) 20)." \
        in meta["notes"]
    sub = meta["summary"]["embedding_map"]["subtitle"]
    assert sub.startswith("30 of 40 rows shown; only rows with a vector; 10 rows without a vector"), sub
    assert meta["summary"]["steps"]["branches"] == []
