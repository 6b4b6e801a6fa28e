"""The comparison's chart (``compare.png``): each method's eval loss per eval set (the mean of its runs, with their
sd), against the random draws' 95% prediction interval for one new draw and the base model's loss.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .stats import MIN_DRAWS, half_width, mean_sd

if TYPE_CHECKING:
    from .results import CompareResult


def plot_compare(result: CompareResult, path: str | os.PathLike) -> Path:
    """Bar chart of each method's eval loss per eval set, with the random draws' prediction interval (the band a
    method must leave to beat or lose to random, :mod:`hf_select.compare.stats`) and the base model line.

    Example:
        >>> plot_compare(result, "compare.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [e["name"] for e in result.eval_sets]
    stats = result.random_stats()
    methods = [m for m in dict.fromkeys(r.method for r in result.methods) if m != "random"]
    bars = 1 + len(methods)
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
        for method in methods:
            losses = result.losses(method, n)
            if not losses:
                continue
            mean, sd = mean_sd(losses)
            labels.append(method if len(losses) == 1 else f"{method} (n={len(losses)})")
            values.append(mean)
            errors.append(sd if len(losses) > 1 else 0.0)
            colors.append("#1f77b4" if method != "full" else "#2ca02c")
        x = list(range(len(values)))
        ax.bar(x, values, color=colors, yerr=errors, capsize=3)
        if s and s["n"] >= MIN_DRAWS and s["sd"] > 0:
            half = half_width(s["sd"], s["n"])
            ax.axhspan(s["mean"] - half, s["mean"] + half, color="#9e9e9e", alpha=0.25,
                       label="95% prediction interval of one random draw")
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
    budget = (f"{result.budget_tokens} supervised tokens" if result.budget_tokens
              else f"{result.budget_rows} of {result.pool_rows} rows")
    fig.suptitle(f"{budget} per method", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
