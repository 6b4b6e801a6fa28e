"""The default preset by the evidence: the rule applied to comparisons of several pools.

Rule: the recommended preset is the one that, on every pool, loses to random on no eval set, and has the best mean
rank over all eval sets of all pools (each method ranked by its mean loss among the methods measured on every pool,
1 = lowest loss); ties (mean ranks within ``--tie`` of the best) go to the cheaper method, cost being the seconds of
the shared scoring it needs (``scores/<stage>/stage.json`` of the first comparison). A method measured on only some
pools is listed, never chosen. When no method qualifies, the default is ``random_per_source``. The rule is applied
twice: over every method, and over the methods that need no target set (``hf-select select`` with no steps must run
without one).

Usage:
    python benchmarks/choose_default.py ~/.cache/hf_select/bench/cpu ~/.cache/hf_select/bench/pool_b \\
        --names "pool A" "pool B"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FALLBACK = "random_per_source"
# what each shared score costs: the stages under scores/ that make it
NEED_STAGES = {"ifd": ["ifd"], "reverse": ["ifd"], "embedding": ["embed"], "target": ["target"],
               "lm_embedding": ["lm_embed"], "lm_target": ["lm_target"], "loss_reduction": ["loss_reduction"]}


def scoring_seconds(folder: Path, method: str) -> float | None:
    """Seconds of the shared scoring ``method`` needs, from the comparison's ``scores/`` stages (None when a stage's
    time is not there); the fitted methods also need every other method's fine-tune (not counted)."""
    from hf_select.compare.steps import method_needs

    try:
        needs = method_needs(method, None)
    except Exception:  # noqa: BLE001 - a baseline without a preset needs no scores
        needs = set()
    stages = sorted({s for need in needs for s in NEED_STAGES.get(need, [])})
    total = 0.0
    for stage in stages:
        marker = folder / "scores" / stage / "stage.json"
        if not marker.is_file():
            return None
        total += float(json.loads(marker.read_text()).get("seconds") or 0.0)
    return total


def decide(folders: list[Path], names: list[str], tie: float, *, blind: bool = False
           ) -> tuple[str, list[dict], str]:
    """The chosen preset, one row per method (verdicts, ranks, cost), and the reason in one sentence. ``blind``:
    only methods that need no target set compete (the preset ``hf-select select`` runs with no steps must work
    without one)."""
    from hf_select.compare import load_compare
    from hf_select.compare.config import TARGET_METHODS

    results = [load_compare(f) for f in folders]
    per_pool = [{m for m in r.judged_methods() if not (blind and m in TARGET_METHODS)} for r in results]
    common = sorted(set.intersection(*per_pool)) if per_pool else []
    columns = [(i, e["name"]) for i, r in enumerate(results) for e in r.eval_sets]
    ranks: dict[str, list[int]] = {m: [] for m in common}
    for i, name in columns:
        means = {m: sum(v) / len(v) for m in common if (v := results[i].losses(m, name))}
        for rank, m in enumerate(sorted(means, key=means.get), start=1):
            ranks[m].append(rank)
    rows = []
    for m in sorted(set.union(*per_pool)):
        verdicts = {f"{names[i]}: {name}": (results[i].judge(m, name).outcome if m in per_pool[i] else "not run")
                    for i, name in columns}
        loses = [k for k, v in verdicts.items() if v == "loses"]
        everywhere = m in common
        mean_rank = sum(ranks[m]) / len(ranks[m]) if everywhere and ranks[m] else None
        rows.append({"method": m, "verdicts": verdicts, "loses": loses, "on_every_pool": everywhere,
                     "mean_rank": mean_rank, "qualifies": everywhere and not loses,
                     "scoring_seconds": scoring_seconds(folders[0], m)})
    qualified = [r for r in rows if r["qualifies"] and r["mean_rank"] is not None]
    if not qualified:
        return FALLBACK, rows, (f"no method measured on every pool loses to random on no eval set: the default is "
                                f"{FALLBACK}")
    best = min(r["mean_rank"] for r in qualified)
    tied = [r for r in qualified if r["mean_rank"] <= best + tie]
    chosen = min(tied, key=lambda r: (r["scoring_seconds"] if r["scoring_seconds"] is not None else float("inf"),
                                      r["mean_rank"]))
    reason = (f"{len(qualified)} method(s) lose to random on no eval set of any pool; best mean rank {best:.2f}; "
              f"within {tie:g} of it: {', '.join(r['method'] for r in tied)}; the cheapest of those: "
              f"{chosen['method']}")
    return chosen["method"], rows, reason


def markdown(chosen: str, rows: list[dict], reason: str, names: list[str]) -> str:
    header = list(rows[0]["verdicts"]) if rows else []
    lines = ["| method | " + " | ".join(header) + " | mean rank | shared scoring (s) | qualifies |",
             "|---|" + "---|" * (len(header) + 3)]
    for r in sorted(rows, key=lambda r: (r["mean_rank"] is None, r["mean_rank"] or 0)):
        cost = "-" if r["scoring_seconds"] is None else f"{r['scoring_seconds']:.0f}"
        rank = "-" if r["mean_rank"] is None else f"{r['mean_rank']:.2f}"
        lines.append(f"| {r['method']} | " + " | ".join(r["verdicts"].values())
                     + f" | {rank} | {cost} | {'yes' if r['qualifies'] else 'no'} |")
    return "\n".join(lines + ["", f"Chosen: **{chosen}** ({reason})."])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="Comparison output folders (each with compare.json).")
    p.add_argument("--names", nargs="+", default=None, help="A name per folder (default: pool 1, pool 2, ...).")
    p.add_argument("--tie", type=float, default=0.0,
                   help="Mean ranks within this of the best are a tie (default: only equal mean ranks).")
    args = p.parse_args(argv)
    names = args.names or [f"pool {i + 1}" for i in range(len(args.folders))]
    folders = [Path(f).expanduser() for f in args.folders]
    chosen, rows, reason = decide(folders, names, args.tie)
    print("Every method:\n")
    print(markdown(chosen, rows, reason, names))
    chosen, rows, reason = decide(folders, names, args.tie, blind=True)
    print("\nMethods that need no target set (the preset `hf-select select` runs with no steps):\n")
    print(markdown(chosen, rows, reason, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
