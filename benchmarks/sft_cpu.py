"""SFT throughput on CPU: TRL's ``SFTTrainer`` as hf-select runs it against a plain PyTorch loop on the same batches.

Model: the offline SmolLM2-135M-Instruct (fp32 master weights). Rows: the first ``--rows`` of
``../shared/data/train/alpaca_9k.json``. Settings of the selection benchmark's cpu profile
(``benchmarks/selection_quality.py``): max_length 128, batch 8, learning rate 1e-4, 1 epoch, logging every 10 steps,
loss on the completion tokens only (TRL's conversational prompt-completion rows).

Each case runs every side in one process, each from a fresh copy of the same weights:

- **hf-select**: :func:`hf_select.training.build_sft_config` + hf-select's trainer class
  (:func:`hf_select.training.sft_trainer_class`: ``SFTTrainer`` with the completion-positions LM head on CPU,
  :mod:`hf_select.training.sft_head`), timed around ``trainer.train()`` (tokenisation happens before);
- **trl**: the same with TRL's own ``SFTTrainer`` (its fused LM head; ``--trainer`` picks one or both);
- **plain**: the loop anyone would write: the same collator called on the same rows in the same order (recorded from
  the first TRL-side run, inside the timed loop), ``model(**batch).loss`` (full logits), backward, gradient clipping
  at ``max_grad_norm``, the same AdamW and learning-rate schedule; ``--plain-head completion`` projects only the
  completion positions through the LM head instead.

Tokens/s counts the real (unpadded) tokens of the batches, the same on both sides. The mean training loss of both
sides and their largest per-step difference are reported: the settings must not change the loss.

Usage (the lead runs the full one on an idle machine):

    python benchmarks/sft_cpu.py --write                          # every case on 300 rows, rows into RESULTS.md
                                                                  # (long: each case trains 3 times; time one
                                                                  # case first: --cases fp32-t2)
    python benchmarks/sft_cpu.py --rows 16 --steps 2              # smoke check (a minute or two)
    python benchmarks/sft_cpu.py --cases fp32-t2,bf16-t2          # some cases only (names: --list)
    python benchmarks/sft_cpu.py --profile --steps 4 --threads 1  # cProfile of TRL steps: where the time goes
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import platform
import pstats
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "train" / "alpaca_9k.json"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## SFT on CPU: TRL against a plain loop"


@dataclass(frozen=True)
class Case:
    """One configuration, run on both sides."""

    name: str
    threads: int = 2
    precision: str = "fp32"  # fp32 or bf16 (autocast)
    packing: bool = False
    workers: int = 0  # dataloader_num_workers (TRL side; the plain loop collates in the main process)
    sft: tuple[tuple[str, Any], ...] = ()  # further SFTConfig fields of the TRL side

    def label(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.sft)
        return (f"{self.precision}, {self.threads} thread{'s' * (self.threads > 1)}, packing "
                f"{'on' if self.packing else 'off'}, {self.workers} workers{extra}")


CASES = {c.name: c for c in [
    Case("fp32-t2"),
    Case("fp32-t1", threads=1),
    Case("bf16-t2", precision="bf16"),
    Case("bf16-t1", threads=1, precision="bf16"),
    Case("fp32-t2-packing", packing=True),
    Case("bf16-t2-packing", precision="bf16", packing=True),
    Case("fp32-t2-workers2", workers=2),
]}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, load {load:.1f}"


def load_rows(n: int):
    from datasets import Dataset

    rows = json.loads(DATA.read_text())[:n]
    return Dataset.from_list([{k: r.get(k, "") for k in ("instruction", "input", "output")} for r in rows])


def train_config(case: Case, steps: int | None):
    from hf_select.training import TrainConfig

    sft = dict(case.sft)
    sft["dataloader_num_workers"] = case.workers
    if case.packing:
        sft["packing"] = True
    return TrainConfig(learning_rate=1e-4, num_train_epochs=1.0, max_steps=steps or -1, per_device_train_batch_size=8,
                       max_length=128, logging_steps=10, save_steps=None, seed=0, precision=case.precision,
                       sft_kwargs=sft)


class Recorder:
    """Wraps the trainer's collator: the rows of every batch, in order, for the plain loop to collate again."""

    def __init__(self, collator):
        self.collator = collator
        self.features: list[list[dict]] = []

    def __call__(self, features):
        self.features.append(list(features))
        return self.collator(features)


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids", "labels")}


def real_tokens(batch: dict) -> int:
    if batch.get("attention_mask") is not None:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())  # padding-free (packing): one row of real tokens


def trainer_class(name: str) -> type:
    """``hf-select``: hf-select's trainer (:func:`hf_select.training.sft_trainer_class`); ``trl``: TRL's own."""
    if name == "trl":
        from trl import SFTTrainer

        return SFTTrainer
    from hf_select.training import sft_trainer_class

    return sft_trainer_class()


def run_trl(case: Case, rows, steps: int | None, workdir: str, profile: bool = False,
            trainer: str = "hf-select") -> dict:
    import torch

    from hf_select.models import DEFAULT_LM
    from hf_select.training import build_sft_config, load_model_for_training, to_prompt_completion

    torch.manual_seed(0)
    model, tok = load_model_for_training(DEFAULT_LM)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    args = build_sft_config(train_config(case, steps), workdir)
    trainer = trainer_class(trainer)(model=model, args=args, train_dataset=to_prompt_completion(rows),
                                     processing_class=tok)
    rec = Recorder(trainer.data_collator)
    trainer.data_collator = rec
    losses: list[torch.Tensor] = []
    compute_loss = trainer.compute_loss

    def recording_loss(*a, **kw):
        loss = compute_loss(*a, **kw)
        losses.append(loss.detach())
        return loss

    trainer.compute_loss = recording_loss
    prof = cProfile.Profile(time.process_time) if profile else None
    cpu0, t0 = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    trainer.train()
    if prof:
        prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    batches = [trainer.data_collator.collator(f) for f in rec.features] if case.workers == 0 else None
    tokens = sum(real_tokens(b) for b in batches) if batches is not None else None
    out = dict(wall_s=wall, cpu_s=cpu, steps=len(losses), losses=[float(x) for x in losses], tokens=tokens,
               features=rec.features if case.workers == 0 else None, args=args, collator=rec.collator,
               trainer_class=type(trainer).__name__)
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(45)
        out["profile"] = s.getvalue()
    del trainer, model
    return out


def run_plain(case: Case, trl: dict, head: str) -> dict:
    """The plain loop on the rows TRL saw, collated again by the same collator inside the timed loop."""
    import torch
    from transformers import get_scheduler

    from hf_select.models import DEFAULT_LM
    from hf_select.training import load_model_for_training

    torch.manual_seed(0)
    model, _ = load_model_for_training(DEFAULT_LM)
    model.train()
    args, collator, features = trl["args"], trl["collator"], trl["features"]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                            eps=args.adam_epsilon, weight_decay=args.weight_decay, fused="fused" in args.optim)
    sched = get_scheduler(args.lr_scheduler_type, opt, num_warmup_steps=args.get_warmup_steps(len(features)),
                          num_training_steps=len(features))
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if case.precision == "bf16"
                else contextlib.nullcontext())
    losses, tokens = [], 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    for rows in features:
        batch = model_inputs(collator(rows))
        tokens += real_tokens(batch)
        # no KV cache in training (TRL passes the same); with a cache, transformers would not read packed rows'
        # position_ids as separate documents
        batch["use_cache"] = False
        with autocast:
            if head == "completion":
                labels = batch.pop("labels")
                hidden = model.model(**batch).last_hidden_state[:, :-1]
                target = labels[:, 1:]
                keep = target != -100
                logits = model.lm_head(hidden[keep]).float()
                loss = torch.nn.functional.cross_entropy(logits, target[keep])
            else:
                loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    del model
    return dict(wall_s=wall, cpu_s=cpu, tokens=tokens, losses=[float(x) for x in losses])


def run_case(case: Case, rows, steps: int | None, plain_head: str, trainers: list[str]) -> list[dict]:
    """Each TRL-side trainer, then the plain loop on the rows the first one saw; one result per TRL side."""
    import torch

    torch.set_num_threads(case.threads)
    sides = []
    for name in trainers:
        with tempfile.TemporaryDirectory(prefix="sft_cpu_") as workdir:
            sides.append(run_trl(case, rows, steps, workdir, trainer=name))
    first = sides[0]
    plain = run_plain(case, first, plain_head) if first["features"] is not None else None
    out = []
    for trl in sides:
        res: dict[str, Any] = dict(case=case.name, label=case.label(), trl_wall_s=trl["wall_s"],
                                   trl_cpu_s=trl["cpu_s"], steps=trl["steps"],
                                   trl_loss=sum(trl["losses"]) / max(1, len(trl["losses"])),
                                   trainer_class=trl["trainer_class"])
        if plain is None:  # workers > 0: the rows were collated in worker processes and not recorded
            res["note"] = "dataloader workers: batches not recorded, no plain loop; compare with the workers-0 case"
            out.append(res)
            continue
        if trl["features"] != first["features"]:
            res["note"] = "WARNING: this side saw other batches than the plain loop"
        tokens = plain["tokens"]
        res.update(tokens=tokens, plain_wall_s=plain["wall_s"], plain_cpu_s=plain["cpu_s"],
                   plain_loss=sum(plain["losses"]) / max(1, len(plain["losses"])),
                   trl_tokens_s=tokens / trl["wall_s"], plain_tokens_s=tokens / plain["wall_s"],
                   ratio=plain["wall_s"] / trl["wall_s"], cpu_ratio=plain["cpu_s"] / trl["cpu_s"],
                   max_step_loss_diff=max((abs(a - b) for a, b in zip(trl["losses"], plain["losses"], strict=False)),
                                          default=float("nan")))
        out.append(res)
    return out


def table_row(res: dict, command: str, where: str) -> str:
    if "ratio" not in res:
        return (f"| {res['label']} | {where} | {res['steps']} | - | - | {res['trl_wall_s']:.1f} s TRL | - | "
                f"{res['trl_loss']:.4f} / - | - | `{command}` | {res['trainer_class']} {res.get('note', '')} |")
    return (f"| {res['label']} | {where} | {res['steps']} | {res['trl_tokens_s']:.0f} | {res['plain_tokens_s']:.0f} | "
            f"{100 * res['ratio']:.0f}% | {100 * res['cpu_ratio']:.0f}% | {res['trl_loss']:.4f} / "
            f"{res['plain_loss']:.4f} | {res['max_step_loss_diff']:.1e} | `{command}` | {res['trainer_class']} "
            f"{res.get('note', '')}|")


def write_results(lines: list[str]) -> None:
    """This script's section of RESULTS.md: a row with the same command and case is replaced, others are kept."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(text)

    def key(line: str) -> str:
        cells = line.split("|")
        return f"{cells[1].strip()}|{cells[-2].split()[0] if cells[-2].split() else ''}|" + (
            (re.search(r"`([^`]*)`", line) or [""])[0])

    old = [ln for ln in found.group(0).splitlines() if ln.startswith("| ") and "`" in ln] if found else []
    new_keys = {key(ln) for ln in lines}
    rows = [ln for ln in old if key(ln) not in new_keys] + lines
    block = "\n".join([
        SECTION, "",
        "SmolLM2-135M-Instruct (offline copy), first rows of alpaca_9k, max_length 128, batch 8, 1 epoch,",
        "completion-only loss. TRL = hf-select's `build_sft_config` + a trainer class (last column:",
        "`CompletionHeadSFTTrainer` = hf-select's `sft_trainer_class()`, `SFTTrainer` = TRL's own), timed around",
        "`trainer.train()`; plain = the same collator on the same rows in the same order, `model(**batch).loss`,",
        "clipping, the same AdamW and schedule. Tokens/s = real (unpadded) tokens / wall seconds; TRL / plain = plain",
        "seconds / TRL seconds (wall, and process CPU time); losses = mean training loss of each side.",
        "",
        "| case | machine | steps | TRL tokens/s | plain tokens/s | TRL / plain (wall) | TRL / plain (CPU) "
        "| mean loss TRL / plain | max step loss diff | command | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows, "", ""])
    text = pattern.sub(lambda _: block, text) if found else text.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=300)
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: 1 epoch)")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated case names (see --list)")
    p.add_argument("--list", action="store_true", help="print the case names and exit")
    p.add_argument("--plain-head", choices=["full", "completion"], default="full",
                   help="plain loop: full logits (model(**batch).loss) or the completion positions only")
    p.add_argument("--trainer", choices=["hf-select", "trl", "both"], default="both",
                   help="TRL side: hf-select's trainer class, TRL's SFTTrainer, or both (one after the other)")
    p.add_argument("--profile", action="store_true", help="cProfile (CPU time) of the TRL side of the first case")
    p.add_argument("--threads", type=int, default=None, help="override the threads of every case")
    p.add_argument("--json", default=None, help="write every result to this JSON file")
    p.add_argument("--write", action="store_true", help="put the rows into benchmarks/RESULTS.md")
    a = p.parse_args(argv)
    if a.list:
        for c in CASES.values():
            print(f"{c.name}: {c.label()}")
        return 0
    if not DATA.exists():
        print(f"missing {DATA}: the benchmark needs the shared alpaca_9k rows", file=sys.stderr)
        return 2
    unknown = [c for c in a.cases.split(",") if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; known: {sorted(CASES)}")
    cases = [CASES[c] for c in a.cases.split(",")]
    if a.threads:
        cases = [Case(**{**c.__dict__, "threads": a.threads}) for c in cases]
    rows = load_rows(a.rows)
    import torch

    if a.profile:
        torch.set_num_threads(cases[0].threads)
        with tempfile.TemporaryDirectory(prefix="sft_cpu_") as workdir:
            out = run_trl(cases[0], rows, a.steps, workdir, profile=True,
                          trainer="trl" if a.trainer == "trl" else "hf-select")
        print(out["profile"])
        return 0
    where = machine()
    results, lines = [], []
    trainers = ["hf-select", "trl"] if a.trainer == "both" else [a.trainer]
    for case in cases:
        cmd = f"python benchmarks/sft_cpu.py --rows {a.rows} --cases {case.name} --trainer {a.trainer}"
        cmd += (f" --steps {a.steps}" if a.steps else "") + (f" --threads {a.threads}" if a.threads else "")
        cmd += f" --plain-head {a.plain_head}" if a.plain_head != "full" else ""
        for res in run_case(case, rows, a.steps, a.plain_head, trainers):
            results.append(res)
            lines.append(table_row(res, cmd, where))
            print(lines[-1], flush=True)
            if not all(math.isfinite(res.get(k, 0.0)) for k in ("trl_loss", "plain_loss")):
                print(f"warning: non-finite loss in case {case.name}", file=sys.stderr)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    if a.write:
        write_results(lines)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
