"""IFD on a CPU: every ``score_ifd`` option against the per-row fp32 loop of the seed scripts, on the same rows.

The loop does what the Cherry LLM / Superfiltering scripts do: one row per forward pass, full logits, the loss
from ``model(input_ids, labels=...)``, two passes per row, in fp32. Every variant scores the same token ids (the
scorer's own items: the default layout, chat template, direct pass ``auto``), so fp32 variants must agree with the
loop to rounding and 16-bit ones are judged by Spearman's rho and the largest absolute IFD difference against it.

Variants (``--variants``): ``fp32`` (``dtype="float32"``), ``fp32_noprefix`` (``prefix_reuse=False``: the shared
prompt prefix computed in every sequence, as before prefix reuse), ``default`` (``dtype="auto"``), ``bf16``,
``fp16``, ``fp32_packed`` / ``bf16_packed`` (``packing=True``), ``fp32_compile`` / ``bf16_compile`` (the backbone
through ``torch.compile(dynamic=True)``; its first pass, which compiles, is timed apart and the second pass is the
one reported; ``fp32_compile`` without prefix reuse, whose cached prefix made the first pass compile for 450 s
instead of 59 s on 60 rows), ``int8`` / ``int8_attn`` (the backbone's linear layers, or only its attention
projections, dynamically quantized to int8 with ``torch.ao.quantization``; measured to show why hf-select does not
offer it). Each variant is warmed up on 8 rows first. The padded share of computed positions is
counted (not timed) for the old pair batching and the current sequence batching.

The roofline block (``--roofline``, on by default) bounds what any scorer of these scores can reach here: it counts
the FLOPs of the loop and of ``score_ifd`` (with and without the shared prefix; ``device_common.FLOP_FORMULA``),
measures the CPU's matrix-multiply rate at SmolLM2's MLP shape in fp32, bf16 and fp16, and divides: the loop's
measured time over the scorer's FLOPs at the fastest rate is the largest speed-up possible without changing the
arithmetic.

Prints a markdown block (the exact command, machine, load average before and after, one row per variant) and,
unless ``--no-write``, appends it to ``benchmarks/RESULTS.md`` under "IFD on CPU".

Usage:
    python benchmarks/ifd_cpu.py --rows 150 --threads 2                 # idle machine; the reported figure
    python benchmarks/ifd_cpu.py --rows 150 --repeats 3 --variants fp32 fp32_noprefix fp16 fp32_compile
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
    "fp32_noprefix": {"dtype": "float32", "prefix_reuse": False},
    "fp32_compile": {"dtype": "float32", "prefix_reuse": False},
    "int8": {"dtype": "float32"},
    "int8_attn": {"dtype": "float32"},
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


def quantize_int8(backbone, attention_only: bool = False):
    """The backbone with its linear layers (or only the attention projections) as dynamically quantized int8
    (per-channel weights, torch's ``x86`` engine); the output head stays fp32. A benchmark variant only."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    torch.backends.quantized.engine = "x86"
    keep = ("q_proj", "k_proj", "v_proj", "o_proj") if attention_only else None
    spec = {n: per_channel_dynamic_qconfig for n, mod in backbone.named_modules()
            if isinstance(mod, torch.nn.Linear) and (keep is None or n.rsplit(".", 1)[-1] in keep)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        return quantize_dynamic(backbone, spec, dtype=torch.qint8)


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
    p.add_argument("--repeats", type=int, default=1,
                   help="Timed passes of the loop and of each variant (the median is reported, every pass in the "
                   "note).")
    p.add_argument("--no-roofline", dest="roofline", action="store_false",
                   help="Skip the FLOP count and the matrix-multiply rates.")
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
    loop_walls = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        loop = per_row_loop(model, forward)
        loop_walls.append(time.perf_counter() - t)
    t_loop = float(np.median(loop_walls))
    old_pad, new_pad = padded_shares(ref_scorer, rows, tok, limit)

    loop_note = "passes " + ", ".join(f"{w:.1f}" for w in loop_walls) + " s" if args.repeats > 1 else None
    results = [("per-row fp32 loop (seed scripts)", "float32", t_loop, loop, loop_note)]
    for name in args.variants:
        scorer = ref_scorer if name == "fp32" else IFDScorer(IFDConfig(**base, **VARIANTS[name]))
        m, _ = scorer.load()
        note = None
        if name.startswith("int8"):
            m.model = quantize_int8(m.model, attention_only=name == "int8_attn")
        if name.endswith("_compile"):
            m.model = torch.compile(m.model, dynamic=True)
            t = time.perf_counter()
            scorer(ds[:])  # compiles
            note = f"first pass (compiling) {time.perf_counter() - t:.1f} s"
        else:
            scorer(ds[:8])  # warm-up
        walls = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = scorer(ds[:])
            walls.append(time.perf_counter() - t)
        wall = float(np.median(walls))
        if args.repeats > 1:
            note = "; ".join(filter(None, [note, "passes " + ", ".join(f"{w:.1f}" for w in walls) + " s"]))
        ifd = np.array(out["ifd"], dtype=float)[item_rows]
        results.append((f"score_ifd {name} ({', '.join(f'{k}={v}' for k, v in VARIANTS[name].items())})",
                        ("int8 dynamic + " if name.startswith("int8") else "") + str(m.dtype).split(".")[-1], wall,
                        ifd, note))
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
    if args.roofline:
        lines += ["", *roofline_lines(model, forward, ref_scorer.template_prefix(tok, limit), t_loop, args.threads)]
    block = "\n".join(lines)
    print(block)
    if not args.no_write:
        append_block(Path(args.results), block)


def gemm_rates(threads: int, tokens: int = 1024, hidden: int = 576, inner: int = 1536) -> dict[str, float]:
    """GFLOP/s of ``F.linear`` at SmolLM2's MLP shape (``tokens x hidden`` by ``hidden x inner``), best of 5 runs of
    10, per dtype."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    rates = {}
    for name in ("float32", "bfloat16", "float16"):
        dtype = getattr(torch, name)
        a, w = torch.randn(tokens, hidden, dtype=dtype), torch.randn(inner, hidden, dtype=dtype)
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(10):
                F.linear(a, w)
            best = min(best, (time.perf_counter() - t) / 10)
        rates[name] = 2 * tokens * hidden * inner / best / 1e9
    return rates


def roofline_lines(model, items, prefix_ids: list[int], t_loop: float, threads: int) -> list[str]:
    """The FLOP bound: the loop's time over the scorer's FLOPs at the fastest measured matrix-multiply rate
    (``prefix_ids``: the template prefix that prefix reuse computes once)."""
    from device_common import flop_shape, forward_flops

    from hf_select.scoring.prefix import MIN_PREFIX_TOKENS, continuing

    shape = flop_shape(model)
    cond = [len(it.context) + len(it.target) for it in items]
    direct = [len(it.direct) + len(it.direct_tokens) for it in items]
    scored = sum(len(it.target) + len(it.direct_tokens) for it in items)
    loop = forward_flops(**shape, lengths=cond + direct, head_tokens=sum(cond) + sum(direct))
    plain = forward_flops(**shape, lengths=cond + direct, head_tokens=scored)
    contexts = [it.context for it in items] + [it.direct for it in items]
    members = continuing(prefix_ids, contexts) if len(prefix_ids) >= MIN_PREFIX_TOKENS else []
    p, cached = len(prefix_ids), len(members)
    lengths = cond + direct
    # The cached prefix's own work, once per sequence that continues it, is what reuse saves.
    reused = plain - forward_flops(**shape, lengths=[p] * cached, head_tokens=0)
    rates = gemm_rates(threads)
    best = max(rates, key=rates.get)
    out = [
        f"Roofline ({len(items)} rows; FLOPs by `device_common.FLOP_FORMULA`, shared prefix {p} tokens in "
        f"{cached} of {len(lengths)} sequences): matrix multiply at SmolLM2's MLP shape (1024 x 576 x 1536), "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()) + f". The loop ran at "
        f"{loop / t_loop / 1e9:.0f} GFLOP/s.",
        "",
        "| work | TFLOP | seconds at the fastest rate | at most x the loop |",
        "|---|---|---|---|",
    ]
    for label, flops in (("per-row loop (full logits)", loop), ("score_ifd, prefix computed per sequence", plain),
                         ("score_ifd, shared prefix computed once", reused)):
        seconds = flops / (rates[best] * 1e9)
        out.append(f"| {label} | {flops / 1e12:.2f} | {seconds:.1f} ({best}) | {t_loop / seconds:.2f}x |")
    return out


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
