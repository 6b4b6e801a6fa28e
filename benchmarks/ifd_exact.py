"""Seed-exact IFD on a real model: hf-select's seed layouts against per-row references of the seed scripts, and what
each choice of the direct pass does to IFD's correlation with response length and to the demo's corrupted share.

1. Agreement: ``IFDConfig(layout="superfiltering")`` and ``layout="cherry"`` against the per-row reference
   computations of ``tests/test_ifd_exact.py`` (written from each script's stated layout), and the project's
   default layout against the same references: Spearman, median relative difference, top-10% overlap (each side's
   rows chosen by the seed's own rule).
2. Effect of each choice: Spearman(IFD, response tokens) on the alpaca rows and on the demo rows, and the corrupted
   share of the demo rows that Superfiltering's rule (``ifd_ppl``, 10% of all rows) and Cherry's rule (``ifd``, 10%
   of the rows left after the drop) keep, for ``direct_prefix`` bos / none / response_header under the default
   layout (chat template), the default layout with the plain and Alpaca templates, and both seed layouts.
   ``max_length`` is Cherry's 512 for its layout and Superfiltering's 1024 otherwise.

Usage (CPU, fp32, one thread; a few minutes):
    PYTHONPATH=. python benchmarks/ifd_exact.py --rows 200 --demo-rows 300
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "train" / "alpaca_9k.json"
AGREEMENT = "## Seed-exact IFD: hf-select against the seed scripts' layouts"
AGREEMENT_HEADER = (
    "| date | machine | model | rows | hf-select | reference | scored (hf / ref) | Spearman | median rel. diff | "
    "max rel. diff | top-10% overlap | command |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)
EFFECT = "## IFD direct pass: effect on length correlation and on the demo's corrupted share"
EFFECT_HEADER = (
    "| date | model | layout | template | direct pass | alpaca rows: Spearman(ifd, tokens) | "
    "Spearman(ifd_ppl, tokens) | demo rows: Spearman(ifd, tokens) | demo rows with a score | corrupted share, "
    "Superfiltering top 10% (ifd_ppl, of all) | corrupted share, Cherry top 10% (ifd, of eligible) | command |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok]).statistic) if ok.sum() > 2 else math.nan


def machine() -> str:
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} thread(s)), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--rows", type=int, default=200)
    p.add_argument("--demo-rows", type=int, default=300)
    p.add_argument("--demo-seed", type=int, default=0, help="Seed of make_demo_dataset.")
    p.add_argument("--demo-only", action="store_true", help="Only part 2, on the demo rows (no alpaca rows).")
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sf-max-length", type=int, default=1024, help="Superfiltering's default max_length.")
    p.add_argument("--cherry-max-length", type=int, default=512, help="Cherry LLM's default max_length.")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    from _results import append_row
    from datasets import Dataset

    from hf_select import IFDConfig, IFDScorer
    from hf_select.demo import make_demo_dataset
    from hf_select.models import load_causal_lm
    from hf_select.selection import ifd_rule
    from tests.test_ifd_exact import (
        cherry_reference,
        cherry_selection,
        superfiltering_reference,
        superfiltering_selection,
    )

    model, tok = load_causal_lm(args.model, dtype="float32", device="cpu")
    rows = json.loads(Path(args.data).read_text())[: args.rows]
    alpaca = Dataset.from_list(rows)
    demo = make_demo_dataset(args.demo_rows, seed=args.demo_seed)
    today = datetime.date.today().isoformat()
    name = args.model.split("/")[-1] + " fp32"
    cmd = (f"`PYTHONPATH=. python benchmarks/ifd_exact.py --rows {args.rows} --demo-rows {args.demo_rows}"
           + (f" --demo-seed {args.demo_seed}" if args.demo_seed else "") + (" --demo-only" if args.demo_only else "")
           + "`")
    timings: dict[str, float] = {}

    memo: dict[tuple, dict] = {}

    def score(ds, tag, **kw):
        key = (tag, tuple(sorted(kw.items())))
        if key not in memo:
            t = time.time()
            memo[key] = IFDScorer(IFDConfig(dtype="float32", device="cpu", **kw)).set_model(model, tok)(ds[:])
            timings[f"{tag} {kw}"] = time.time() - t
        return memo[key]

    # 1. agreement with the per-row references
    refs = {}
    for seed, fn, max_length in () if args.demo_only else (
            ("superfiltering", superfiltering_reference, args.sf_max_length),
            ("cherry", cherry_reference, args.cherry_max_length)):
        t = time.time()
        refs[seed] = [fn(model, tok, row, max_length) for row in rows]
        timings[f"reference {seed}"] = time.time() - t
    sf_len, ch_len = args.sf_max_length, args.cherry_max_length
    variants = [("superfiltering", dict(layout="superfiltering", max_length=sf_len), "superfiltering"),
                ("default layout, plain template, BOS (before this change)",
                 dict(layout="hf_select", direct_prefix="bos", template="plain", max_length=sf_len), "superfiltering"),
                ("cherry", dict(layout="cherry", max_length=ch_len), "cherry"),
                ("default layout, alpaca template, BOS (before this change)",
                 dict(layout="hf_select", direct_prefix="bos", template="alpaca", max_length=ch_len), "cherry")]
    lines = []
    for label, kw, seed in [] if args.demo_only else variants:
        out = score(alpaca, "alpaca", **kw)
        ref = refs[seed]
        if seed == "superfiltering":
            col = "ifd_ppl"
            ref_v = [math.nan if r is None else math.exp(r[0] - r[1]) for r in ref]
            ref_sel = superfiltering_selection(ref_v, 0.1)
            ours_sel = ifd_rule(Dataset.from_dict(out), fraction=0.1, column=col, of="all").keep.tolist()
        else:
            col = "ifd"
            ref_v = [math.nan if r is None else r[0] / r[1] for r in ref]
            ref_sel = cherry_selection(ref_v, 0.1)
            ours_sel = ifd_rule(Dataset.from_dict(out), fraction=0.1, column=col, of="eligible").keep.tolist()
        ours, theirs = np.asarray(out[col], float), np.asarray(ref_v, float)
        both = np.isfinite(ours) & np.isfinite(theirs)
        rel = np.abs(ours[both] - theirs[both]) / np.abs(theirs[both])
        overlap = len(set(ours_sel) & set(ref_sel))
        line = (f"| {today} | {machine()} | {name} | {len(rows)} | {label} (`{col}`) | {seed} script layout | "
                f"{int(np.isfinite(ours).sum())} / {int(np.isfinite(theirs).sum())} | "
                f"{spearman(ours[both], theirs[both]):.4f} | {np.median(rel):.2e} | {rel.max():.2e} | "
                f"{overlap} of {len(ref_sel)} (hf-select kept {len(ours_sel)}) | {cmd} |")
        print(line)
        lines.append((AGREEMENT, AGREEMENT_HEADER, line))

    # 2. the effect of each choice
    choices = [("hf_select", "auto (chat)", "bos"), ("hf_select", "auto (chat)", "none"),
               ("hf_select", "auto (chat)", "response_header"), ("hf_select", "plain", "bos"),
               ("hf_select", "alpaca", "bos"), ("superfiltering", "plain (seed)", "none (seed)"),
               ("cherry", "alpaca (seed)", "response_header (seed)")]
    for layout, template, prefix in choices:
        kw: dict = {"layout": layout}
        if layout == "hf_select":
            kw.update(direct_prefix=prefix, template=template.split(" ")[0])
        kw["max_length"] = args.cherry_max_length if layout == "cherry" else args.sf_max_length
        a = None if args.demo_only else score(alpaca, "alpaca", **kw)
        d = score(demo, "demo", **kw)
        dd = demo.add_column("ifd", d["ifd"]).add_column("ifd_ppl", d["ifd_ppl"]).add_column(
            "ifd_status", d["ifd_status"])
        bad = np.asarray(demo["corruption"]) != "none"
        shares = []
        for col, of in (("ifd_ppl", "all"), ("ifd", "eligible")):
            keep = ifd_rule(dd, fraction=0.1, column=col, of=of).keep
            shares.append(f"{bad[keep].mean():.1%} of {len(keep)}" if len(keep) else "no rows")
        alpaca_cells = "- | -" if a is None else (f"{spearman(a['ifd'], a['response_tokens']):+.3f} | "
                                                  f"{spearman(a['ifd_ppl'], a['response_tokens']):+.3f}")
        line = (f"| {today} | {name} | {layout} | {template} | {prefix} | {alpaca_cells} | "
                f"{spearman(d['ifd'], d['response_tokens']):+.3f} | "
                f"{int(np.isfinite(np.asarray(d['ifd'], float)).sum())} of {len(demo)} | {shares[0]} | {shares[1]} | "
                f"{cmd} |")
        print(line)
        lines.append((EFFECT, EFFECT_HEADER, line))
    print(f"demo rows corrupted: {bad.mean():.1%}; timings (s): " +
          ", ".join(f"{k}: {v:.0f}" for k, v in timings.items()))
    if not args.no_write:
        for heading, header, line in lines:
            append_row(Path(args.results), heading, header, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
