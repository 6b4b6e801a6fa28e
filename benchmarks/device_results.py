"""The GPU suite's section of ``benchmarks/RESULTS.md``: one row per stage, written from the suite's JSON report.

A run replaces the rows of the stages it ran and keeps the others, so ``--only`` reruns add up. A stage that was not
measured, failed or ran past its cap says so in its row; a smoke run's rows say it is no performance figure.

Example:
    >>> report = {"mode": "full", "machine": {}, "stages": {"kcenter": {"status": "not_measured",
    ...           "error": "no GPU available", "metrics": {}}}}
    >>> stage_row("kcenter", report).split(" | ")[3]
    'not measured: no GPU available'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEADING = "## GPU suite: every GPU target in one call (`benchmarks/device_suite.py`)"
INTRO = """\
One command on a fresh GPU machine measures every stage below (the device calls are in the module docstring of
`benchmarks/device_suite.py`); each stage has its own time cap, and a failing stage is recorded with its error.
Sizes: IFD on the first 1,000 rows of `alpaca_9k.json` (max_length 1024, Superfiltering's layout so that the per-row
fp32 loop of the seed scripts computes the same scores; the loop on the first 100 rows); the plain forward on full
64 x 512 batches; the 1-2B shape is SmolLM2-1.7B's with random weights; k-center on 1,000,000 x 768 standard-normal
embeddings, k = 10,000; quality and necessity with a DeBERTa-v3-large-shaped reward model (random weights,
SmolLM2's tokenizer), necessity on 256 rows with at most 128 new tokens; SFT: 1 epoch, batch 32, max_length 512,
TRL against a plain PyTorch loop (bf16 autocast, fused AdamW, clipping) over the very batches TRL made. FLOPs:
`2*N*T + 2*L*A*T^2 + 2*d*V*H` per sequence (N = decoder matrix weights, L layers, A = heads x head dim, d hidden,
V vocabulary, H = tokens through the output head: the scored tokens for score_ifd, every token for the plain
forward); MFU against the datasheet's dense bf16 peak (989 TFLOP/s for H100/H200 SXM) and against the 8192^3 bf16
matmul rate measured in the same run. fsdp_resume: 4 steps of train_sft (batch 2 per process, max_length 256, a
checkpoint every 2 steps) under `recipes/accelerate/fsdp.yaml`, one process per GPU (at most 2), killed after its
step-2 checkpoint and launched again."""
HEADER = "| stage | measures | machine | result | target | command |\n|---|---|---|---|---|---|"
DEVICE_COMMAND = "python3 benchmarks/device_suite.py --carried .device/c --parts $HOME/m --out $OUT/device_suite.json"


def measures(name: str, report: dict[str, Any]) -> str:
    """What a stage measured, with the sizes of the report's run."""
    s = report.get("sizes") or {}
    lm = "tiny random Llama" if report.get("mode") == "smoke" else "SmolLM2-135M-Instruct"
    dtype = report.get("stages", {}).get(name, {}).get("metrics", {}).get("dtype", "bfloat16")
    try:
        text = {
            "ifd_smollm2": f"score_ifd, {lm} {dtype}, {s['ifd_rows']:,} rows, vs the per-row fp32 loop "
                           f"({s['loop_rows']} rows) and a plain forward ({s['plain_tokens'] // s['plain_seq']} x "
                           f"{s['plain_seq']})",
            "kcenter": f"k-center greedy, {s['kcenter_rows']:,} x {s['kcenter_dim']}, k = {s['kcenter_k']:,}",
            "ifd_large": f"score_ifd at a {s['large_shape']['num_hidden_layers']}-layer x "
                         f"{s['large_shape']['hidden_size']} Llama (random weights), {dtype}: tokens/s and MFU",
            "quality": f"score_quality, DeBERTa-v3 reward model ({s['reward_shape'][0]} x {s['reward_shape'][1]} "
                       f"layers, random weights), {dtype}, {s['quality_rows']:,} rows",
            "necessity": f"score_necessity generation + reward, {lm} {dtype}, {s['necessity_rows']} rows, <= "
                         f"{s['new_tokens']} new tokens",
            "sft": f"TRL SFT (train_sft) of {lm} on {s['sft_rows']:,} rows (batch {s['sft_batch']}) vs a plain "
                   "PyTorch loop on the same batches",
            "fsdp_resume": f"train_sft of {lm} under accelerate launch --config_file recipes/accelerate/fsdp.yaml, "
                           "killed after its step-2 checkpoint and launched again (a check, not a speed)",
        }[name]
    except (KeyError, TypeError, IndexError):
        text = name
    return text


TARGETS = {"ifd_smollm2": ">= 100x the loop; >= 50% of the plain forward's tokens/s", "kcenter": "<= 30 s",
           "ifd_large": ">= 40% MFU (the earlier IFD-throughput row's target)", "quality": "-", "necessity": "-",
           "sft": "-", "fsdp_resume": "FSDP on every GPU; resumes from the sharded step-2 checkpoint; the model "
                                     "folder loads"}


def _ifd(m: dict[str, Any]) -> str:
    return (f"score_ifd {m['score_ifd_rows_s']:,.0f} rows/s, {m['score_ifd_tokens_s']:,.0f} tokens/s "
            f"({m['score_ifd_rows']} rows; default layout {m['default_layout_rows_s']:,.0f} rows/s); plain forward "
            f"{m['plain_forward_tokens_s']:,.0f} tokens/s (score_ifd at {m['pct_of_plain_forward']:.0f}%); per-row "
            f"fp32 loop {m['loop_rows_s']:.1f} rows/s on {m['loop_rows']} rows ({m['speedup_vs_loop']:.1f}x); "
            f"Spearman vs the fp32 loop {m['spearman_vs_fp32_loop']:.4f}, max abs ifd_ppl difference "
            f"{m['max_abs_ifd_ppl_diff']:.2g}")


def _mfu(m: dict[str, Any], prefix: str) -> str:
    parts = [f"{m[f'{prefix}_tflops']:.0f} TFLOP/s"]
    if f"{prefix}_mfu" in m:
        parts.append(f"MFU {100 * m[f'{prefix}_mfu']:.0f}%")
    if f"{prefix}_of_measured_matmul" in m:
        parts.append(f"{100 * m[f'{prefix}_of_measured_matmul']:.0f}% of the measured matmul rate")
    return ", ".join(parts)


def _large(m: dict[str, Any]) -> str:
    return (f"{m['weights'] / 1e9:.2f}B weights; score_ifd {m['score_ifd_tokens_s']:,.0f} tokens/s "
            f"({m['score_ifd_rows_s']:,.0f} rows/s), {_mfu(m, 'score_ifd')}; plain forward "
            f"{m['plain_forward_tokens_s']:,.0f} tokens/s, {_mfu(m, 'plain_forward')}")


def _kcenter(m: dict[str, Any]) -> str:
    same = "identical" if m["identical_checked_picks"] else f"differ from pick {m['first_difference']}"
    return (f"{m['seconds']:.1f} s ({m['picks_s']:,.0f} picks/s); first {m['checked_picks']} picks {same} "
            "against MoDS's float64 loop")


def _quality(m: dict[str, Any]) -> str:
    return (f"{m['rows_s']:,.0f} rows/s ({m['tokens_s']:,.0f} tokens/s) vs {m['loop_rows_s']:.1f} rows/s one pair "
            f"at a time ({m['speedup_vs_loop']:.1f}x; max abs difference {m['max_abs_diff_vs_loop']:.2g})")


def _necessity(m: dict[str, Any]) -> str:
    return (f"{m['rows_s']:,.1f} rows/s, {m['generated_tokens_s']:,.0f} generated tokens/s ({m['rows']} rows, "
            f"<= {m['max_new_tokens']} new tokens) vs {m['loop_rows_s']:.2f} rows/s one prompt at a time "
            f"({m['speedup_vs_loop']:.1f}x; identical answers {100 * m['identical_answers']:.0f}%)")


def _sft(m: dict[str, Any]) -> str:
    steady = (f"; after step 1: TRL {m['trl_steady_tokens_s']:,.0f} vs {m['plain_steady_tokens_s']:,.0f} "
              f"({m['trl_pct_of_plain_steady']:.0f}%)" if "trl_pct_of_plain_steady" in m else "")
    return (f"TRL {m['trl_tokens_s']:,.0f} tokens/s vs plain loop {m['plain_tokens_s']:,.0f} tokens/s "
            f"({m['trl_pct_of_plain']:.0f}%){steady}; {m['steps']} steps, {m['tokens']:,} tokens; train_sft wall "
            f"{m['trl_wall_s']:.1f} s")


def _fsdp(m: dict[str, Any]) -> str:
    mode = (f"{m['distributed_type']} (FSDP{m['fsdp_version']}, {m['state_dict_type']})"
            if m["distributed_type"] == "FSDP" else f"{m['distributed_type']} (no sharding)")
    return (f"{mode} on {m['processes']} process(es); checkpoint-2: {m['model_shards']} model + "
            f"{m['optimizer_shards']} optimizer shards; the relaunch resumed at step {m['resumed_from_step']} and ran "
            f"{m['steps_after_resume']} steps to step {m['global_step']}; the model folder loads (max weight change "
            f"{m['max_weight_change']:.2g}); launches {m['first_launch_s']:.0f} s + {m['second_launch_s']:.0f} s")


SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "ifd_smollm2": _ifd, "kcenter": _kcenter, "ifd_large": _large, "quality": _quality, "necessity": _necessity,
    "sft": _sft, "fsdp_resume": _fsdp}


def summary(name: str, record: dict[str, Any]) -> str:
    """The result cell of one stage: its summary, or its status and error with whatever it measured before."""
    m = record.get("metrics", {})
    status = record.get("status")
    if status == "not_measured":
        return f"not measured: {record.get('error', '')}"
    try:
        text = SUMMARIES[name](m) if name in SUMMARIES else ""
    except (KeyError, TypeError, ValueError):  # a partial record: list the numbers it has
        text = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, (int, float)) and not
                         isinstance(v, bool))
    if status != "ok":
        text = f"{status}: {record.get('error', '')}" + (f"; measured before: {text}" if text else "")
    return text.replace("|", "/").replace("\n", " ")


def stage_row(name: str, report: dict[str, Any]) -> str:
    record = report["stages"][name]
    mach = report.get("machine", {})
    if record.get("status") == "not_measured":
        machine, command = "-", DEVICE_COMMAND
    elif report.get("mode") == "smoke":
        machine, command = "smoke (CPU, tiny sizes; not a performance figure)", report.get("command", "")
    else:
        machine = (f"{mach.get('gpu', 'CPU')}, torch {mach.get('torch')}, transformers {mach.get('transformers')}, "
                   f"trl {mach.get('trl')}, {report.get('started_utc', '')}")
        command = report.get("command", "")
    note = " (call 3 of the device calls in its docstring)" if command == DEVICE_COMMAND else ""
    return (f"| {name} | {measures(name, report)} | {machine} | {summary(name, record)} | {TARGETS.get(name, '-')} "
            f"| `{command}`{note} |")


def write_section(path: Path, report: dict[str, Any]) -> None:
    """Put the report's stage rows into the suite's section of ``path`` (created if absent), replacing the rows of
    the same stages and keeping the others in stage order; other sections are left alone."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(text)
    old = {}
    if found:
        for line in found.group(0).splitlines():
            cells = line.split(" | ")
            if line.startswith("| ") and not line.startswith("| stage ") and len(cells) > 1:
                old[cells[0][2:]] = line
    new = {n: stage_row(n, report) for n in report["stages"] if n in TARGETS}
    order = list(TARGETS) + sorted(set(old) - set(TARGETS))
    rows = [new.get(n) or old[n] for n in order if n in new or n in old]
    block = "\n".join([HEADING, "", INTRO, "", HEADER, *rows, "", ""])
    text = pattern.sub(lambda _: block, text) if found else text.rstrip("\n") + "\n\n" + block
    path.write_text(text.rstrip("\n") + "\n")
