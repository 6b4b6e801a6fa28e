"""How many corrupted demo rows each selection keeps: the feasibility gate, its threshold curve, and the fused ranks.

The demo dataset (``hf_select.demo.make_demo_dataset``) labels every row it corrupted on purpose (``corruption``:
``swapped`` = another task's answer, ``truncated``, ``emptied``, ``wrong`` = fluent but incorrect). This script
scores ``--rows`` demo rows with SmolLM2-135M-Instruct (forward and reverse IFD, the IFD scorer as it is), embeds
them with the default sentence embedder, and prints, for the Superfiltering-style 10% (drop IFD >= 1, keep the
highest IFD) and for the new steps, the corrupted share of the chosen rows with its breakdown, plus the curve of
``consistency_gate`` thresholds (absolute and pool-quantile).

``--direct-variants`` also measures two direct-pass layouts of our own (analysis only, not what the scorer does):
``nobos``: the response (instruction) alone with no BOS token, its first token as context only (Superfiltering's
layout); ``scaffold``: the response after the same chat scaffold with an empty user turn, and the instruction after
the reverse prompt with an empty response, so that the ratio measures the other side's *content*, not the
template's help. Each adds ``ifd_<variant>`` and ``ifd_reverse_<variant>`` columns and the same table.

On 2 CPU cores scoring 500 rows takes about 5 minutes (plus about 6 for the variants); ``--scored DIR`` reuses a
saved scored dataset (``--save DIR`` writes one).

Example:
    $ python benchmarks/demo_gate.py --rows 500 --save /tmp/demo500 --direct-variants
    $ python benchmarks/demo_gate.py --scored /tmp/demo500
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

KINDS = ("swapped", "truncated", "emptied", "wrong")


def score_demo(rows: int, seed: int, max_length: int, variants: bool) -> Any:
    """The demo rows with forward + reverse IFD, embeddings and (optionally) the direct-pass variants."""
    import torch

    from hf_select.demo import make_demo_dataset
    from hf_select.scoring.embed import EmbedConfig, Embedder
    from hf_select.scoring.ifd import IFDConfig, IFDScorer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    ds = make_demo_dataset(n=rows, seed=seed)
    scorer = IFDScorer(IFDConfig(template="auto", max_length=max_length, reverse=True))
    scored = scorer.score(ds)
    emb = Embedder(EmbedConfig(text="row")).score(ds.select_columns(["instruction", "input", "output"]))
    scored = scored.add_column("embedding", emb["embedding"])
    if variants:
        scored = add_direct_variants(scored, scorer)
    return scored


def add_direct_variants(scored: Any, scorer: Any) -> Any:
    """Add ``ifd_nobos``/``ifd_reverse_nobos`` and ``ifd_scaffold``/``ifd_reverse_scaffold`` (see the docstring).

    Uses the scorer's own item builder, so the target tokens are exactly those the scorer scored.
    """
    import torch

    from hf_select.scoring.common import model_limit
    from hf_select.scoring.ifd import REVERSE_PROMPT
    from hf_select.scoring.lm_loss import mean_target_losses

    model, tok = scorer.load()
    n = len(scored)
    batch = scored.select_columns(["instruction", "input", "output"])[:]
    items, *_ = scorer._build_items(batch, n, tok, model_limit(model, tok, scorer.config.max_length))
    fctx = tok.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=True, tokenize=True)
    fctx = list(fctx["input_ids"] if hasattr(fctx, "keys") else fctx)
    rctx = list(tok(REVERSE_PROMPT.format(response=""))["input_ids"])
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    loss = {(v, k): np.full(n, np.nan) for v in ("nobos", "scaffold") for k in ("forward", "reverse")}
    for lo in range(0, len(items), 16):
        chunk = items[lo : lo + 16]
        with torch.no_grad():
            scaffold = mean_target_losses(
                model, [((fctx if it.kind == "forward" else rctx), it.target) for it in chunk], pad).numpy()
            long_enough = [it for it in chunk if len(it.target) >= 2]
            nobos = mean_target_losses(model, [([it.target[0]], it.target[1:]) for it in long_enough], pad).numpy() \
                if long_enough else []
        for it, v in zip(chunk, scaffold, strict=True):
            loss[("scaffold", it.kind)][it.row] = v
        for it, v in zip(long_enough, nobos, strict=True):
            loss[("nobos", it.kind)][it.row] = v
    cond = np.asarray(scored["loss_conditioned"], float)
    rcond = np.asarray(scored["loss_reverse_conditioned"], float)
    for v in ("nobos", "scaffold"):
        scored = scored.add_column(f"ifd_{v}", (cond / loss[(v, "forward")]).tolist())
        scored = scored.add_column(f"ifd_reverse_{v}", (rcond / loss[(v, "reverse")]).tolist())
    return scored


def mix(result: Any) -> tuple[int, float, dict[str, int]]:
    c = np.asarray(result.dataset["corruption"]) if len(result) else np.zeros(0, dtype=object)
    share = float(np.mean(c != "none")) if len(c) else float("nan")
    return len(result), share, {k: int((c == k).sum()) for k in KINDS}


def row(name: str, result: Any) -> str:
    n, share, kinds = mix(result)
    return f"| {name} | {n} | {share:.0%} | " + " | ".join(str(kinds[k]) for k in KINDS) + " |"


def report(scored: Any, fraction: float = 0.1) -> str:
    from hf_select.selection import select

    count = int(fraction * len(scored))
    lines = ["| selection | rows | corrupted | swapped | truncated | emptied | wrong |",
             "|---|---|---|---|---|---|---|"]
    c = np.asarray(scored["corruption"])
    lines.append(f"| the whole pool | {len(scored)} | {np.mean(c != 'none'):.0%} | "
                 + " | ".join(str(int((c == k).sum())) for k in KINDS) + " |")
    rand = [mix(select(scored, [{"step": "random", "count": count}], seed=s))[1] for s in range(20)]
    lines.append(f"| random (20 seeds, mean) | {count} | {np.mean(rand):.0%} | | | | |")
    lines.append(row("longest", select(scored, [{"step": "longest", "count": count}])))
    variants = [v for v in ("", "_nobos", "_scaffold") if f"ifd{v}" in scored.column_names]
    for v in variants:
        f, r = f"ifd{v}", f"ifd_reverse{v}"
        tag = f" [{v[1:]} direct pass]" if v else ""
        lt1 = {"step": "threshold", "column": f, "max": 1.0, "strict": True}
        fused = {"step": "fused_diverse", "scores": {f: 1.0, r: -1.0, "loss_conditioned": -1.0}, "count": count}
        cases = {
            f"ifd_rule (Superfiltering 10%){tag}": [{"step": "ifd_rule", "column": f, "count": count}],
            f"consistency_gate r-IFD < 1 -> ifd_rule{tag}": [
                {"step": "consistency_gate", "column": r}, {"step": "ifd_rule", "column": f, "count": count}],
            f"consistency_gate r-IFD <= pool median -> ifd_rule{tag}": [
                {"step": "consistency_gate", "column": r, "max_reverse": None, "max_reverse_quantile": 0.5},
                {"step": "ifd_rule", "column": f, "count": count}],
            f"length_stratified_top (IFD < 1){tag}": [lt1, {"step": "length_stratified_top", "column": f,
                                                            "count": count}],
            f"fused_diverse IFD, -r-IFD, -loss_conditioned, no diversity (IFD < 1){tag}": [
                lt1, {**fused, "min_distance": 0}],
            f"fused_diverse IFD, -r-IFD, -loss_conditioned, min_distance 0.1 (IFD < 1){tag}": [
                lt1, {**fused, "min_distance": 0.1}],
            f"consistency_gate r-IFD < 1 -> fused_diverse (as above, 0.1){tag}": [
                {"step": "consistency_gate", "column": r}, lt1, {**fused, "min_distance": 0.1}],
        }
        for name, steps in cases.items():
            lines.append(row(name, select(scored, steps)))
    lines += ["", "consistency_gate curve (then ifd_rule, same budget):", "",
              "| reverse column | bound | rows passing the gate | corrupted | swapped | truncated | emptied | wrong |",
              "|---|---|---|---|---|---|---|---|"]
    for v in variants:
        f, r = f"ifd{v}", f"ifd_reverse{v}"
        rev = np.asarray(scored[r], float)
        bounds = [("max_reverse", t) for t in (0.6, 0.7, 0.8, 0.9, 1.0, 1.1)]
        bounds += [("max_reverse_quantile", q) for q in (0.5, 0.6, 0.7, 0.8, 0.9)]
        for key, value in bounds:
            gate = {"step": "consistency_gate", "column": r, "max_reverse": None, key: value}
            res = select(scored, [gate, {"step": "ifd_rule", "column": f, "count": count}])
            n, share, kinds = mix(res)
            label = f"r-IFD < {value}" if key == "max_reverse" else \
                f"r-IFD <= q{value:.1f} ({np.nanquantile(rev, value):.3f})"
            lines.append(f"| {r} | {label} | {res.provenance[0]['rows_out']} | {share:.0%} | "
                         + " | ".join(str(kinds[k]) for k in KINDS) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--scored", default=None, help="Reuse a scored dataset saved by --save.")
    p.add_argument("--save", default=None, help="Save the scored dataset here.")
    p.add_argument("--direct-variants", action="store_true", help="Also measure the nobos / scaffold direct passes.")
    args = p.parse_args()
    t0 = time.time()
    if args.scored:
        import datasets

        scored = datasets.load_from_disk(args.scored)
    else:
        scored = score_demo(args.rows, args.seed, args.max_length, args.direct_variants)
        if args.save:
            scored.save_to_disk(args.save)
    print(report(scored))
    print(f"\n{len(scored)} demo rows (seed {args.seed}); {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
