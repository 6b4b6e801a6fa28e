"""Selection quality: does a chosen subset train a better model than random rows of the same token budget?

Every method keeps rows, in its own order, until their supervised completion tokens (as the trainer sees them)
reach the same budget; every subset fine-tunes SmolLM2-135M-Instruct with the same TRL SFT settings; the metric is
the held-out loss (sum of completion-token losses / completion tokens) on eval sets of different answer styles that
nobody selected from, read whole (up to ``eval_max_length`` tokens). Random is drawn 5 times, each draw with its own
rows and training seed; a method "beats" random when its loss is below the 95% prediction interval of one new random
draw (:mod:`hf_select.compare.stats`). It is :func:`hf_select.compare.run_compare` (the same as ``hf-select
compare``) with one of these profiles:

- ``cpu`` (default): the powered run for a 2-core CPU. Pool: 3,000 rows sampled per source from
  ``alpaca_9k.json``, ``dolly_3k.json``, ``code_alpaca_2k.json`` and ``alpaca_gpt4_1k.json`` (rows asking an eval
  question are left out first, and counted); budget 20,000 supervised tokens at max_length 512; 5 random draws;
  eval sets in three answer styles: 100 AlpacaEval GPT-4 answers (evenly spaced, even positions), 150 human-written
  Dolly answers (rows of ``dolly_3k.json``, held out of the pool) and 150 GSM8K math solutions; ``target`` set: 100
  other AlpacaEval rows (odd positions: never an eval row). Methods: the baselines (random, longest, their
  per-source forms) and every preset; ``longest_gated`` (the former recommendation) and ``random_per_source`` (the
  recommendation) trained with 3 seeds. SFT: 1 epoch, learning rate 1e-4,
  batch 8 grouped by length (the same sampler for every method), bf16 autocast where this CPU's bf16 measures faster
  (else fp32); shared scoring at score_max_length 1024 (dtype auto: the same measured rule).
- ``quick``: the harness in about 20 minutes: 1,000 pool rows, 4,000 tokens, 3 random draws, the four baselines,
  smaller eval sets (40 / 60 / 60 rows).
- ``demo``: selection only (no training) on the built-in demo pool (1,000 rows, 15% corrupted on purpose): the
  share of corrupted rows each method chooses, by kind.
- ``gpu``: the 14,242-row pool (alpaca_9k + dolly_3k + code_alpaca_2k), every method, for one H100/H200.

The eval and target files are derived from ``../shared/data`` into ``<output>/data/`` (never into the repository).
At the end it writes ``compare.json``/``compare.md``/``compare.png`` under ``--output``, copies the chart to
``--chart`` and appends the table and the exact command to the "Selection quality" section of ``--results``.
Finished stages are reused when the script runs again on the same ``--output`` (a stopped run resumes).

Usage:
    python benchmarks/selection_quality.py --dry-run             # the cpu profile's plan and estimated minutes
    python benchmarks/selection_quality.py                       # the powered CPU run (about 2 h, 2 cores)
    python benchmarks/selection_quality.py --profile quick       # the harness (about 20 min)
    python benchmarks/selection_quality.py --profile demo        # corrupted share per method (minutes)
    python benchmarks/selection_quality.py --profile gpu         # the 14k pool on one GPU
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data"
TRAIN = DATA / "train"
ALPACA_EVAL = DATA / "eval" / "alpaca_eval_gpt4_805.json"
SHAREGPT = DATA / "chat" / "sharegpt_dpo_300.json"
DOLLY = TRAIN / "dolly_3k.json"
GSM8K = TRAIN / "gsm8k_train.jsonl"
MT_BENCH = DATA / "eval" / "mt_bench_reference_gpt4.jsonl"
# cheapest and most telling first: the baselines, then the presets over one shared scoring, then the methods
# that train extra models or score again (a run that is stopped keeps every finished method)
ALL_METHODS = ("random,longest,random_per_source,longest_per_source,longest_gated,fusion,superfiltering,ifd_gated,"
               "ifd_length,ifd_quota,target,full,ifd,instructmining,mods,cherry")
# the token-budget methods: baselines and presets (the recipe methods take a row budget)
TOKEN_METHODS = ("random,longest,random_per_source,longest_per_source,longest_gated,fusion,superfiltering,ifd_gated,"
                 "ifd_length,ifd_quota,target")
# the methods judged on both pools: the baselines, the former and current recommendations, the IFD gate, the
# target-aware methods (RDS+ with the model's own states, loss reduction) and length inside diversity
POOL_METHODS = ("random,random_per_source,longest_gated,ifd_gated,longest_diverse,kcenter_length,target_lm,"
                "loss_reduction,instructmining_fit")
SWAP_SHARE = 0.05  # pool B: rows given another row's response on purpose
PROFILES = {
    "cpu": dict(pool=["alpaca_9k.json", "dolly_3k.json", "code_alpaca_2k.json", "alpaca_gpt4_1k.json"],
                pool_limit=3000, eval=["alpaca_eval:100", "dolly:150", "gsm8k:150"], target="alpaca_eval_target:100",
                methods=TOKEN_METHODS, random_seeds=5, epochs=1.0, learning_rate=1e-4, batch_size=8, max_length=512,
                budget_tokens=20000, eval_max_length=2048, score_max_length=1024, precision=None,
                score_dtype="auto", repeat_methods="longest_gated,random_per_source", method_sets=[],
                group_by_length=True),
    # the two pools the default is chosen on (issue: "a default chosen on two pools"): pool A is the cpu pool, pool B
    # another mix (LIMA, GSM8K, Dolly, Code Alpaca) with 5% of its rows given another row's response on purpose;
    # the same eval sets, target set, budget and training settings for both
    "pool_a": dict(pool=["alpaca_9k.json", "dolly_3k.json", "code_alpaca_2k.json", "alpaca_gpt4_1k.json"],
                   pool_limit=3000, eval=["alpaca_eval:100", "dolly:150", "gsm8k:150"],
                   target="alpaca_eval_target:100", dev="dev:40", methods=POOL_METHODS, random_seeds=5,
                   epochs=1.0, learning_rate=1e-4, batch_size=8, max_length=512, budget_tokens=10000,
                   eval_max_length=2048, score_max_length=1024, precision=None, score_dtype="auto", method_sets=[],
                   group_by_length=True),
    "pool_b": dict(pool=["poolb:lima:1000", "poolb:gsm8k:800", "poolb:dolly:700", "poolb:code_alpaca:600"],
                   pool_limit=None, eval=["alpaca_eval:100", "dolly:150", "gsm8k:150"],
                   target="alpaca_eval_target:100", dev="dev:40", methods=POOL_METHODS, random_seeds=5,
                   epochs=1.0, learning_rate=1e-4, batch_size=8, max_length=512, budget_tokens=10000,
                   eval_max_length=2048, score_max_length=1024, precision=None, score_dtype="auto", method_sets=[],
                   group_by_length=True),
    "quick": dict(pool=["alpaca_9k.json", "dolly_3k.json", "code_alpaca_2k.json", "alpaca_gpt4_1k.json"],
                  pool_limit=1000, eval=["alpaca_eval:40", "dolly:60", "gsm8k:60"], target=None,
                  methods="random,longest,random_per_source,longest_per_source", random_seeds=3, epochs=1.0,
                  learning_rate=1e-4, batch_size=8, max_length=256, budget_tokens=4000, eval_max_length=1024,
                  score_max_length=1024, precision=None, score_dtype="auto", method_sets=[], group_by_length=True),
    "demo": dict(pool=["demo:1000"], pool_limit=None, eval=["demo:200"], target=None,
                 methods="random,longest,superfiltering,ifd_gated,ifd_length,ifd_quota,fusion,longest_gated",
                 random_seeds=5, epochs=1.0, learning_rate=1e-4, batch_size=8, max_length=256, method_sets=[],
                 train=False),
    "gpu": dict(pool=["alpaca_9k.json", "dolly_3k.json", "code_alpaca_2k.json"], pool_limit=None,
                eval=["alpaca_eval:805", "dolly:300", "gsm8k:300", "mt_bench"], target="alpaca_eval_target:100",
                methods=ALL_METHODS, random_seeds=5, epochs=2.0, learning_rate=1e-4, batch_size=32, max_length=1024,
                eval_max_length=2048, score_max_length=1024, repeat_methods="longest_gated", method_sets=[]),
}
SECTION = "## Selection quality: chosen 10% vs random 10% vs the full pool"
SECTION_INTRO = """\
Does a well-chosen subset of the pool train a better model than random rows, the longest rows or the whole pool?
`benchmarks/selection_quality.py` runs `hf_select.compare.run_compare` (the same as `hf-select compare`); its
docstring gives each profile's pool, eval sets and training settings.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu", help="Pool, evals and settings (see above).")
    p.add_argument("--output", default=None, help="Comparison folder (default: runs/selection_quality_<profile>).")
    p.add_argument("--methods", default=None, help="Comma-separated methods (default: the profile's).")
    p.add_argument("--budget", type=float, default=0.1,
                   help="Share of the pool (< 1) or rows (>= 1) per method, where the profile has no token budget.")
    p.add_argument("--budget-tokens", type=int, default=None,
                   help="Supervised tokens per method (default: the profile's; 0 = use the row budget).")
    p.add_argument("--dry-run", action="store_true", help="Print the plan and its estimated minutes, then stop.")
    p.add_argument("--pool-limit", type=int, default=None, help="Pool rows, sampled per source (default: profile).")
    p.add_argument("--random-seeds", type=int, default=None)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None, help="Tokens per training row.")
    p.add_argument("--precision", default=None, help="fp32 | bf16 (default: bf16 where the CPU/GPU supports it).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="Any other CompareConfig field, or METHOD.FIELD=VALUE for a recipe (as in hf-select compare).")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="Results file to append to ('' = none).")
    p.add_argument("--chart", default=str(HERE / "selection_quality.png"), help="Where to copy the chart ('' = no).")
    p.add_argument("--label", default=None, help="Title of this run in the results (default: the profile).")
    return p.parse_args(argv)


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), name)
    except OSError:
        pass
    from hf_select.models import cpu_bf16_matmul_speedup

    return (f"CPU {name}, {os.cpu_count()} cores, bf16 matmul {cpu_bf16_matmul_speedup():.1f}x fp32, load average "
            f"{load:.1f} at the start, torch {torch.__version__}")


def bf16_available() -> bool:
    """bf16 is fast here: a GPU with bf16, or a CPU whose bf16 matrix multiplies measure at least
    ``CPU_BF16_MIN_SPEEDUP`` times fp32's (:func:`hf_select.models.cpu_bf16_matmul_speedup`: 4.0x on an AMD EPYC,
    0.5x on an Intel Xeon whose bf16 instructions are emulated)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    from hf_select.models import CPU_BF16_MIN_SPEEDUP, cpu_bf16_matmul_speedup

    return cpu_bf16_matmul_speedup() >= CPU_BF16_MIN_SPEEDUP


def _spaced(n_rows: int, k: int, start: int = 0, stride: int = 1) -> list[int]:
    """``k`` positions evenly spaced over ``start, start + stride, ...`` below ``n_rows``."""
    positions = list(range(start, n_rows, stride))
    k = min(k, len(positions))
    return [positions[(i * len(positions)) // k] for i in range(k)]


def derived_file(spec: str, folder: Path) -> str:
    """The eval/target files of a profile:

    - ``alpaca_eval:N``: N AlpacaEval GPT-4 answers evenly spaced over the file, even positions only;
    - ``alpaca_eval_target:N``: N rows at odd positions (never an eval row);
    - ``dolly:N``: N human-written Dolly rows evenly spaced over ``dolly_3k.json`` (the comparison leaves them out
      of the pool: ``eval_overlap``);
    - ``gsm8k:N``: N GSM8K math questions with their worked solutions, evenly spaced;
    - ``sharegpt:N``: the first N ShareGPT DPO conversations, answered by their chosen reply;
    - ``mt_bench`` and ``demo:N`` as they are."""
    name, _, n = spec.partition(":")
    if name in ("demo", "mt_bench"):
        return spec if name == "demo" else str(MT_BENCH)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}_{n}.json"
    if name == "alpaca_eval" or name == "alpaca_eval_target":
        rows = json.loads(ALPACA_EVAL.read_text(encoding="utf-8"))
        picked = _spaced(len(rows), int(n), start=0 if name == "alpaca_eval" else 1, stride=2)
        data = [{"instruction": rows[i]["instruction"], "input": "", "output": rows[i]["output"],
                 "source": rows[i]["dataset"]} for i in picked]
    elif name == "dolly":
        rows = json.loads(DOLLY.read_text(encoding="utf-8"))
        data = [{"instruction": rows[i]["instruction"], "input": rows[i].get("input") or "",
                 "output": rows[i]["output"], "source": rows[i].get("category") or "dolly"}
                for i in _spaced(len(rows), int(n))]
    elif name == "gsm8k":
        rows = [json.loads(line) for line in GSM8K.read_text(encoding="utf-8").splitlines() if line.strip()]
        data = [{"instruction": rows[i]["question"], "input": "", "output": rows[i]["answer"], "source": "gsm8k"}
                for i in _spaced(len(rows), int(n))]
    elif name == "sharegpt":
        data = json.loads(SHAREGPT.read_text(encoding="utf-8"))[: int(n)]
    else:
        raise SystemExit(f"unknown eval/target spec {spec!r}")
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, out)
    return str(out)


def _pool_b_rows(name: str) -> list[dict[str, str]]:
    """Every usable row of one of pool B's sources, as instruction/input/output (LIMA's 29 multi-turn rows are left
    out; the Dolly and GSM8K rows the eval sets use are left out)."""
    if name == "lima":
        rows = json.loads((TRAIN / "lima.json").read_text(encoding="utf-8"))
        return [{"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"]}
                for r in rows if not r.get("history")]
    if name == "dolly":
        rows = json.loads(DOLLY.read_text(encoding="utf-8"))
        held = set(_spaced(len(rows), 150))
        return [{"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"]}
                for i, r in enumerate(rows) if i not in held]
    if name == "gsm8k":
        rows = [json.loads(line) for line in GSM8K.read_text(encoding="utf-8").splitlines() if line.strip()]
        held = set(_spaced(len(rows), 150))
        return [{"instruction": r["question"], "input": "", "output": r["answer"]}
                for i, r in enumerate(rows) if i not in held]
    if name == "code_alpaca":
        rows = json.loads((TRAIN / "code_alpaca_2k.json").read_text(encoding="utf-8"))
        return [{"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"]} for r in rows]
    raise SystemExit(f"unknown pool B source {name!r}")


def pool_b_rows(specs: list[str], seed: int = 0) -> list[dict[str, str]]:
    """Pool B's rows (``poolb:<source>:<rows>`` each): rows sampled per source, then ``SWAP_SHARE`` of all rows
    given the response of a row of another source, labelled ``corruption: swapped`` (the comparison counts them per
    method)."""
    import random

    rng = random.Random(seed)
    parts = [(name, int(n)) for name, n in (spec.split(":")[1:] for spec in specs)]
    rows: list[dict[str, str]] = []
    for name, n in parts:
        usable = _pool_b_rows(name)
        picked = rng.sample(range(len(usable)), min(n, len(usable)))
        rows.extend({**usable[i], "source": name, "corruption": "none"} for i in sorted(picked))
    swapped = rng.sample(range(len(rows)), round(SWAP_SHARE * len(rows)))
    originals = [r["output"] for r in rows]
    for i in swapped:
        donor = rng.choice([j for j in range(len(rows)) if rows[j]["source"] != rows[i]["source"]])
        rows[i]["output"] = originals[donor]
        rows[i]["corruption"] = "swapped"
    return rows


def pool_b_files(specs: list[str], folder: Path, seed: int = 0) -> list[str]:
    """Pool B (:func:`pool_b_rows`), one file per source under ``folder``."""
    rows = pool_b_rows(specs, seed)
    parts = [spec.split(":")[1] for spec in specs]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in parts:
        out = folder / f"poolb_{name}.json"
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps([r for r in rows if r["source"] == name]), encoding="utf-8")
        os.replace(tmp, out)
        paths.append(str(out))
    return paths


def dev_file(n: int, folder: Path, evals: list[str]) -> str:
    """The dev set both pools share (``dev:N``): N rows in each of the eval sets' three styles, none of them an
    eval row, a target row or a row of pool A or pool B: AlpacaEval rows at odd positions the target set leaves
    out, Dolly rows and GSM8K rows outside both pools and the eval sets. ``instructmining_fit`` is fitted to it."""
    from hf_select.compare.pool import build_pool, dataset_prompt_keys, eval_prompt_keys, prompt_key
    from hf_select.formats import row_to_messages

    def key(row: dict[str, str]) -> str:
        return prompt_key(row_to_messages(row, "alpaca"))

    a = PROFILES["pool_a"]
    exclude = {Path(e).stem: eval_prompt_keys(e) for e in evals}
    pool_a, _ = build_pool([str(TRAIN / f) for f in a["pool"]], limit=a["pool_limit"], seed=0, exclude=exclude)
    taken = set(dataset_prompt_keys(pool_a))
    taken |= {key(r) for r in pool_b_rows(PROFILES["pool_b"]["pool"])}
    for e in evals:
        taken |= eval_prompt_keys(e)
    rows = json.loads(ALPACA_EVAL.read_text(encoding="utf-8"))
    target = set(_spaced(len(rows), int(a["target"].split(":")[1]), start=1, stride=2))
    spare = [i for i in range(1, len(rows), 2) if i not in target]
    data = [{"instruction": rows[i]["instruction"], "input": "", "output": rows[i]["output"], "source": "alpaca_eval"}
            for i in spare[:: max(1, len(spare) // n)][:n]]
    dolly = json.loads(DOLLY.read_text(encoding="utf-8"))
    gsm = [json.loads(line) for line in GSM8K.read_text(encoding="utf-8").splitlines() if line.strip()]
    for source, items in (("dolly", [(r["instruction"], r.get("input") or "", r["output"]) for r in dolly]),
                          ("gsm8k", [(r["question"], "", r["answer"]) for r in gsm])):
        picked = 0
        for instruction, inp, output in items[::7]:
            row = {"instruction": instruction, "input": inp, "output": output, "source": source}
            if picked < n and key(row) not in taken:
                data.append(row)
                picked += 1
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"dev_{n}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, out)
    return str(out)


def build_config(args: argparse.Namespace):
    from hf_select.commands.compare import config_from_args

    prof = PROFILES[args.profile]
    output = args.output or str(REPO / "runs" / f"selection_quality_{args.profile}")
    data = Path(output) / "data"
    if all(f.startswith("poolb:") for f in prof["pool"]):
        pool = pool_b_files(prof["pool"], data)
    else:
        pool = [str(TRAIN / f) if not f.startswith("demo") else f for f in prof["pool"]]
    evals = [derived_file(e, data) for e in prof["eval"]]
    # bf16 only where it measures faster: on an Intel Xeon bf16 autocast made SFT slower (fp32 125 vs bf16 58
    # tokens/s per core), on an AMD EPYC 2.7x faster (fp32 163 vs bf16 445 tokens/s, 8 x 256 tokens, 2 cores).
    precision = args.precision or prof.get("precision") or ("bf16" if bf16_available() else "fp32")
    score_dtype = prof.get("score_dtype") or ("bfloat16" if precision == "bf16" else "float32")
    value = lambda name, key: getattr(args, name) if getattr(args, name) is not None else prof[key]  # noqa: E731
    extra = [f"target={derived_file(prof['target'], data)}"] if prof.get("target") else []
    if prof.get("dev"):
        extra.append(f"dev={dev_file(int(prof['dev'].split(':')[1]), data, evals)}")
    if not prof.get("train", True):
        extra.append("train=false")
    budget_tokens = args.budget_tokens if args.budget_tokens is not None else prof.get("budget_tokens")
    if budget_tokens:
        extra.append(f"budget_tokens={budget_tokens}")
    for key in ("eval_max_length", "score_max_length", "repeat_methods"):
        if prof.get(key):
            extra.append(f"{key}={prof[key]}")
    if args.dry_run:
        extra.append("dry_run=true")
    if prof.get("group_by_length"):
        # batches of similar lengths: random rows padded to a batch's longest row cost 3-4x their tokens at 512
        extra.append('sft_kwargs={"train_sampling_strategy": "group_by_length"}')
    ns = argparse.Namespace(
        pool=pool, eval=evals, budget=args.budget, methods=args.methods or prof["methods"], output=output,
        model=args.model, pool_limit=value("pool_limit", "pool_limit"), eval_limit=None,
        random_seeds=value("random_seeds", "random_seeds"),
        set=[f"learning_rate={value('learning_rate', 'learning_rate')}",
             f"num_train_epochs={value('epochs', 'epochs')}",
             f"per_device_train_batch_size={value('batch_size', 'batch_size')}",
             f"per_device_eval_batch_size={2 * value('batch_size', 'batch_size')}",
             f"max_length={value('max_length', 'max_length')}",
             f"precision={precision}", f"score_dtype={score_dtype}",
             f"seed={args.seed}", "logging_steps=10", *extra, *prof["method_sets"], *args.set],
    )
    return config_from_args(ns)


def update_results(path: Path, block: str) -> None:
    """Append ``block`` to the selection-quality section of ``path`` (created, with its introduction, if absent);
    other sections are left as they are."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    if SECTION not in text:
        text = text.rstrip("\n") + "\n\n" + SECTION + "\n\n" + SECTION_INTRO
    start = text.index(SECTION)
    nxt = text.find("\n## ", start + len(SECTION))
    end = len(text) if nxt == -1 else nxt + 1
    section = text[start:end].rstrip("\n") + "\n\n" + block.rstrip("\n") + "\n"
    text = text[:start] + section + ("\n" + text[end:] if end < len(text) else "")
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    needed = [ALPACA_EVAL, SHAREGPT, DOLLY, GSM8K,
              *(TRAIN / f for f in PROFILES[args.profile]["pool"] if not f.startswith(("demo", "poolb:")))]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print(f"selection_quality: the shared data is missing: {missing}", file=sys.stderr)
        return 2
    from hf_select.compare import render_markdown, run_compare
    from hf_select.recipes.arguments import setup_logging

    setup_logging()
    config = build_config(args)
    where = machine()
    command = "python benchmarks/selection_quality.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    result = run_compare(config)
    if config.dry_run:
        return 0
    print(result.markdown())
    if args.chart and result.files.get("chart"):
        shutil.copyfile(result.files["chart"], args.chart)
    if args.results:
        label = args.label or f"profile {args.profile}"
        failed = [m.label for m in result.methods if m.status != "ok"]
        chart = (os.path.relpath(args.chart, Path(args.results).parent) if args.chart and result.files.get("chart")
                 else None)
        block = "\n".join([
            f"### {label} ({started})",
            "",
            f"Machine: {where}. Wall time of this run: {result.seconds / 60:.1f} min.",
            "",
            "```bash",
            f"HF_HUB_OFFLINE=1 {command}",
            "```",
            "",
            render_markdown(result, heading_level=4).strip(),
            "",
            *([f"Failed: {', '.join(failed)} (the error is in the table)."] if failed else []),
            *([f"![eval loss per method]({chart})", ""] if chart else []),
        ])
        update_results(Path(args.results), block)
        print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
