"""benchmarks/kcenter.py and benchmarks/sft_cpu.py run at tiny sizes, so they cannot rot before the idle runs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_kcenter_cpu_rows_compare_default_old_loop_and_mods():
    bench = _load("kcenter")
    lines = bench.bench_cpu(600, 16, 12, "mixed", 8)
    assert len(lines) == 2
    assert "block 8: default" in lines[0] and "block 1: the old loop" in lines[1]
    for line in lines:
        cells = [c.strip() for c in line.split("|")]
        assert cells[7] == "yes", line  # identical picks to the MoDS-style float64 loop
        assert "--block 8" in line
    assert "bf16" in lines[0] and "fp16" in lines[0]  # the 16-bit matrix-vector timings are reported


@pytest.mark.slow
def test_sft_cpu_smoke(tmp_path):
    bench = _load("sft_cpu")
    if not bench.DATA.exists():
        pytest.skip(f"{bench.DATA} is absent")
    out = tmp_path / "sft.json"
    assert bench.main(["--rows", "8", "--steps", "1", "--cases", "fp32-t1", "--trainer", "hf-select",
                       "--json", str(out)]) == 0
    (res,) = json.loads(out.read_text())
    assert res["trainer_class"] == "CompletionHeadSFTTrainer" and res["steps"] == 1
    assert res["max_step_loss_diff"] < 1e-4
    assert res["tokens"] > 0 and res["trl_tokens_s"] > 0 and res["plain_tokens_s"] > 0
