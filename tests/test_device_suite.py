"""The GPU suite (``benchmarks/device_suite.py``) cannot rot before a GPU is there: its ``--smoke`` run (CPU, tiny
models) measures every stage, a stage that raises is recorded and the rest goes on, a stage past its cap is stopped,
and what travels to the device machine (data, model parts, wheels) is packed and unpacked as the device needs.
No timed assertions: the numbers of a smoke run are no performance figure.
"""

from __future__ import annotations

import doctest
import importlib
import json
import math
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import device_results  # noqa: E402
import device_setup  # noqa: E402
import device_suite  # noqa: E402

# The metrics each stage must report when it succeeds (beyond "some number").
KEYS = {
    "ifd_smollm2": ("score_ifd_rows_s", "score_ifd_tokens_s", "loop_rows_s", "speedup_vs_loop",
                    "plain_forward_tokens_s", "pct_of_plain_forward", "spearman_vs_fp32_loop",
                    "default_layout_rows_s"),
    "kcenter": ("seconds", "picks_s"),
    "ifd_large": ("score_ifd_tokens_s", "score_ifd_tflops", "plain_forward_tokens_s", "plain_forward_tflops"),
    "quality": ("rows_s", "tokens_s", "loop_rows_s"),
    "necessity": ("rows_s", "generated_tokens_s", "loop_rows_s"),
    "sft": ("trl_tokens_s", "plain_tokens_s", "trl_pct_of_plain", "tokens"),
    "fsdp_resume": ("first_launch_s", "second_launch_s", "resumed_from_step", "global_step", "steps_after_resume",
                    "max_weight_change"),
}


def _numbers(metrics: dict) -> list[float]:
    return [v for v in metrics.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run for the module, with ``--fail quality``: quality runs, then raises."""
    out = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(BENCH / "device_suite.py"), "--smoke", "--fail", "quality", "--out",
           str(out / "suite.json"), "--results", str(out / "RESULTS.md")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "suite.json").read_text()), (out / "RESULTS.md").read_text(), done.stdout


def test_smoke_measures_every_stage(smoke):
    report, _, _ = smoke
    assert report["mode"] == "smoke" and report["stages"]["setup"]["status"] == "ok"
    assert list(report["stages"]) == ["setup", *device_suite.STAGE_NAMES]
    for name in device_suite.STAGE_NAMES:
        rec = report["stages"][name]
        numbers = _numbers(rec["metrics"])
        assert numbers and all(math.isfinite(v) for v in numbers), (name, rec)
        if name != "quality":
            assert rec["status"] == "ok", (name, rec.get("error"), rec.get("traceback"))
        for key in KEYS[name]:
            assert key in rec["metrics"], (name, key)


def test_smoke_references_agree(smoke):
    """The references compute what the code under test computes: not a speed, a check the suite is measuring
    the right thing."""
    stages = {k: v["metrics"] for k, v in smoke[0]["stages"].items()}
    ifd = stages["ifd_smollm2"]
    assert ifd["score_ifd_scored_rows"] == ifd["score_ifd_rows"] == 24
    assert ifd["loop_rows"] == 8 and ifd["fp32_scorer_max_rel_diff_vs_loop"] < 1e-4  # same layout, same scores
    assert ifd["spearman_vs_fp32_loop"] > 0.99  # fp32 in the smoke run
    assert stages["kcenter"]["identical_checked_picks"] is True and stages["kcenter"]["picks"] == 30
    assert stages["quality"]["max_abs_diff_vs_loop"] < 1e-4
    sft = stages["sft"]
    assert sft["steps"] == 4 and sft["tokens"] == sft["trl_reported_tokens"]  # the recorded batches are TRL's
    assert math.isfinite(sft["plain_last_loss"])
    fsdp = stages["fsdp_resume"]  # killed after checkpoint-2, relaunched: resumed there and ran steps 3-4 only
    assert (fsdp["resumed_from_step"], fsdp["global_step"], fsdp["steps_after_resume"]) == (2, 4, 2)
    assert fsdp["checkpoints_left"] == 0 and fsdp["final_model_loads"] is True and fsdp["max_weight_change"] > 0
    assert "model.safetensors" in fsdp["model_folder"] and "config.json" in fsdp["model_folder"]
    # a CPU: accelerate does not shard (the sharding checks run on the GPU only)
    assert fsdp["expect_fsdp"] is False and fsdp["distributed_type"] == "NO" and fsdp["processes"] == 1


def test_a_failing_stage_is_recorded_and_the_suite_goes_on(smoke):
    report, results, stdout = smoke
    rec = report["stages"]["quality"]
    assert rec["status"] == "error" and "injected failure" in rec["error"] and "Traceback" in rec["traceback"]
    assert "rows_s" in rec["metrics"]  # what it measured before the error stays
    assert report["stages"]["necessity"]["status"] == report["stages"]["sft"]["status"] == "ok"
    assert "quality (error" in stdout and f"done: {len(device_suite.STAGE_NAMES)} ok" in stdout  # setup, not quality


def test_smoke_rows_in_results(smoke):
    _, results, _ = smoke
    rows = [ln for ln in results.splitlines() if ln.startswith("| ") and not ln.startswith("| stage ")]
    assert [r.split(" | ")[0][2:] for r in rows] == list(device_suite.STAGE_NAMES)
    assert all("smoke (CPU, tiny sizes; not a performance figure)" in r for r in rows)
    assert "error: RuntimeError: injected failure" in rows[3] and "measured before:" in rows[3]


def test_run_suite_caps_errors_and_budget():
    def ok(ctx, m):
        m["x"] = 1.5

    def fails(ctx, m):
        m["before"] = 2.0
        raise ValueError("broken on purpose")

    def hangs(ctx, m):
        m["started"] = 1.0
        time.sleep(30)

    saved = []
    report = device_suite.run_suite({"a": fails, "c": ok, "b": hangs, "d": ok}, None, {"b": 6.0}, 10.5,
                                    {"stages": {}}, lambda r: saved.append(json.dumps(r)))
    st = report["stages"]
    assert st["a"]["status"] == "error" and st["a"]["error"] == "ValueError: broken on purpose"
    assert st["a"]["metrics"] == {"before": 2.0}  # measured before the error: kept
    assert st["c"]["status"] == "ok" and st["c"]["metrics"] == {"x": 1.5}  # after a failure the suite goes on
    assert st["b"]["status"] == "timeout" and st["b"]["metrics"] == {"started": 1.0} and st["b"]["seconds"] < 15
    assert st["d"]["status"] == "skipped" and "budget" in st["d"]["error"]  # b's 6 s left under 5 s of 10.5
    assert len(saved) == 5 and json.loads(saved[0])["stages"]["a"]["status"] == "error"  # saved after each stage


def test_full_mode_without_gpu_measures_nothing(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for key, value in device_suite.QUIET_ENV.items():  # main() sets them; restored after the test
        monkeypatch.setenv(key, os.environ.get(key, value))
    out = tmp_path / "r.json"
    report = device_suite.main(["--out", str(out), "--results", str(tmp_path / "R.md")])
    assert {r["status"] for r in report["stages"].values()} == {"not_measured"}
    assert json.loads(out.read_text())["stages"]["kcenter"]["error"] == "no GPU available"
    text = (tmp_path / "R.md").read_text()
    assert text.count("not measured: no GPU available") == len(device_suite.STAGE_NAMES)
    assert text.count(device_results.HEADING) == 1


def test_results_section_replaces_only_the_stages_run(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Other\n\nkept\n")
    none = {"mode": "full", "stages": {n: {"status": "not_measured", "error": "no GPU available", "metrics": {}}
                                       for n in device_suite.STAGE_NAMES}}
    device_results.write_section(path, none)
    device_results.write_section(path, none)
    measured = {"mode": "full", "machine": {"gpu": "NVIDIA H200", "torch": "2.11"}, "command": "python3 x",
                "stages": {"kcenter": {"status": "ok", "metrics": {"seconds": 12.5, "picks_s": 800.0,
                                                                   "checked_picks": 50, "first_difference": 50,
                                                                   "identical_checked_picks": True}}}}
    device_results.write_section(path, measured)
    text = path.read_text()
    assert text.count(device_results.HEADING) == 1 and "## Other\n\nkept" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| stage ")]
    assert len(rows) == len(device_suite.STAGE_NAMES) and sum("not measured" in r for r in rows) == len(rows) - 1
    assert "12.5 s (800 picks/s); first 50 picks identical" in rows[1] and "NVIDIA H200" in rows[1]


def test_the_suite_plans_the_fsdp_resume_stage_with_the_shipped_fsdp_config(tmp_path):
    """FSDP cannot run on CPU processes (accelerate enables it only for GPU-type devices), so the FSDP train + resume
    check is a GPU-suite stage: planned, capped, reported, and launched with recipes/accelerate/fsdp.yaml as shipped
    except for the process count and port."""
    import device_common
    import device_stages
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    assert "fsdp_resume" in device_suite.STAGE_NAMES and "fsdp_resume" in device_stages.STAGES
    assert device_suite.CAPS["fsdp_resume"] >= 60 and "fsdp_resume" in device_results.TARGETS
    assert [device_common.fsdp_processes("cuda", n) for n in (1, 2, 8)] == [1, 2, 2]
    ctx = device_common.Ctx(device=__import__("torch").device("cpu"), dtype=None, sizes=device_common.SMOKE,
                            rows=device_suite.synthetic_rows(20), workdir=tmp_path, lm_path="/models/lm")
    cmd, args = device_common.hs_fsdp_launch(ctx, tmp_path, 2, 29999)
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "fsdp.yaml")]
    assert cmd[-1] == str(tmp_path / "train_fsdp.py") and (tmp_path / "train_fsdp.py").is_file()
    compile((tmp_path / "train_fsdp.py").read_text(), "train_fsdp.py", "exec")
    assert 0 < args["stop_at"] < args["steps"] and args["model"] == "/models/lm" and args["bf16"] is False
    assert len(json.loads((tmp_path / "rows.json").read_text())) == device_common.SMOKE.fsdp_rows
    launched = load_config_from_file(str(tmp_path / "fsdp.yaml"))
    assert launched.distributed_type == DistributedType.FSDP and launched.num_processes == 2
    shipped = yaml.safe_load((ROOT / "recipes" / "accelerate" / "fsdp.yaml").read_text())
    written = yaml.safe_load((tmp_path / "fsdp.yaml").read_text())
    assert written["fsdp_config"] == shipped["fsdp_config"]  # FSDP2, full shard, sharded checkpoints, as shipped
    assert {k for k in shipped if shipped[k] != written[k]} == {"num_processes"} and written["main_process_port"]


def test_parts_split_and_join(tmp_path):
    blob = os.urandom(10_000)
    (tmp_path / "model.gguf").write_bytes(blob)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    device_setup.split_file(tmp_path / "model.gguf", [a, b, c], size=4000)
    home = tmp_path / "home"
    home.mkdir()
    for folder in (a, b):  # the first two calls copy their part to $HOME/m
        (home / next(folder.iterdir()).name).write_bytes(next(folder.iterdir()).read_bytes())
    target = device_setup.join_parts([home, c], tmp_path / "out" / "x.gguf")
    assert target.read_bytes() == blob
    (home / "model.part2").unlink()  # the machine went back between the calls
    with pytest.raises(FileNotFoundError, match="model.part1 and model.part2"):
        device_setup.join_parts([home, c], tmp_path / "out" / "y.gguf")
    with pytest.raises(ValueError, match="needs more than 3 parts"):
        device_setup.split_file(tmp_path / "model.gguf", [a, b, c], size=1000)


def test_prepare_copies_the_rows(tmp_path):
    source = tmp_path / "alpaca.json"
    source.write_text(json.dumps([{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(20)]))
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    info = device_setup.prepare(tmp_path / "root", source, 7, model=False, wheels=False, tokenizer_dir=tok)
    carried = tmp_path / "root" / ".device" / "c"
    assert info["rows"] == 7 and json.loads((carried / device_setup.DATA_FILE).read_text())[6]["output"] == "a6"
    assert (carried / device_setup.TOKENIZER_DIR / "tokenizer.json").is_file()


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel of one module ``name`` that defines ``VALUE = 42``."""
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{k},,\n" for k in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in files.items():
            zf.writestr(k, v)
    return path


def test_install_missing_installs_only_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    carried = tmp_path / "c"
    carried.mkdir()
    _wheel(carried, "hfsel_device_probe")
    _wheel(carried, "pytest")  # importable here: never installed
    assert [w.name for w in device_setup.missing_wheels(carried)] == ["hfsel_device_probe-0.1-py3-none-any.whl"]
    installed = device_setup.install_missing(carried, tmp_path / "site")
    assert installed == ["hfsel_device_probe-0.1-py3-none-any.whl"]
    assert importlib.import_module("hfsel_device_probe").VALUE == 42
    assert os.environ["PYTHONPATH"].startswith(str(tmp_path / "site"))
    sys.modules.pop("hfsel_device_probe", None)


@pytest.mark.parametrize("name", ["device_suite", "device_setup", "device_results", "device_common",
                                  "device_stages"])
def test_module_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0, result
