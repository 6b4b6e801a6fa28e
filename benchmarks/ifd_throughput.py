"""IFD throughput: ``IFDScorer`` against the per-row loop of the reference scripts, on the same model and rows.

The reference loop does what the Cherry LLM / Superfiltering scripts do: for each row, one forward pass of
prompt + response with the prompt masked and one of the response alone, batch of one, full logits.
Both use the same token ids, so their scores must agree; the script prints rows/s, tokens/s, the speed-up,
the Spearman rank agreement, the rate of a plain forward pass on full batches, and appends a row to
``benchmarks/RESULTS.md``.

Usage:
    python benchmarks/ifd_throughput.py --rows 200                       # CPU, offline SmolLM2-135M-Instruct
    python benchmarks/ifd_throughput.py --rows 1000 --device cuda        # GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "train" / "alpaca_9k.json"


def reference_loop(model, items, bos):
    """Batch of one, two forward passes per row, full logits (what the papers' scripts do)."""
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for prompt, response in items:
            ids = torch.tensor([prompt + response], device=device)
            labels = ids.clone()
            labels[0, : len(prompt)] = -100
            lc = model(input_ids=ids, labels=labels).loss.float()
            ids_d = torch.tensor([[bos] + response], device=device)
            labels_d = ids_d.clone()
            labels_d[0, 0] = -100
            ld = model(input_ids=ids_d, labels=labels_d).loss.float()
            out.append((lc / ld).item())
    return np.array(out)


def plain_forward_rate(model, seq_len, batch, vocab, repeats=3):
    """Tokens/s of ``model(input_ids)`` on full, unpadded batches."""
    device = next(model.parameters()).device
    ids = torch.randint(0, vocab, (batch, seq_len), device=device)
    with torch.inference_mode():
        model(input_ids=ids)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(repeats):
            model(input_ids=ids)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return repeats * batch * seq_len / (time.perf_counter() - t)


def spearman(a, b):
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok]).statistic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--rows", type=int, default=200)
    p.add_argument("--reference-rows", type=int, default=None, help="Rows for the per-row loop (default: --rows).")
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--template", default="alpaca")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--max-tokens-per-batch", type=int, default=None)
    p.add_argument("--results", default=str(HERE / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()

    from datasets import Dataset

    from hf_select import IFDConfig, IFDScorer
    from hf_select.formats import encode_segment, resolve_template, row_to_messages

    rows = json.loads(Path(args.data).read_text())[: args.rows]
    ds = Dataset.from_list(rows)
    cfg = dict(
        model_name_or_path=args.model,
        template=args.template,
        max_length=args.max_length,
        device=args.device,
        dtype=args.dtype,
    )
    if args.max_tokens_per_batch:
        cfg["max_tokens_per_batch"] = args.max_tokens_per_batch
    scorer = IFDScorer(IFDConfig(**cfg))
    model, tok = scorer.load()
    device = next(model.parameters()).device
    template = resolve_template(args.template, tok)

    # The same (prompt, response) token ids as the scorer, truncated the same way.
    items = []
    for row in rows:
        seg = encode_segment(tok, row_to_messages(row, "alpaca"), 1, template)
        room = args.max_length - len(seg.prompt_ids)
        items.append((seg.prompt_ids, seg.response_ids[:room]))
    tokens = sum(len(pr) + 2 * len(r) + 1 for pr, r in items)

    scorer(ds[:8])  # warm-up (allocations, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    ours = np.array(scorer(ds[:])["ifd"], dtype=float)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_ours = time.perf_counter() - t

    n_ref = args.reference_rows or args.rows
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    reference_loop(model, items[:2], bos)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    ref = reference_loop(model, items[:n_ref], bos)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_ref = time.perf_counter() - t

    rate_ours = len(rows) / t_ours
    rate_ref = n_ref / t_ref
    tok_ours = tokens / t_ours
    seq = 512
    from hf_select.scoring.batching import default_token_budget

    budget = default_token_budget(scorer.config.max_tokens_per_batch, model)
    plain = plain_forward_rate(model, seq, max(1, budget // seq), len(tok))
    rho = spearman(ours[:n_ref], ref)
    max_rel = float(np.nanmax(np.abs(ours[:n_ref] - ref) / np.abs(ref)))
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    print(f"machine: {machine}; model: {args.model}; dtype: {model.dtype}; rows: {len(rows)} (reference: {n_ref})")
    print(f"hf-select : {rate_ours:8.2f} rows/s  {tok_ours:10.0f} tokens/s  ({t_ours:.1f} s)")
    print(f"per-row   : {rate_ref:8.2f} rows/s  ({t_ref:.1f} s)")
    print(
        f"speed-up  : {rate_ours / rate_ref:.2f}x; Spearman rank agreement {rho:.5f}; max relative diff {max_rel:.2e}"
    )
    print(f"plain forward on full batches: {plain:.0f} tokens/s; hf-select at {100 * tok_ours / plain:.0f}% of it")
    if args.no_write:
        return
    cmd = "python benchmarks/ifd_throughput.py " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in (
            ("rows", args.rows),
            ("reference_rows", args.reference_rows),
            ("device", args.device),
            ("template", args.template),
        )
        if v is not None
    )
    line = (
        f"| {time.strftime('%Y-%m-%d')} | {machine} | {args.model.split('/')[-1]} {str(model.dtype).split('.')[-1]} | "
        f"{len(rows)} | {rate_ours:.2f} | {rate_ref:.2f} | {rate_ours / rate_ref:.2f}x | {tok_ours:.0f} | "
        f"{100 * tok_ours / plain:.0f}% | {rho:.4f} | `{cmd}` |"
    )
    from _results import append_row

    header = (
        "| date | machine | model | rows | hf-select rows/s | per-row rows/s | speed-up | hf-select tokens/s | "
        "% of plain forward | Spearman | command |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    append_row(Path(args.results), "## IFD throughput", header, line)


if __name__ == "__main__":
    main()
