"""The comparison's chart (``compare.png``): each method's eval loss per eval set, against the random subsets'
mean ± sd band and the base model's loss.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results import CompareResult


def plot_compare(result: CompareResult, path: str | os.PathLike) -> Path:
    """Bar chart of each method's eval loss per eval set, with the random mean ± sd band and the base model line.

    Example:
        >>> plot_compare(result, "compare.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [e["name"] for e in result.eval_sets]
    stats = result.random_stats()
    bars = 1 + sum(1 for m in result.methods if m.method != "random")
    # wide enough that each bar keeps about 0.4 inch for its rotated label
    width = max(4.2, 0.4 * bars + 1.2)
    fig, axes = plt.subplots(1, len(names), figsize=(width * len(names) + 0.5, 4.0), squeeze=False)
    for ax, n in zip(axes[0], names, strict=True):
        labels, values, errors, colors = [], [], [], []
        s = stats.get(n)
        if s:
            labels.append(f"random (n={s['n']})")
            values.append(s["mean"])
            errors.append(s["sd"] if s["n"] > 1 else 0.0)
            colors.append("#9e9e9e")
        for m in result.methods:
            if m.method == "random" or m.status != "ok" or n not in m.eval_loss:
                continue
            labels.append(m.label)
            values.append(m.eval_loss[n])
            errors.append(0.0)
            colors.append("#1f77b4" if m.method != "full" else "#2ca02c")
        x = list(range(len(values)))
        ax.bar(x, values, color=colors)
        if s and s["n"] > 1:
            ax.errorbar([0], [s["mean"]], yerr=[s["sd"]], color="black", capsize=4, lw=1.2)
            ax.axhspan(s["mean"] - s["sd"], s["mean"] + s["sd"], color="#9e9e9e", alpha=0.25,
                       label="random mean ± sd")
            ax.axhline(s["mean"] - 2 * s["sd"], color="#616161", ls=":", lw=1, label="random mean - 2 sd")
        if n in result.base_loss:
            ax.axhline(result.base_loss[n], color="#d62728", ls="--", lw=1, label="base model")
        shown = values + ([result.base_loss[n]] if n in result.base_loss else [])
        if shown:
            lo, hi = min(shown), max(shown)
            pad = max(1e-3, 0.15 * (hi - lo))
            ax.set_ylim(lo - pad - (max(errors) if errors else 0), hi + pad + (max(errors) if errors else 0))
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_title(n, fontsize=9)
        ax.set_ylabel("eval loss (lower is better)", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    # one legend for every panel, above them, so that it never hides a bar
    handles, legend_labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, legend_labels, loc="upper center", ncol=len(handles), fontsize=7, frameon=False,
                   bbox_to_anchor=(0.5, 0.95))
    fig.suptitle(f"{result.budget_rows} of {result.pool_rows} rows per method", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
