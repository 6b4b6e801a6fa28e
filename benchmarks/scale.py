"""Scale: score N generated rows with a tiny model through ``IFDScorer.score`` and record peak RSS and rows/s.

Rows are generated straight into an Arrow file (``Dataset.from_generator``), so nothing holds the whole
dataset in memory; ``.score()`` streams it in shards and writes each finished shard as it goes. The script
reports the process's peak resident memory next to the memory the loaded model alone takes.

Usage:
    python benchmarks/scale.py --rows 1000000            # the issue's target size (CPU, tiny model)
    python benchmarks/scale.py --rows 20000 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rows(n: int):
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
    for i in range(n):
        k = i % 7 + 1
        yield {
            "instruction": f"Repeat the word {words[i % 8]} {k} times.",
            "input": "",
            "output": " ".join([words[i % 8]] * k),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--shard-size", type=int, default=16384)
    p.add_argument("--workdir", default=None, help="Where the Arrow data and shards go (default: a temp dir).")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()

    import torch
    from datasets import Dataset

    from hf_select import IFDConfig, IFDScorer
    from hf_select.testing import make_tiny_lm

    work = Path(args.workdir or tempfile.mkdtemp(prefix="hf-select-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    base_rss = rss_mb()
    model_path = make_tiny_lm(work / "tiny-lm", hidden_size=64, num_layers=2, chat_template=False)
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(model_path), template="plain", max_length=128, device="cpu"))
    scorer.load()
    model_rss = rss_mb() - base_rss
    t = time.perf_counter()
    ds = Dataset.from_generator(rows, gen_kwargs={"n": args.rows}, cache_dir=str(work / "hf-cache"))
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    out = scorer.score(ds, shard_size=args.shard_size, run_dir=work / "shards", cache=False)
    t_score = time.perf_counter() - t
    ok = sum(1 for s in out["ifd_status"] if s == "ok")
    peak = peak_rss_mb()
    rate = args.rows / t_score
    machine = f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"rows: {args.rows} (generated in {t_gen:.1f} s); scored in {t_score:.1f} s = {rate:.0f} rows/s; ok={ok}")
    print(f"RSS before model: {base_rss:.0f} MB; model alone: {model_rss:.0f} MB; peak RSS: {peak:.0f} MB "
          f"({peak - base_rss - model_rss:.0f} MB above interpreter + model)")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    if args.no_write:
        return
    line = (f"| {time.strftime('%Y-%m-%d')} | {machine} | tiny Llama (2 layers, hidden 64) | {args.rows:,} | "
            f"{args.shard_size} | {rate:.0f} | {peak:.0f} MB | {peak - base_rss - model_rss:.0f} MB | "
            f"`python benchmarks/scale.py --rows {args.rows}` |")
    results = HERE / "RESULTS.md"
    heading = "## Scale: a million rows in bounded memory"
    header = ("| date | machine | model | rows | shard size | rows/s | peak RSS | peak RSS above interpreter + model "
              "| command |\n|---|---|---|---|---|---|---|---|---|")
    from _results import append_row

    append_row(results, heading, header, line)


if __name__ == "__main__":
    main()
