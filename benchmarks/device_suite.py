"""One prepared call that measures every GPU target of hf-select on a bare GPU machine (issue 16), or, with
``--smoke``, the same code on a CPU with tiny models (``tests/test_device_suite.py`` runs it; about 10 s of CPU,
45-80 s of wall time on a shared 2-core machine, most of it importing torch, transformers and TRL).

Stages (``benchmarks/device_stages.py``; sizes in ``benchmarks/device_common.py``), each under its own time cap; a
stage that fails or runs past its cap is recorded with its error (and what it measured before) and the suite goes on:

- ``ifd_smollm2``: ``score_ifd`` on 1,000 alpaca_9k rows with SmolLM2-135M-Instruct in bf16 (rows/s, tokens/s),
  the seed scripts' per-row fp32 loop on 100 rows, a plain forward on full 64 x 512 batches, Spearman against the loop;
- ``kcenter``: k-center greedy on 1,000,000 x 768 random embeddings, k = 10,000 (first 50 picks checked);
- ``ifd_large``: ``score_ifd`` at SmolLM2-1.7B's shape (random weights from a config): tokens/s and MFU;
- ``quality``: ``score_quality`` with a DeBERTa-v3-large-shaped reward model (from a config), 1,000 rows;
- ``necessity``: ``score_necessity`` generation (SmolLM2, greedy, 128 new tokens) + reward, 256 rows;
- ``sft``: TRL SFT (``train_sft``) of SmolLM2 on 1,000 rows against a plain PyTorch loop on the same batches;
- ``fsdp_resume``: ``accelerate launch --config_file recipes/accelerate/fsdp.yaml`` (one process per GPU, at most 2)
  of ``train_sft`` on SmolLM2, killed after its step-2 sharded checkpoint and launched again: it must resume there
  and write a model folder that loads (a check, not a measurement; accelerate runs FSDP only on GPUs, so the CPU
  tests cannot check the sharding: ``recipes/accelerate/fsdp.yaml``).

Estimate for one H100/H200 (an estimate from the sizes, not a measurement): setup 30-60 s (wheels, GGUF join,
dequantisation), then 10-60 s per stage (fsdp_resume: two launches of ~20-30 s), 5-6 minutes in all. Caps: setup
120 s, each stage 45-90 s (``CAPS``), and
``--budget`` (450 s, setup included) bounds the whole run, so call 3 ends within 8 minutes.

Here, once, from the project root (needs PyPI and ../shared/data; writes only the ignored folder .device/)::

    python benchmarks/device_suite.py --prepare

Then the device calls, back to back (a machine stays warm 30 s after a call and $HOME survives only while it is
warm), within 15 minutes of device time (start 1-2 min; calls 1 and 2 carry 33 MB each and take seconds; call 3
carries about 38 MB plus the project's files and runs at most 8 minutes):

1. ``run(carry=[".device/a"], timeout_s=120, command="mkdir -p $HOME/m && cp .device/a/model.part1 $HOME/m/")``
2. ``run(carry=[".device/b"], timeout_s=120, command="cp .device/b/model.part2 $HOME/m/")``
3. ``run(carry=[".device/c"], timeout_s=540, command="PYTHONUNBUFFERED=1 python3 benchmarks/device_suite.py
   --carried .device/c --parts $HOME/m --out $OUT/device_suite.json 2>&1 | tee $OUT/device_suite.log")``
4. ``give_back()``; then here: ``python benchmarks/device_suite.py --from-json <files_at>/device_suite.json
   --results benchmarks/RESULTS.md``.

Call 3 installs the carried wheels that the machine lacks (``datasets``, ``trl``, ...) into ``$HOME/site``, joins
the GGUF from the three parts, converts it to a plain bf16 folder with ``hf_select.models`` (under
``$HOME/hf_select_cache``), and writes the JSON after every stage (what finished comes back even if the call is cut).
If the machine went back between the calls, the SmolLM2 stages record the missing part and the others still run
(with the carried tokenizer). A rerun of some stages (``--only STAGE[,STAGE]``, the same call 3 otherwise) reuses
the parts and the converted model while the machine is still warm; a fresh machine needs calls 1-2 again and at
least 4 minutes of device time left.

Run without a GPU and without ``--smoke``, it measures nothing and records every stage as "not measured: no GPU
available" (``--results`` then writes those rows).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import os
import platform
import random
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[1:1] = [str(ROOT)]  # the checkout's hf_select, also where nothing is installed
import device_results  # noqa: E402
import device_setup  # noqa: E402  (standard library only: safe before the carried wheels are installed)

STAGE_NAMES = ("ifd_smollm2", "kcenter", "ifd_large", "quality", "necessity", "sft", "fsdp_resume")
CAPS = {"setup": 120, "ifd_smollm2": 75, "kcenter": 60, "ifd_large": 60, "quality": 45, "necessity": 75, "sft": 75,
        "fsdp_resume": 90}
SMOKE_CAP = 180
DATASHEET_TFLOPS = {"H100": 989.4, "H200": 989.4}  # dense bf16, SXM parts
# Offline, and no progress bars: they would push the summary out of the tail of the call's output.
QUIET_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
             "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1",
             "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "train" / "alpaca_9k.json"


class StageTimeout(BaseException):
    """Raised in the main thread when a stage passes its cap (a BaseException, so no ``except Exception`` in the
    code under test turns it into a row status)."""


@contextlib.contextmanager
def time_cap(seconds: float) -> Iterator[None]:
    """Raise :class:`StageTimeout` in the main thread after ``seconds`` (SIGALRM; Unix)."""

    def handler(signum: int, frame: Any) -> None:
        raise StageTimeout

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _free_memory() -> float | None:
    """Collect garbage, return the GPU's cached blocks; the stage's peak GPU memory in GiB (None without CUDA)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return peak


def run_stage(fn: Callable[[Any, dict[str, Any]], None], ctx: Any, cap: float) -> dict[str, Any]:
    """Run one stage under its cap; the record keeps its metrics (also those measured before a failure), its status
    (ok, error, timeout), the error and the seconds."""
    record: dict[str, Any] = {"status": "running", "cap_s": cap, "metrics": {}}
    if ctx is not None:
        ctx.deadline = time.monotonic() + 0.7 * cap  # per-row loops stop here, so the stage can still finish itself
    t = time.perf_counter()
    try:
        with time_cap(cap):
            fn(ctx, record["metrics"])
        record["status"] = "ok"
    except StageTimeout:
        record.update(status="timeout", error=f"stopped at its time cap of {cap:.0f} s")
    except Exception as err:  # a failing stage is recorded, never fatal
        record.update(status="error", error=f"{type(err).__name__}: {err}"[:2000],
                      traceback=traceback.format_exc()[-3000:])
    record["seconds"] = time.perf_counter() - t
    record["peak_gpu_memory_gib"] = _free_memory()
    return record


def run_suite(stages: dict[str, Callable[[Any, dict[str, Any]], None]], ctx: Any, caps: dict[str, float],
              budget: float, report: dict[str, Any], save: Callable[[dict[str, Any]], None],
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``stages`` in order into ``report["stages"]``, each cap clipped to what is left of ``budget`` seconds
    (a stage with under 5 s left is skipped), saving the report after each and logging a line per stage.

    Example:
        >>> def ok(ctx, m): m["x"] = 1.0
        >>> def bad(ctx, m): raise ValueError("no")
        >>> r = run_suite({"a": bad, "b": ok}, None, {}, 60, {"stages": {}}, lambda r: None, log=lambda s: None)
        >>> [(k, v["status"]) for k, v in r["stages"].items()], r["stages"]["a"]["error"]
        ([('a', 'error'), ('b', 'ok')], 'ValueError: no')
    """
    start = time.perf_counter()
    for name, fn in stages.items():
        left = budget - (time.perf_counter() - start)
        cap = min(caps.get(name, SMOKE_CAP), left)
        if cap < 5:
            report["stages"][name] = {"status": "skipped", "error": f"no time left in the suite's budget of "
                                                                    f"{budget:.0f} s", "metrics": {}}
        else:
            log(f"[device_suite] {name}: running (cap {cap:.0f} s)")
            report["stages"][name] = run_stage(fn, ctx, cap)
        rec = report["stages"][name]
        log(f"[device_suite] {name}: {rec['status']} {rec.get('error', '')} "
            f"{json.dumps(_numbers(rec['metrics']))[:600]}")
        save(report)
    report["total_s"] = time.perf_counter() - start
    save(report)
    return report


def _numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _fail_after(fn: Callable[[Any, dict[str, Any]], None], name: str) -> Callable[[Any, dict[str, Any]], None]:
    """``--fail``: the stage runs in full, then raises (a check that failures are recorded and the rest goes on)."""

    def wrapped(ctx: Any, m: dict[str, Any]) -> None:
        fn(ctx, m)
        raise RuntimeError(f"injected failure after stage {name} finished (--fail {name})")

    return wrapped


def synthetic_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Alpaca-format rows of random words (the smoke run; no data file needed)."""
    words = ["the", "a", "list", "sort", "add", "two", "three", "numbers", "capital", "of", "france", "answer",
             "reverse", "string", "cat", "sat", "on", "mat", "write", "short", "poem", "explain", "why", "sky",
             "blue", "python", "code", "function", "returns", "sum"]
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        inst = " ".join(rng.choices(words, k=rng.randint(3, 12))).capitalize() + "?"
        inp = "" if i % 3 else " ".join(rng.choices(words, k=rng.randint(2, 6)))
        rows.append({"instruction": inst, "input": inp, "output": " ".join(rng.choices(words, k=rng.randint(2, 40)))})
    return rows


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0]}
    for dist in ("torch", "transformers", "trl", "datasets", "accelerate", "pyarrow", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[dist] = metadata.version(dist)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    return info


def measure_matmul_tflops() -> float:
    """bf16 8192^3 matrix products on the GPU (3 warm-ups, 10 timed)."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12


def setup(args: argparse.Namespace, m: dict[str, Any], holder: dict[str, Any]) -> None:
    """Install the missing wheels, load the rows, measure the matmul rate and rebuild SmolLM2 (full mode), or save
    the tiny LM (smoke). The context goes into ``holder["ctx"]`` before the slow part, so that a time-out there
    still leaves the stages that need no SmolLM2 to run."""
    if args.carried:
        t = time.perf_counter()
        m["installed_wheels"] = device_setup.install_missing(Path(args.carried), Path(args.site).expanduser())
        m["install_s"] = time.perf_counter() - t
    import torch
    from device_common import FULL, SMOKE, Ctx

    workdir = Path(tempfile.mkdtemp(prefix="device_suite-"))
    carried = Path(args.carried or ".")
    if args.smoke:
        torch.set_num_threads(args.threads or 1)
        rows = json.loads(Path(args.data).read_text()) if args.data else synthetic_rows(32)
        ctx = Ctx(device=torch.device("cpu"), dtype=torch.float32, sizes=SMOKE, rows=rows, workdir=workdir,
                  lm_error="the tiny LM was not saved")
    else:
        rows = json.loads((Path(args.data) if args.data else carried / device_setup.DATA_FILE).read_text())
        ctx = Ctx(device=torch.device("cuda"), dtype=torch.bfloat16, sizes=FULL, rows=rows, workdir=workdir,
                  lm_error="the SmolLM2 conversion did not finish")
        tokenizer = carried / device_setup.TOKENIZER_DIR
        ctx.tokenizer_path = str(tokenizer) if tokenizer.is_dir() else None
        gpu = torch.cuda.get_device_name(0)
        ctx.peak_tflops = args.peak_tflops or next((v for k, v in DATASHEET_TFLOPS.items() if k in gpu), None)
    m["rows"] = len(rows)
    holder["ctx"] = ctx
    from device_common import hs_smollm2_folder, hs_tiny_lm

    t = time.perf_counter()
    if args.smoke:
        ctx.lm_path = hs_tiny_lm(workdir / "tiny-lm")
    else:
        ctx.matmul_tflops = measure_matmul_tflops()
        m.update(peak_tflops=ctx.peak_tflops, matmul_tflops=ctx.matmul_tflops)
        folders = [Path(args.parts).expanduser(), carried]
        try:
            ctx.lm_path = hs_smollm2_folder(Path(args.cache).expanduser(),
                                            lambda place: device_setup.join_parts(folders, place))
        except Exception as err:  # the other stages still run
            ctx.lm_error = f"{type(err).__name__}: {err}"
            m["smollm2_error"] = ctx.lm_error
    m["small_lm_s"] = time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny models from configs, a few dozen rows.")
    p.add_argument("--prepare", action="store_true", help="Fill .device/ here for the device calls, then stop.")
    p.add_argument("--rows", type=int, default=1000, help="--prepare: rows of the source that travel.")
    p.add_argument("--root", default=str(ROOT), help="--prepare: the project root whose .device/ is filled.")
    p.add_argument("--source", default=str(DEFAULT_SOURCE), help="--prepare: the Alpaca JSON to take rows from.")
    p.add_argument("--carried", default=None, help="The carried folder (.device/c): wheels, data, tokenizer, part 3.")
    p.add_argument("--parts", default="~/m", help="Where the earlier calls left model.part1 and model.part2.")
    p.add_argument("--site", default="~/site", help="Where the missing wheels are installed.")
    p.add_argument("--cache", default="~/hf_select_cache", help="HF_SELECT_CACHE for the converted SmolLM2.")
    p.add_argument("--data", default=None, help="Alpaca JSON rows (default: the carried rows; smoke: synthetic).")
    p.add_argument("--out", default=None, help="Write the results JSON here (after every stage).")
    p.add_argument("--results", default=None, help="Write the rows into this RESULTS.md's suite section.")
    p.add_argument("--from-json", default=None, help="Write --results from a saved JSON; measure nothing.")
    p.add_argument("--only", default=None, help=f"Comma-separated stages (default: all of {','.join(STAGE_NAMES)}).")
    p.add_argument("--fail", default=None, help="Make this stage raise after it ran (tests the error path).")
    p.add_argument("--budget", type=float, default=None, help="Seconds for all stages (default 450; smoke 900).")
    p.add_argument("--peak-tflops", type=float, default=None, help="Peak for MFU (default: datasheet H100/H200).")
    p.add_argument("--threads", type=int, default=None, help="Smoke: torch CPU threads (default 1).")
    args = p.parse_args(argv)
    if args.prepare:
        tok_dir = None
        with contextlib.suppress(Exception):
            from hf_select.models import DEFAULT_LM, resolve_model_path

            tok_dir = Path(resolve_model_path(DEFAULT_LM))
        info = device_setup.prepare(Path(args.root), Path(args.source), args.rows, tokenizer_dir=tok_dir)
        print(json.dumps(info, indent=2))
        return None
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        device_results.write_section(Path(args.results or HERE / "RESULTS.md"), report)
        return report
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    names = [n for n in (args.only.split(",") if args.only else STAGE_NAMES)]
    unknown = sorted(set(names) - set(STAGE_NAMES)) + ([args.fail] if args.fail and args.fail not in names else [])
    if unknown:
        p.error(f"--only/--fail name unknown or unselected stages {unknown}; stages: {', '.join(STAGE_NAMES)}")
    report: dict[str, Any] = {
        "suite": "benchmarks/device_suite.py", "mode": "smoke" if args.smoke else "full",
        "command": "python3 benchmarks/device_suite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "stages": {}}

    def save(r: dict[str, Any]) -> None:
        if args.out:
            path = Path(args.out)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".tmp").write_text(json.dumps(r, indent=2, default=str))
            os.replace(path.with_suffix(".tmp"), path)

    import torch

    if not args.smoke and not torch.cuda.is_available():
        from device_common import FULL

        report.update(machine=machine_info(), sizes=dataclasses.asdict(FULL))
        for name in names:
            report["stages"][name] = {"status": "not_measured", "error": "no GPU available", "metrics": {}}
    else:
        holder: dict[str, Any] = {}
        setup_rec = run_stage(lambda _, m: setup(args, m, holder), None, CAPS["setup"])
        ctx = holder.get("ctx")
        report["stages"]["setup"] = setup_rec
        report["machine"] = machine_info()
        if ctx is not None:
            report["sizes"] = dataclasses.asdict(ctx.sizes)
            import device_stages

            stages = {n: device_stages.STAGES[n] for n in names}
            if args.fail:
                stages[args.fail] = _fail_after(stages[args.fail], args.fail)
            caps = {n: SMOKE_CAP for n in names} if args.smoke else CAPS
            budget = args.budget or (900 if args.smoke else 450)
            run_suite(stages, ctx, caps, budget - setup_rec["seconds"], report, save,
                      log=lambda line: print(line, flush=True))
    save(report)
    if args.results:
        device_results.write_section(Path(args.results), report)
    for name, rec in report["stages"].items():
        line = device_results.summary(name, rec) if name in device_results.TARGETS else rec.get("error", "")
        print(f"[device_suite] {name} ({rec['status']}, {rec.get('seconds', 0):.0f} s): {line}"[:700], flush=True)
    bad = [n for n, r in report["stages"].items() if r["status"] != "ok"]
    print(f"[device_suite] done: {len(report['stages']) - len(bad)} ok, not ok: {bad or 'none'}"
          + (f"; JSON {args.out}" if args.out else ""), flush=True)
    return report


if __name__ == "__main__":
    main()
