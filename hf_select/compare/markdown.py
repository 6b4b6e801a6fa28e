"""The comparison as markdown (``compare.md``): the settings every method shared, one table row per method (random
as the mean ± sd of its seeds) with its verdict against random, the random seeds' losses, what each method's score
tracks, and the compute time.

Example:
    >>> _lengths_text(512.4, None), _lengths_text(512.4, 130.0), _corrupted_text({"swapped": 3, "rows": 30})
    ('512', '512 / 130', '10.0% (3/0/0/0)')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .pool import corrupted_share, mean_or_none

if TYPE_CHECKING:
    from .results import CompareResult, MethodResult


def _composition_text(composition: Mapping[str, float], order: Sequence[str]) -> str:
    keys = list(order) + [k for k in composition if k not in order]
    return ", ".join(f"{k} {composition.get(k, 0):g}" for k in keys)


def _corrupted_text(corrupted: Mapping[str, int]) -> str:
    share = corrupted_share(corrupted)
    if share is None:
        return "-"
    kinds = "/".join(str(corrupted.get(k, 0)) for k in ("swapped", "truncated", "emptied", "wrong"))
    return f"{100 * share:.1f}% ({kinds})"


def _g(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value or "?")


def _lengths_text(chars: float | None, tokens: float | None) -> str:
    if chars is None:
        return "-"
    return f"{chars:.0f}" + (f" / {tokens:.0f}" if tokens is not None else "")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render_markdown(result: CompareResult, *, heading_level: int = 3) -> str:
    """The comparison table in markdown (random as mean ± sd over its seeds, with a verdict per method).

    Example:
        >>> print(render_markdown(result))  # doctest: +SKIP
    """
    trained = bool(result.base_loss) or any(m.eval_loss for m in result.methods)
    names = [e["name"] for e in result.eval_sets] if trained else []
    labelled = bool(result.pool_corrupted)
    order = list(result.pool_composition)
    lines = [f"{'#' * heading_level} Selection quality: {result.budget_rows} of {result.pool_rows} pool rows per "
             "method", "", _settings_text(result) if trained else
             "Selection only (train=False): what each method chose, without fine-tuning; no losses.", ""]

    def tail(composition: str, lengths: str, corrupted: str, seconds: str) -> list[str]:
        """The last columns: composition, lengths, corrupted share (labelled pools only), time."""
        return [composition, lengths] + ([corrupted] if labelled else []) + [seconds]

    header = ["method", "rows"]
    for n in names:
        header += [f"loss {n}", "Δ base"]
    header += [f"vs random ({n})" for n in names]
    header += tail("composition (" + ", ".join(order) + ")", "mean response chars / tokens",
                   "corrupted (swapped/truncated/emptied/wrong)", "time (s)")
    lines += [_row(header), "|" + "---|" * len(header)]
    if trained:
        base_cells = ["base model (no training)", "0"]
        for n in names:
            base_cells += [f"{result.base_loss[n]:.4f}" if n in result.base_loss else "-", "0"]
        lines.append(_row(base_cells + ["-"] * len(names) + tail("-", "-", "-", "-")))
    lines.append(_row([f"(pool: {result.pool_rows} rows)", "-"] + ["-", "-"] * len(names) + ["-"] * len(names)
                      + tail(_composition_text(result.pool_composition, order),
                             _lengths_text(result.pool_mean_response_chars, result.pool_mean_response_tokens),
                             _corrupted_text(result.pool_corrupted), "-")))
    for m in result.methods:
        if m.method == "random":
            if m is result.runs("random")[0]:
                lines.append(_random_row(result, names, tail, order))
        elif m.status != "ok":
            lines.append(_row([m.label, "-"] + ["-", "-"] * len(names) + ["-"] * len(names)
                              + tail(f"error: {m.error}".replace("|", "/"), "-", "-", f"{m.compute_seconds:.0f}")))
        else:
            lines.append(_row(_method_cells(result, m, names)
                              + tail(_composition_text(m.composition, order),
                                     _lengths_text(m.mean_response_chars, m.mean_response_tokens),
                                     _corrupted_text(m.corrupted), f"{m.compute_seconds:.0f}")))
    randoms = [r for r in result.runs("random") if r.status == "ok"]
    if randoms and trained:
        lines += ["", "Random seeds: " + "; ".join(
            f"seed {r.seed}: " + ", ".join(f"{n} {r.eval_loss[n]:.4f}" for n in names if n in r.eval_loss)
            for r in randoms) + "."]
    lines += _diagnostics_lines(result)
    total = sum(m.compute_seconds for m in result.methods)
    shared = f", {result.scores_seconds:.0f} s in the shared scoring of the pool" if result.scores_seconds else ""
    lines += ["", f"Compute: {total:.0f} s in method stages (time column: the method's stages, including scoring "
                  f"and any seed model){shared}, this run's wall time {result.seconds:.0f} s."]
    return "\n".join(lines) + "\n"


def _settings_text(result: CompareResult) -> str:
    """The paragraph under the heading: the base model, the SFT settings every method shares, the metric."""
    cfg = result.config
    return (
        f"Base model `{cfg.get('model_name_or_path', '?')}`; TRL SFT with the same settings for every method: "
        f"learning rate {_g(cfg.get('learning_rate'))} ({cfg.get('lr_scheduler_type', '?')}, warmup "
        f"{_g(cfg.get('warmup_steps'))}), {_g(cfg.get('num_train_epochs'))} epochs, batch "
        f"{_g(cfg.get('per_device_train_batch_size'))} x {_g(cfg.get('gradient_accumulation_steps'))} accumulation, "
        f"max_length {_g(cfg.get('max_length'))}, seed {_g(cfg.get('seed'))}, completion-only loss, the model's chat "
        "template. Metric: mean completion-token loss (lower is better) on "
        + ", ".join(f"`{e['name']}` ({e.get('rows', '?')} completions)" for e in result.eval_sets)
        + ". Verdict: the method's loss against the random subsets' mean, in their standard deviations "
          "(beats random = more than 2 sd lower)."
    )


def _random_row(result: CompareResult, names: Sequence[str], tail: Any, order: Sequence[str]) -> str:
    """One row for all random seeds: mean ± sd of their losses, their mean composition, lengths and corrupted
    share, their summed time."""
    runs = [r for r in result.runs("random") if r.status == "ok"]
    if not runs:
        errors = "; ".join(r.error or "" for r in result.runs("random"))
        return f"| random | - | error: {errors} |"
    stats = result.random_stats()
    cells = [f"random (mean ± sd of {len(runs)} seeds)", f"{runs[0].rows}"]
    for n in names:
        s = stats.get(n)
        if s is None:
            cells += ["-", "-"]
            continue
        sd = f" ± {s['sd']:.4f}" if s["n"] > 1 else ""
        cells += [f"{s['mean']:.4f}{sd}", f"{s['mean'] - result.base_loss.get(n, float('nan')):+.4f}"]
    cells += ["(reference)"] * len(names)
    comp = {k: round(sum(r.composition.get(k, 0) for r in runs) / len(runs), 1)
            for k in dict.fromkeys(k for r in runs for k in r.composition)}
    chars = [r.mean_response_chars for r in runs if r.mean_response_chars is not None]
    toks = [r.mean_response_tokens for r in runs if r.mean_response_tokens is not None]
    shares = [corrupted_share(r.corrupted) or 0.0 for r in runs]
    return _row(cells + tail(_composition_text(comp, order),
                             _lengths_text(mean_or_none(chars), mean_or_none(toks) if toks else None),
                             f"{100 * sum(shares) / len(shares):.1f}% (mean)",
                             f"{sum(r.compute_seconds for r in runs):.0f}"))


def _method_cells(result: CompareResult, m: MethodResult, names: Sequence[str]) -> list[str]:
    """A finished method's label, rows, loss and change against the base model per eval set, and its verdicts."""
    cells = [m.label, f"{m.rows}"]
    for n in names:
        loss = m.eval_loss.get(n)
        cells += [f"{loss:.4f}" if loss is not None else "-",
                  f"{m.delta_vs_base[n]:+.4f}" if n in m.delta_vs_base else "-"]
    return cells + [result.verdict(m, n) for n in names]


def _diagnostics_lines(result: CompareResult) -> list[str]:
    """One line per method with diagnostics: its score against response length, per source, chosen vs pool."""
    diag = [m for m in result.methods if m.diagnostics and m.status == "ok"]
    if not diag:
        return []
    lines = ["", "What the scores track (over the pool; Spearman correlation with response length, the "
                 "score's median per source, over the chosen rows and over the pool):", ""]
    for m in diag:
        d = m.diagnostics
        if "column" not in d:
            continue
        parts = [f"`{d['column']}` vs response chars ρ = {d.get('spearman_vs_response_chars', float('nan')):+.2f}"]
        if "spearman_vs_response_tokens" in d:
            parts.append(f"vs tokens ρ = {d['spearman_vs_response_tokens']:+.2f}")
        if d.get("share_ifd_ge_1") is not None:
            parts.append(f"IFD >= 1 in {100 * d['share_ifd_ge_1']:.0f}% of rows")
        parts.append("median by source " + ", ".join(f"{k} {v:.3g}" for k, v in d["median_by_source"].items()))
        if d.get("median_chosen") is not None:
            parts.append(f"chosen {d['median_chosen']:.3g} vs pool {d['median_pool']:.3g}")
        lines.append(f"- {m.label}: " + "; ".join(parts) + ".")
    return lines
