"""Benchmarks of hf_select's k-center greedy and facility location.

k-center greedy is compared with the straightforward loop MoDS uses (numpy, one
``sklearn.metrics.pairwise_distances`` call per new center, float64, ``argmax`` of the running minimum), on the same
random embeddings and from the same first center; the picks must be identical.

    python benchmarks/kcenter.py cpu --threads 2     # 50,000 x 384, k = 500, CPU: the default (block 32), the old
                                                     # loop (block 1) and the MoDS loop (target: >= 3x, same picks)
    python benchmarks/kcenter.py gpu                 # 1,000,000 x 768, k = 10,000 on CUDA (target: <= 30 s)
    python benchmarks/kcenter.py cpu-1m              # the 1M x 768 case on CPU, both sides extrapolated from a slice
    python benchmarks/kcenter.py facility            # facility location, 100,000 x 384, k = 1,000, CPU
    python benchmarks/kcenter.py all --write         # everything, and the rows into benchmarks/RESULTS.md

The reference for 1M rows is too slow to run whole: it is timed for ``--slice`` picks (its cost per pick is
constant: one pass over all rows) and extrapolated; its picks on the slice must equal ours.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path


def _threads_from_argv() -> int | None:
    """``--threads N`` must reach OpenBLAS/OpenMP before numpy and torch load."""
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return None


_THREADS = _threads_from_argv()
if _THREADS:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(_THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402

if _THREADS:
    torch.set_num_threads(_THREADS)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_select.selection import facility_location, k_center_greedy, knn_similarity_graph  # noqa: E402
from hf_select.selection.clusters import facility_location_objective  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## k-center greedy and facility location"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads), load {load:.1f}"


def threads_arg() -> str:
    return f" --threads {_THREADS}" if _THREADS else ""


def gpu_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"


def reference_kcenter(x64: np.ndarray, k: int, first: int, metric: str = "euclidean") -> list[int]:
    """The MoDS-style loop: float64, a pairwise_distances call for each new center, argmax of the running min."""
    from sklearn.metrics import pairwise_distances

    min_d = np.full(len(x64), np.inf)
    picks = []
    nxt = first
    for _ in range(k):
        picks.append(nxt)
        d = pairwise_distances(x64, x64[nxt : nxt + 1], metric=metric)[:, 0]
        np.minimum(min_d, d, out=min_d)
        min_d[nxt] = -np.inf  # never pick a center twice
        nxt = int(np.argmax(min_d))
    return picks


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def data(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)


def row(name: str, where: str, sizes: str, ours: float, ref: float | None, same: str, command: str,
        note: str = "") -> str:
    speed = f"{ref / ours:.1f}x" if ref else "-"
    ref_s = f"{ref:.1f}" if ref is not None else "-"
    return f"| {name} | {where} | {sizes} | {ours:.2f} | {ref_s} | {speed} | {same} | `{command}` | {note} |"


def matvec_note(x: np.ndarray, block: int, reps: int = 20) -> str:
    """Seconds of one pass over the embeddings: a matrix-vector product in float32, bf16 and fp16 (what 16-bit
    storage would buy) and one block of ``block`` columns in float32 (what blocking costs)."""
    t32 = torch.from_numpy(x)
    c = t32[:block].clone()
    out = []
    for name, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        xx, cc = t32.to(dtype), c[0].to(dtype)
        torch.mv(xx, cc)
        t = time.perf_counter()
        for _ in range(reps):
            torch.mv(xx, cc)
        out.append(f"{name} {(time.perf_counter() - t) / reps * 1e3:.1f} ms")
    c @ t32.T
    t = time.perf_counter()
    for _ in range(max(1, reps // 4)):
        c @ t32.T
    blk = (time.perf_counter() - t) / max(1, reps // 4) * 1e3
    return f"one matrix-vector pass: {', '.join(out)}; one float32 block of {block} columns {blk:.1f} ms"


def bench_cpu(rows: int, dim: int, k: int, precision: str, block: int) -> list[str]:
    """One run, same embeddings: ours with ``block`` (the default), ours with block 1 (the old mixed loop: one
    matrix-vector product per pick), and the MoDS-style reference from our first center; every pick compared."""
    x = data(rows, dim)
    x64 = x.astype(np.float64)
    # warm-up outside the timings: sklearn's import and the first call of each side
    reference_kcenter(x64[:100], 3, 0)
    for b in (block, 1):
        k_center_greedy(x[:100], 3, seed=0, device="cpu", precision=precision, block=b)
    t = time.perf_counter()
    ours = k_center_greedy(x, k, seed=0, device="cpu", precision=precision, block=block)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    old = k_center_greedy(x, k, seed=0, device="cpu", precision=precision, block=1)
    t_old = time.perf_counter() - t
    t = time.perf_counter()
    ref = reference_kcenter(x64, k, ours[0])
    t_ref = time.perf_counter() - t

    def same(picks: list[int]) -> str:
        return "yes" if picks == ref else f"NO (first difference at pick {first_difference(picks, ref)})"

    cmd = (f"python benchmarks/kcenter.py cpu --rows {rows} --dim {dim} --k {k} --precision {precision}"
           f" --block {block}{threads_arg()}")
    where, sizes = machine(), f"{rows:,} x {dim}, k = {k:,}"
    note = f"reference: numpy + sklearn pairwise_distances, float64; same run: block 1 took {t_old:.2f} s, "
    note += f"block {block} is {t_old / t_ours:.1f}x that; {matvec_note(x, block)}"
    return [
        row(f"k-center greedy ({precision}, block {block}: default)", where, sizes, t_ours, t_ref, same(ours), cmd,
            note),
        row(f"k-center greedy ({precision}, block 1: the old loop)", where, sizes, t_old, t_ref, same(old), cmd,
            f"reference: numpy + sklearn pairwise_distances, float64; same run as the block {block} row"),
    ]


def bench_large(device: str, rows: int, dim: int, k: int, slice_picks: int) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        cmd = f"python benchmarks/kcenter.py gpu --rows {rows} --dim {dim} --k {k}"
        return (f"| k-center greedy (mixed) | GPU | {rows:,} x {dim}, k = {k:,} | not measured: no GPU available | - "
                f"| - | - | `{cmd}` | target <= 30 s on one H100 |")
    x = data(rows, dim)
    where = f"{gpu_name()}; host {machine()}" if device == "cuda" else machine()
    if device == "cuda":
        torch.cuda.synchronize()
    picks_run = k if device == "cuda" else slice_picks
    t = time.perf_counter()
    ours = k_center_greedy(x, picks_run, seed=0, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    t_ours = time.perf_counter() - t
    measured = f"measured for all {k:,} picks"
    if picks_run < k:  # CPU: extrapolate our own time too, from the per-pick cost after the fixed setup
        t = time.perf_counter()
        k_center_greedy(x, 1, seed=0, device=device)
        setup = time.perf_counter() - t
        t_ours = setup + (t_ours - setup) * k / picks_run
        measured = (f"extrapolated from {picks_run} picks plus the setup (the float64 re-check grows with the "
                    "number of centers, so the real time is a little higher)")
    x64 = x.astype(np.float64)
    del x
    t = time.perf_counter()
    ref = reference_kcenter(x64, slice_picks, ours[0])
    t_ref = (time.perf_counter() - t) * k / slice_picks
    same = f"yes (first {slice_picks} picks)" if ours[:slice_picks] == ref else "NO"
    name = "gpu" if device == "cuda" else "cpu-1m"
    cmd = f"python benchmarks/kcenter.py {name} --rows {rows} --dim {dim} --k {k} --slice {slice_picks}{threads_arg()}"
    return row("k-center greedy (mixed)", where, f"{rows:,} x {dim}, k = {k:,}", t_ours, t_ref, same, cmd,
               f"ours {measured}; reference extrapolated from {slice_picks} picks")


def bench_facility(rows: int, dim: int, k: int, n_neighbors: int, slice_picks: int) -> str:
    x = data(rows, dim, seed=1)
    t = time.perf_counter()
    graph = knn_similarity_graph(x, n_neighbors, device="cpu")
    t_graph = time.perf_counter() - t
    t = time.perf_counter()
    res = facility_location(x, k, graph=graph, return_result=True)
    t_lazy = time.perf_counter() - t
    # plain (non-lazy) greedy on the same graph: all gains recomputed each pick, vectorised; timed on a slice
    by_col = graph.T.tocsr()
    cur = np.zeros(rows)
    picks = []
    t = time.perf_counter()
    for _ in range(slice_picks):
        gains_data = np.maximum(by_col.data - cur[by_col.indices], 0.0)
        gains = np.add.reduceat(gains_data, by_col.indptr[:-1])
        gains[picks] = -1.0
        j = int(np.argmax(gains))
        picks.append(j)
        s, e = by_col.indptr[j], by_col.indptr[j + 1]
        cur[by_col.indices[s:e]] = np.maximum(cur[by_col.indices[s:e]], by_col.data[s:e])
    t_plain = (time.perf_counter() - t) * k / slice_picks
    rand = np.random.default_rng(0).choice(rows, k, replace=False)
    obj, obj_rand = res.objective[-1], facility_location_objective(graph, rand)
    same = f"yes (first {slice_picks} picks)" if res.indices[:slice_picks] == picks else "NO"
    cmd = (f"python benchmarks/kcenter.py facility --rows {rows} --dim {dim} --k {k} --neighbors {n_neighbors}"
           f" --slice {slice_picks}{threads_arg()}")
    note = (f"k-NN graph ({n_neighbors} neighbours, cosine, torch blocks) {t_graph:.1f} s + lazy greedy "
            f"{t_lazy:.2f} s ({res.evaluations:,} gain evaluations) vs plain greedy {t_plain:.1f} s, extrapolated "
            f"from {slice_picks} picks ({t_plain / t_lazy:.0f}x on the greedy alone); objective {obj:,.1f} vs "
            f"{obj_rand:,.1f} for a random {k:,} (max {res.max_objective:,.0f})")
    return row("facility location (lazy greedy)", machine(), f"{rows:,} x {dim}, k = {k:,}", t_graph + t_lazy,
               t_plain + t_graph, same, cmd, note)


def _command_of(line: str) -> str | None:
    found = re.search(r"`(python benchmarks/kcenter\.py [^`]*)`", line)
    return found.group(1) if found else None


def write_results(lines: list[str]) -> None:
    """Put the rows into this script's section of RESULTS.md: a row with the same command is replaced, others kept
    (so runs with different options accumulate); other sections are left alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(text)
    old_rows = [ln for ln in found.group(0).splitlines() if _command_of(ln)] if found else []
    new_commands = {_command_of(ln) for ln in lines}
    rows = [ln for ln in old_rows if _command_of(ln) not in new_commands] + lines
    header = [
        SECTION,
        "",
        "Random standard-normal float32 embeddings (seed 0). Seconds are wall-clock for one run; the reference of a",
        "k-center row is the MoDS-style loop (numpy + `sklearn.metrics.pairwise_distances` per new center, float64)",
        "started from our first center. `mixed` = float32 distances with near-ties re-measured in float64;",
        "`block m` = the distances of up to m likely next centers from one matrix-matrix product (block 1: one",
        "matrix-vector product per pick, the loop before blocking).",
        "Facility location: ours = k-NN graph + lazy greedy; reference = the same graph + plain greedy.",
        "The machine column gives the 1-minute load average at the start: these 2 cores were shared with other",
        "jobs, so `--threads 1` rows (both sides single-threaded) are the fairer comparison there.",
        "",
        "| benchmark | machine | sizes | ours (s) | reference (s) | speedup | identical picks | command | notes |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    block = "\n".join(header) + "\n"
    text = pattern.sub(lambda _: block, text) if found else text.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["cpu", "gpu", "cpu-1m", "facility", "all"])
    p.add_argument("--rows", type=int, default=None)
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--slice", type=int, default=20, help="picks timed for extrapolated references")
    p.add_argument("--neighbors", type=int, default=32)
    p.add_argument("--precision", default="mixed", choices=["mixed", "float64"])
    p.add_argument("--block", type=int, default=32, help="k_center_greedy's block (its default: 32)")
    p.add_argument("--write", action="store_true", help="write the rows into benchmarks/RESULTS.md")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for numpy/OpenBLAS and torch alike (default: their defaults)")
    a = p.parse_args()
    lines = []
    if a.what in ("cpu", "all"):
        lines += bench_cpu(a.rows or 50_000, a.dim or 384, a.k or 500, a.precision, a.block)
        if a.what == "all":
            lines += bench_cpu(50_000, 384, 500, "float64", a.block)
    if a.what in ("gpu", "all"):
        lines.append(bench_large("cuda", a.rows or 1_000_000, a.dim or 768, a.k or 10_000, max(a.slice, 50)))
    if a.what in ("cpu-1m", "all"):
        lines.append(bench_large("cpu", a.rows or 1_000_000, a.dim or 768, a.k or 10_000, a.slice))
    if a.what in ("facility", "all"):
        lines.append(bench_facility(a.rows or 100_000, a.dim or 384, a.k or 1_000, a.neighbors, a.slice))
    for line in lines:
        print(line, flush=True)
    if a.write:
        write_results(lines)
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
