"""IFD on a CPU: every ``score_ifd`` option against the per-row fp32 loop of the seed scripts, on the same rows.

The loop does what the Cherry LLM / Superfiltering scripts do: one row per forward pass, full logits, the loss
from ``model(input_ids, labels=...)``, two passes per row, in fp32. Every variant scores the same token ids (the
scorer's own items: the default layout, chat template, direct pass ``auto``), so fp32 variants must agree with the
loop to rounding and 16-bit ones are judged by Spearman's rho and the largest absolute IFD difference against it.

Variants (``--variants``): ``fp32`` (``dtype="float32"``), ``default`` (``dtype="auto"``: bfloat16 where the CPU
computes it natively), ``bf16``, ``fp16``, ``fp32_packed`` / ``bf16_packed`` (``packing=True``), ``bf16_compile``
(the backbone through ``torch.compile``; its first pass, which compiles, is timed apart and the second pass is the
one reported). Each variant is warmed up on 8 rows first. The padded share of computed positions is counted (not
timed) for the old pair batching and the current sequence batching.

Prints a markdown block (the exact command, machine, load average before and after, one row per variant) and,
unless ``--no-write``, appends it to ``benchmarks/RESULTS.md`` under "IFD on CPU".

Usage:
    python benchmarks/ifd_cpu.py --rows 150 --threads 2                 # idle machine; the reported figure
    python benchmarks/ifd_cpu.py --rows 10 --no-write                   # check that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "train" / "alpaca_9k.json"
VARIANTS = {
    "fp32": {"dtype": "float32"},
    "default": {"dtype": "auto"},
    "bf16": {"dtype": "bfloat16"},
    "fp16": {"dtype": "float16"},
    "fp32_packed": {"dtype": "float32", "packing": True},
    "bf16_packed": {"dtype": "bfloat16", "packing": True},
    "bf16_compile": {"dtype": "bfloat16"},
}
SECTION = "## IFD on CPU"


def per_row_loop(model, items) -> np.ndarray:
    """The seed scripts' loop: per item, ``model(ids, labels=...).loss`` of each pass, batch of one, full logits."""
    import torch

    out = []
    with torch.inference_mode():
        for it in items:
            losses = []
            for ctx, tgt in ((it.context, it.target), (it.direct, it.direct_tokens)):
                ids = torch.tensor([list(ctx) + list(tgt)])
                labels = ids.clone()
                labels[0, : len(ctx)] = -100
                losses.append(model(input_ids=ids, labels=labels).loss.float().item())
            out.append(losses[0] / losses[1])
    return np.array(out)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok]).statistic)


def padded_shares(scorer, rows, tokenizer, limit) -> tuple[float, float]:
    """Padded share of computed positions: pairs (both passes of an item in one batch, as before) and sequences."""
    from hf_select.scoring.batching import padded_share, token_budget_batches

    batch = {k: [r.get(k, "") for r in rows] for k in rows[0]}
    items, *_ = scorer._build_items(batch, len(rows), tokenizer, limit)
    cond = [len(it.context) + len(it.target) for it in items]
    direct = [len(it.direct) + len(it.direct_tokens) for it in items]
    budget = scorer.config.token_budget(None)
    pairs = token_budget_batches([c + d for c, d in zip(cond, direct, strict=True)], 2 * budget,
                                 scorer.config.max_batch_size)
    seqs = cond + direct
    old = padded_share(seqs, [[[i] for i in g] for g in pairs] + [[[i + len(items)] for i in g] for g in pairs])
    new_groups = token_budget_batches(seqs, budget, scorer.config.max_batch_size)
    return old, padded_share(seqs, [[[i] for i in g] for g in new_groups])


def machine_text(threads: int) -> str:
    import torch

    from hf_select.models import cpu_has_native_bf16

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"CPU {name} ({bf16}), {threads} threads, torch {torch.__version__.split('+')[0]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--rows", type=int, default=150)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--variants", nargs="+", default=["fp32", "default", "bf16_packed", "fp16"],
                   choices=sorted(VARIANTS))
    p.add_argument("--results", default=str(HERE / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    torch.set_num_threads(args.threads)
    from datasets import Dataset

    from hf_select import IFDConfig, IFDScorer
    from hf_select.scoring.common import model_limit

    rows = json.loads(Path(args.data).read_text())[: args.rows]
    ds = Dataset.from_list(rows)
    load_before = os.getloadavg()
    base = dict(model_name_or_path=args.model, max_length=args.max_length, device="cpu")
    ref_scorer = IFDScorer(IFDConfig(**base, dtype="float32"))
    model, tok = ref_scorer.load()
    limit = model_limit(model, tok, args.max_length)
    batch = {k: [r.get(k, "") for r in rows] for k in rows[0]}
    items, status, *_ = ref_scorer._build_items(batch, len(rows), tok, limit)
    forward = [it for it in items if it.kind == "forward"]
    item_rows = [it.row for it in forward]
    per_row_loop(model, forward[:2])  # warm-up
    t = time.perf_counter()
    loop = per_row_loop(model, forward)
    t_loop = time.perf_counter() - t
    old_pad, new_pad = padded_shares(ref_scorer, rows, tok, limit)

    results = [("per-row fp32 loop (seed scripts)", "float32", t_loop, loop, None)]
    for name in args.variants:
        scorer = ref_scorer if name == "fp32" else IFDScorer(IFDConfig(**base, **VARIANTS[name]))
        m, _ = scorer.load()
        note = None
        if name == "bf16_compile":
            m.model = torch.compile(m.model, dynamic=True)
            t = time.perf_counter()
            scorer(ds[:])  # compiles
            note = f"first pass (compiling) {time.perf_counter() - t:.1f} s"
        else:
            scorer(ds[:8])  # warm-up
        t = time.perf_counter()
        out = scorer(ds[:])
        wall = time.perf_counter() - t
        ifd = np.array(out["ifd"], dtype=float)[item_rows]
        results.append((f"score_ifd {name} ({', '.join(f'{k}={v}' for k, v in VARIANTS[name].items())})",
                        str(m.dtype).split(".")[-1], wall, ifd, note))
    load_after = os.getloadavg()

    cmd = "python benchmarks/ifd_cpu.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M')}, {machine_text(args.threads)}, {args.model.split('/')[-1]}, "
        f"{len(rows)} rows of {Path(args.data).name} ({len(forward)} scored), max_length {args.max_length}; load "
        f"average {load_before[0]:.2f} before, {load_after[0]:.2f} after. Padded share of computed positions "
        f"(counted): {100 * old_pad:.1f}% with both passes of a row in one batch (before), {100 * new_pad:.1f}% "
        f"with the passes batched as separate length-sorted sequences (now). Command: `{cmd}`",
        "",
        "| variant | dtype | wall s | rows/s | x the loop | Spearman vs fp32 loop | max abs IFD diff | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, dtype, wall, ifd, note in results:
        rho = spearman(ifd, loop)
        diff = float(np.nanmax(np.abs(ifd - loop))) if len(loop) else float("nan")
        lines.append(f"| {label} | {dtype} | {wall:.1f} | {len(rows) / wall:.2f} | {t_loop / wall:.2f}x | "
                     f"{rho:.4f} | {diff:.2e} | {note or ''} |")
    block = "\n".join(lines)
    print(block)
    if not args.no_write:
        append_block(Path(args.results), block)


def append_block(path: Path, block: str) -> None:
    """Put ``block`` at the end of the "IFD on CPU" section (made at the end of the file when absent)."""
    lines = (path.read_text() if path.exists() else "# Benchmark results\n").rstrip().split("\n")
    if SECTION not in lines:
        lines += ["", SECTION]
    end = lines.index(SECTION) + 1
    while end < len(lines) and not lines[end].startswith("## "):
        end += 1
    while end > 0 and not lines[end - 1].strip():
        end -= 1
    lines[end:end] = ["", *block.split("\n"), ""] if end < len(lines) else ["", *block.split("\n")]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
