"""Determinism: the same inputs, config and seed give the same selection, byte for byte, across runs and between one
and two processes (``torchrun --nproc_per_node 2`` with gloo CPU processes).
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from hf_select.cli import main

ROOT = Path(__file__).resolve().parents[1]

# Scores IFD and embeddings with .score(..., cpu=True), selects with seeded steps, and (on the main process) saves the
# selection plus every score as JSON. Each process also notes how many shards it scored itself.
PIPELINE = r'''
import json, os, sys
from pathlib import Path

from datasets import Dataset

from hf_select.scoring.base import BaseScorer
from hf_select.scoring.embed import EmbedConfig, Embedder
from hf_select.scoring.ifd import IFDConfig, IFDScorer
from hf_select.selection import select

STEPS = [
    {"step": "ifd_rule", "fraction": 0.8, "max_ifd": 10.0},
    {"step": "kcenter", "k": 6},
    {"step": "random", "count": 4},
]


def main(model, rows_file, runs, work):
    """Shards under ``runs`` (cache=False: scored afresh), results under ``work``."""
    runs, work = Path(runs), Path(work)
    rank = int(os.environ.get("RANK", "0"))
    rows = [json.loads(line) for line in Path(rows_file).read_text().splitlines()]
    ds = Dataset.from_list(rows)
    mine = []
    real = BaseScorer.score.__globals__["write_table_atomic"]

    def counting(table, path):
        mine.append(Path(path).name)
        real(table, path)

    BaseScorer.score.__globals__["write_table_atomic"] = counting
    try:
        scored = IFDScorer(IFDConfig(model_name_or_path=model, template="chat")).score(
            ds, shard_size=5, run_dir=runs / "ifd", cache=False, progress=False, cpu=True)
        scored = Embedder(EmbedConfig(model_name_or_path=model, backend="causal_lm")).score(
            scored, shard_size=5, run_dir=runs / "embed", cache=False, progress=False, cpu=True)
    finally:
        BaseScorer.score.__globals__["write_table_atomic"] = real
    result = select(scored, STEPS, seed=3)
    work.mkdir(parents=True, exist_ok=True)
    (work / f"shards-rank{rank}.json").write_text(json.dumps(mine))
    if rank == 0:
        result.save(work / "selection")
        cols = {c: [repr(v) for v in scored[c]] for c in ("ifd", "ifd_status", "loss_conditioned", "embedding")}
        (work / "scores.json").write_text(json.dumps(cols))


if __name__ == "__main__":
    main(*sys.argv[1:])
'''


def rows_file(tmp_path: Path) -> Path:
    rows = [{"instruction": f"Describe the number {i}.", "input": "", "output": f"{i} is " + "big " * (i % 5) + "."}
            for i in range(36)]
    rows[4]["output"] = ""
    rows[9] = {"instruction": None, "input": "", "output": "x"}
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def selection_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a saved selection, with the per-step wall-clock seconds taken out of provenance.json."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "provenance.json":
            info = json.loads(data)
            for step in info["steps"]:
                step.pop("seconds")
            data = json.dumps(info, sort_keys=True).encode()
        out[str(path.relative_to(folder))] = data
    return out


def run_in_process(script: Path, *args: str) -> None:
    argv = sys.argv
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv


@pytest.fixture(scope="module")
def one_process(tiny_lm_path, tmp_path_factory):
    """The pipeline run once in this process: (work folder, script, rows file, shard root, results folder)."""
    work = tmp_path_factory.mktemp("determinism")
    script = work / "pipeline.py"
    script.write_text(PIPELINE)
    data = rows_file(work)
    # every run uses the same shard folders (as reruns with the default cache folder would), scored afresh
    run_in_process(script, str(tiny_lm_path), str(data), str(work / "runs"), str(work / "one"))
    return script, data, work / "runs", work / "one"


def test_same_selection_byte_for_byte_across_runs(one_process, tiny_lm_path, tmp_path):
    script, data, runs, first = one_process
    run_in_process(script, str(tiny_lm_path), str(data), str(runs), str(tmp_path / "again"))
    a, b = selection_bytes(first / "selection"), selection_bytes(tmp_path / "again" / "selection")
    assert a == b and any(name.endswith(".arrow") for name in a)
    assert (first / "scores.json").read_bytes() == (tmp_path / "again" / "scores.json").read_bytes()
    chosen = json.loads((first / "selection" / "provenance.json").read_text())
    assert chosen["selected_rows"] == 4 and chosen["seed"] == 3


def test_cli_select_is_byte_for_byte_repeatable(tiny_lm_path, tmp_path):
    data = rows_file(tmp_path)
    assert main(["score", "ifd", "--dataset", str(data), "--model", str(tiny_lm_path), "--output",
                 str(tmp_path / "scored")]) == 0
    for name in ("a", "b"):
        assert main(["select", "--dataset", str(tmp_path / "scored"), "--output", str(tmp_path / name), "--seed", "5",
                     "--step", "{step: ifd_rule, fraction: 0.9, max_ifd: 10}",
                     "--step", "{step: random, fraction: 0.5}"]) == 0
    assert selection_bytes(tmp_path / "a") == selection_bytes(tmp_path / "b")


@pytest.mark.multiprocess
def test_one_and_two_processes_give_the_same_selection(one_process, tiny_lm_path, tmp_path):
    script, data, runs, one = one_process
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(tiny_lm_path), str(data), str(runs), str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    per_rank = [json.loads((tmp_path / "two" / f"shards-rank{r}.json").read_text()) for r in (0, 1)]
    assert per_rank[0] and per_rank[1]  # both processes scored shards: the work was really split
    assert not set(per_rank[0]) & set(per_rank[1])
    assert (one / "scores.json").read_bytes() == (tmp_path / "two" / "scores.json").read_bytes()
    assert selection_bytes(one / "selection") == selection_bytes(tmp_path / "two" / "selection")
