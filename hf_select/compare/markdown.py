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

from .config import TARGET_METHODS
from .fitted import rule_text
from .pool import corrupted_share, mean_or_none
from .stats import mean_sd

if TYPE_CHECKING:
    from .results import CompareResult


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


def _mean_sd_text(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean, sd = mean_sd(values)
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {sd:.4f}"


def _avg(values: Sequence[float | int | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    mean = sum(vals) / len(vals)
    return f"{mean:.0f}" if len(vals) == 1 or float(mean).is_integer() else f"{mean:.1f}"


def render_markdown(result: CompareResult, *, heading_level: int = 3) -> str:
    """The comparison table in markdown: one row per method (random and repeated methods as the mean ± sd of their
    runs), what each trained on (rows, rows trained, supervised tokens, rows truncated), its loss per eval set with
    the change against the base model and the verdict against random.

    Example:
        >>> print(render_markdown(result))  # doctest: +SKIP
    """
    trained = bool(result.base_loss) or any(m.eval_loss for m in result.methods)
    names = [e["name"] for e in result.eval_sets] if trained else []
    labelled = bool(result.pool_corrupted)
    order = list(result.pool_composition)
    budget = (f"{result.budget_tokens} supervised tokens" if result.budget_tokens
              else f"{result.budget_rows} of {result.pool_rows} rows")
    lines = [f"{'#' * heading_level} Selection quality: {budget} per method ({result.pool_rows} pool rows)", "",
             _settings_text(result) if trained else
             "Selection only (train=False): what each method chose, without fine-tuning; no losses.", ""]
    if trained:
        lines += _eval_lines(result) + [""]

    def tail(composition: str, lengths: str, corrupted: str, seconds: str) -> list[str]:
        """The last columns: composition, lengths, corrupted share (labelled pools only), time."""
        return [composition, lengths] + ([corrupted] if labelled else []) + [seconds]

    header = ["method", "runs", "rows", "rows trained", "supervised tokens", "rows truncated"]
    for n in names:
        header += [f"loss {n}", "Δ base", f"vs random ({n})"]
    header += tail("composition (" + ", ".join(order) + ")", "mean response chars / tokens",
                   "corrupted (swapped/truncated/emptied/wrong)", "time (s)")
    lines += [_row(header), "|" + "---|" * len(header)]
    blank = ["-", "-", "-"] * len(names)
    if trained:
        base_cells = ["base model (no training)", "-", "0", "0", "0", "0"]
        for n in names:
            base_cells += [f"{result.base_loss[n]:.4f}" if n in result.base_loss else "-", "0", "-"]
        lines.append(_row(base_cells + tail("-", "-", "-", "-")))
    pool_tokens = result.pool_tokens or {}
    lines.append(_row([f"(pool: {result.pool_rows} rows)", "-", str(result.pool_rows),
                       str(pool_tokens.get("rows_trained", "-")), str(pool_tokens.get("supervised_tokens", "-")),
                       str(pool_tokens.get("rows_truncated", "-"))] + blank
                      + tail(_composition_text(result.pool_composition, order),
                             _lengths_text(result.pool_mean_response_chars, result.pool_mean_response_tokens),
                             _corrupted_text(result.pool_corrupted), "-")))
    for method in dict.fromkeys(m.method for m in result.methods):
        lines.append(_method_row(result, method, names, order, tail))
    for method in dict.fromkeys(m.method for m in result.methods):
        runs = [r for r in result.runs(method) if r.status == "ok"]
        if len(runs) > 1 and trained:
            lines += ["", f"{method} runs: " + "; ".join(
                f"seed {r.train_seed}: " + ", ".join(f"{n} {r.eval_loss[n]:.4f}" for n in names if n in r.eval_loss)
                for r in runs) + "."]
    lines += _dev_lines(result, names) + _diagnostics_lines(result)
    total = sum(m.compute_seconds for m in result.methods)
    shared = f", {result.scores_seconds:.0f} s in the shared scoring of the pool" if result.scores_seconds else ""
    lines += ["", f"Compute: {total:.0f} s in method stages (time column: the method's stages, including scoring "
                  f"and any seed model){shared}, this run's wall time {result.seconds:.0f} s."]
    return "\n".join(lines) + "\n"


def _settings_text(result: CompareResult) -> str:
    """The paragraph under the heading: the base model, the SFT settings every method shares, the budget, the
    metric and the verdict rule."""
    cfg = result.config
    verdicts, expected = result.verdict_count()
    budget = (f"every method keeps rows in its own order until their supervised completion tokens (chat template "
              f"applied, cut at max_length {_g(cfg.get('max_length'))}, as the trainer sees them) reach "
              f"{result.budget_tokens}" if result.budget_tokens else
              f"every method keeps {result.budget_rows} rows (an equal row budget: methods may train on unequal "
              "tokens, see the columns)")
    return (
        f"Base model `{cfg.get('model_name_or_path', '?')}`; TRL SFT with the same settings for every method: "
        f"learning rate {_g(cfg.get('learning_rate'))} ({cfg.get('lr_scheduler_type', '?')}, warmup "
        f"{_g(cfg.get('warmup_steps'))}), {_g(cfg.get('num_train_epochs'))} epochs, batch "
        f"{_g(cfg.get('per_device_train_batch_size'))} x {_g(cfg.get('gradient_accumulation_steps'))} accumulation, "
        f"max_length {_g(cfg.get('max_length'))}, completion-only loss, the model's chat template. Budget: {budget}. "
        f"Random: {_g(cfg.get('random_seeds'))} draws, each with its own rows and its own training seed. Metric: "
        "held-out loss = sum of completion-token losses / completion tokens scored (lower is better), at up to "
        f"{_g(cfg.get('eval_max_length'))} tokens per eval row. Verdict: the method's mean loss against a 95% "
        "prediction interval for one new random draw, mean ± t(0.975, n-1) · sd · sqrt(1/k + 1/n) (n draws, k runs "
        "of the method); the cell gives the margin (random mean - method loss; positive = lower loss) and the "
        f"interval's half-width. This table makes {verdicts} verdicts; about {expected:g} of them are expected to be "
        "'beats' or 'loses' by chance alone."
        + (" Methods marked [target-aware] read the target set "
           f"`{cfg.get('target')}`, checked to ask none of the eval sets' questions; the others are blind to it."
           if any(m.method in TARGET_METHODS for m in result.methods) else "")
    )


def _eval_lines(result: CompareResult) -> list[str]:
    """One line per eval set: rows, rows and tokens scored, rows truncated or not scored (by reason), and pool rows
    left out because they ask the eval set's questions."""
    lines = ["Eval sets (as the base model's eval read them):", ""]
    for e in result.eval_sets:
        unscored = e.get("unscored") or {}
        missing = {k: (len(v) if isinstance(v, list) else v) for k, v in unscored.items()}
        missing_text = ", ".join(f"{k} {v}" for k, v in missing.items() if v) or "none"
        overlap = (result.eval_overlap or {}).get(e["name"])
        lines.append(
            f"- `{e['name']}`: {e.get('rows', '?')} rows, {e.get('rows_scored', '?')} scored on "
            f"{e.get('tokens_scored', '?')} of {e.get('tokens_total', '?')} completion tokens, "
            f"{e.get('rows_truncated', '?')} truncated at {e.get('max_length', '?')} tokens, not scored: "
            f"{missing_text}; pool rows asking its questions, left out of the pool: "
            f"{overlap if overlap is not None else '?'}."
        )
    return lines


def _method_row(result: CompareResult, method: str, names: Sequence[str], order: Sequence[str], tail: Any) -> str:
    """One row for all runs of a method: mean (± sd) of their losses, mean rows and tokens, mean composition,
    lengths and corrupted share, summed time; its verdicts."""
    runs = [r for r in result.runs(method) if r.status == "ok"]
    all_runs = result.runs(method)
    label = method if len(all_runs) == 1 else f"{method} ({len(all_runs)} runs)"
    if method in TARGET_METHODS:
        label += " [target-aware]"
    if not runs:
        errors = "; ".join(r.error or "" for r in all_runs).replace("|", "/")
        return _row([label, str(len(all_runs)), "-", "-", "-", "-"] + ["-", "-", "-"] * len(names)
                    + tail(f"error: {errors}", "-", "-", f"{sum(r.compute_seconds for r in all_runs):.0f}"))
    cells = [label, f"{len(runs)}" + (f" ({len(all_runs) - len(runs)} failed)" if len(runs) < len(all_runs) else ""),
             _avg([r.rows for r in runs]), _avg([r.rows_trained for r in runs]),
             _avg([r.supervised_tokens for r in runs]), _avg([r.rows_truncated for r in runs])]
    for n in names:
        losses = [r.eval_loss[n] for r in runs if n in r.eval_loss]
        deltas = [r.delta_vs_base[n] for r in runs if n in r.delta_vs_base]
        cells += [_mean_sd_text(losses), f"{sum(deltas) / len(deltas):+.4f}" if deltas else "-",
                  "(reference)" if method == "random" else (result.verdict(method, n) if losses else "-")]
    comp = {k: round(sum(r.composition.get(k, 0) for r in runs) / len(runs), 1)
            for k in dict.fromkeys(k for r in runs for k in r.composition)}
    chars = [r.mean_response_chars for r in runs if r.mean_response_chars is not None]
    toks = [r.mean_response_tokens for r in runs if r.mean_response_tokens is not None]
    shares = [corrupted_share(r.corrupted) for r in runs]
    corrupted = (_corrupted_text(runs[0].corrupted) if len(runs) == 1 else
                 f"{100 * sum(x or 0.0 for x in shares) / len(shares):.1f}% (mean)")
    return _row(cells + tail(_composition_text(comp, order),
                             _lengths_text(mean_or_none(chars), mean_or_none(toks) if toks else None),
                             corrupted, f"{sum(r.compute_seconds for r in all_runs):.0f}"))


def _dev_lines(result: CompareResult, names: Sequence[str]) -> list[str]:
    """The dev set's losses (it tunes methods, so it is never a verdict) and each fitted rule."""
    dev = result.dev or {}
    runs = [m for m in result.methods if m.status == "ok" and m.dev_loss is not None]
    lines: list[str] = []
    if dev and runs:
        by_method: dict[str, list[float]] = {}
        for m in runs:
            by_method.setdefault(m.method, []).append(float(m.dev_loss))
        base = dev.get("base_loss")
        lines += ["", f"Dev set `{dev.get('path')}` ({dev.get('rows', '?')} rows, {dev.get('tokens_scored', '?')} "
                      "completion tokens; fitted methods are tuned on it, so it gives no verdict): base "
                      + (f"{base:.4f}" if base is not None else "-") + "; "
                      + "; ".join(f"{method} {_mean_sd_text(values)}" for method, values in by_method.items()) + "."]
    for m in result.methods:
        if m.status == "ok" and (m.diagnostics or {}).get("rule"):
            lines += ["", f"{m.label}'s fitted rule: {rule_text(m.diagnostics['rule'])}."]
    return lines


def _diagnostics_lines(result: CompareResult) -> list[str]:
    """One line per method with diagnostics: its score against response length, per source, chosen vs pool."""
    diag = [m for m in result.methods if m.diagnostics and m.status == "ok" and "column" in m.diagnostics]
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
