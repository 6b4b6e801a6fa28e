"""Is the cost preview (``--dry-run``) right? Its estimate against the real run, stage by stage, on the demo.

The Superfiltering recipe on the built-in demo rows (the first step of ``hf-select demo``: IFD of every row with
SmolLM2-135M-Instruct, the top 10%, one SFT run) is planned with ``dry_run=True``, then run for real in a fresh
folder. Each planned stage's estimate is set against the seconds the real stage took (its ``stage.json``), and the
ratio is appended to ``benchmarks/RESULTS.md`` with this command, the CPU and its load. The target: every stage
within a factor of 2 (0.5 <= estimate / real <= 2).

Usage:
    python benchmarks/dry_run_accuracy.py                 # 500 demo rows (about 3 minutes on 2 cores)
    python benchmarks/dry_run_accuracy.py --rows 200 --results ''
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTION = "## Cost preview: the dry-run estimate against the real run"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=500, help="Demo rows (hf-select demo uses 500).")
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="Results file to append to ('' = none).")
    return p.parse_args(argv)


def recipe_args(rows: int, model: str, output_dir: str, dry_run: bool):
    from hf_select.recipes.superfilter import SuperfilterArguments

    # the demo's Superfiltering settings (hf_select.commands.demo.run_demo)
    return SuperfilterArguments(
        dataset_name=f"demo:{rows}", output_dir=output_dir, model_name_or_path=model, ifd_model_name_or_path=model,
        template="auto", ifd_fraction=0.1, score_max_length=256, max_length=256, num_train_epochs=1.0,
        learning_rate=1e-4, per_device_train_batch_size=8, per_device_eval_batch_size=8, warmup_steps=0.1,
        logging_steps=5, shard_size=100, report=False, dry_run=dry_run)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    from selection_quality import machine

    from hf_select.recipes.superfilter import run_superfilter

    where = machine()
    command = "python benchmarks/dry_run_accuracy.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory(prefix="hf-select-dry-run-") as tmp:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            plan = run_superfilter(recipe_args(args.rows, args.model, f"{tmp}/planned", True))["dry_run"]
        plan_seconds = time.perf_counter() - t0
        print(printed.getvalue())
        t0 = time.perf_counter()
        run_superfilter(recipe_args(args.rows, args.model, f"{tmp}/real", False))
        real_wall = time.perf_counter() - t0
        real = {}
        for stage in plan["stages"]:
            marker = Path(tmp) / "real" / stage["name"] / "stage.json"
            real[stage["name"]] = json.loads(marker.read_text())["seconds"] if marker.is_file() else None
    rows = []
    within = True
    for stage in plan["stages"]:
        got = real.get(stage["name"])
        est = stage.get("seconds")
        ratio = est / got if est and got else None
        within &= ratio is not None and 0.5 <= ratio <= 2.0
        rows.append(f"| {stage['name']} | {stage['rows']} | {stage['tokens']} | "
                    f"{'-' if est is None else f'{est:.1f}'} | {'-' if got is None else f'{got:.1f}'} | "
                    f"{'-' if ratio is None else f'{ratio:.2f}'} |")
    total_est = sum(s.get("seconds") or 0.0 for s in plan["stages"])
    total_real = sum(v or 0.0 for v in real.values())
    block = "\n".join([
        f"### Superfiltering on {args.rows} demo rows ({started})", "",
        f"Machine: {where}. The dry run took {plan_seconds:.0f} s; the real run {real_wall:.0f} s of wall time "
        "(its eval and writing included; the table compares the planned stages only).", "",
        "```bash", f"HF_HUB_OFFLINE=1 {command}", "```", "",
        "| stage | rows | tokens | estimated (s) | real (s) | estimate / real |", "|---|---|---|---|---|---|", *rows,
        f"| all planned stages | | | {total_est:.1f} | {total_real:.1f} | "
        f"{total_est / total_real if total_real else float('nan'):.2f} |", "",
        f"Every stage within a factor of 2: {'yes' if within else 'no'}.", ""])
    print(block)
    if args.results:
        path = Path(args.results)
        text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
        if SECTION not in text:
            text = text.rstrip("\n") + "\n\n" + SECTION + "\n\n" + (
                "`benchmarks/dry_run_accuracy.py` plans a recipe with `dry_run` (the cost preview of `--dry-run`), "
                "runs it for real and sets each stage's estimate against its measured seconds.\n")
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        end = len(text) if nxt == -1 else nxt + 1
        section = text[start:end].rstrip("\n") + "\n\n" + block.rstrip("\n") + "\n"
        path.write_text(text[:start] + section + ("\n" + text[end:] if end < len(text) else ""), encoding="utf-8")
        print(f"appended to {path}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
