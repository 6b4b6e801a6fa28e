"""IFD throughput against the batch token budget: a table in RESULTS.md and a chart (PNG).

Usage:
    python benchmarks/ifd_budget_sweep.py --rows 120 --budgets 256 512 1024 2048 4096          # CPU
    python benchmarks/ifd_budget_sweep.py --rows 2000 --device cuda --budgets 4096 16384 65536  # GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "train" / "alpaca_9k.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--rows", type=int, default=120)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--template", default="alpaca")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--budgets", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--chart", default=str(HERE / "ifd_budget_sweep.png"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()

    from datasets import Dataset

    from hf_select import IFDConfig, IFDScorer

    rows = json.loads(Path(args.data).read_text())[: args.rows]
    batch = Dataset.from_list(rows)[:]
    scorer = IFDScorer(IFDConfig(model_name_or_path=args.model, template=args.template, device=args.device,
                                 dtype=args.dtype))
    model, _ = scorer.load()
    device = next(model.parameters()).device
    out = scorer(batch)
    tokens = sum(out["response_tokens"]) * 2  # response tokens scored, in both passes
    results = []
    for budget in args.budgets:
        scorer.config.max_tokens_per_batch = budget
        scorer(Dataset.from_list(rows[:4])[:])
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        scorer(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        results.append((budget, len(rows) / dt, tokens / dt))
        print(f"budget {budget:6d}: {len(rows) / dt:8.2f} rows/s, {tokens / dt:9.0f} scored response tokens/s")
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)")
    if args.no_write:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([r[0] for r in results], [r[1] for r in results], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("token budget per forward pass (rows x padded length)")
    ax.set_ylabel("rows / s")
    ax.set_title(f"IFD throughput vs batch token budget\n{args.model.split('/')[-1]}, {machine}, {len(rows)} rows",
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.chart, dpi=110)
    heading = "## IFD throughput against the batch token budget"
    cmd = f"python benchmarks/ifd_budget_sweep.py --rows {args.rows} --budgets {' '.join(map(str, args.budgets))}"
    if args.device:
        cmd += f" --device {args.device}"
    body = [f"{heading}", "", f"{time.strftime('%Y-%m-%d')}, {machine}, {args.model}, {len(rows)} rows of alpaca_9k, "
            f"template {args.template}. Command: `{cmd}`. Chart: [ifd_budget_sweep.png](ifd_budget_sweep.png).", "",
            "| token budget | rows/s | scored response tokens/s |", "|---|---|---|"]
    body += [f"| {b} | {r:.2f} | {t:.0f} |" for b, r, t in results]
    path = HERE / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if heading in text:
        start = text.index(heading)
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + "\n".join(body) + ("\n" + text[nxt:] if nxt != -1 else "\n")
    else:
        text = text.rstrip() + "\n\n" + "\n".join(body) + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
