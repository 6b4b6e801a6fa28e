"""The measured stages of the GPU suite (``benchmarks/device_suite.py``), in the order they run.

Each stage is ``stage(ctx, m)``: it fills the dict ``m`` with its metrics as it goes, so that whatever was measured
before an error or its time cap stays in the record. What each one measures is in its docstring; the sizes are
:data:`device_common.FULL` (one H100/H200) or :data:`device_common.SMOKE` (a CPU, tiny models, seconds).

Example:
    >>> list(STAGES)
    ['ifd_smollm2', 'kcenter', 'ifd_large', 'quality', 'necessity', 'sft', 'fsdp_resume']
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from device_common import (
    FLOP_FORMULA,
    FSDP_STEPS,
    FSDP_STOP_AT,
    Ctx,
    add_mfu,
    build_large_lm,
    build_reward_model,
    columns,
    flop_shape,
    forward_flops,
    fsdp_processes,
    hs_fsdp_launch,
    hs_ifd_scorer,
    hs_kcenter,
    hs_necessity_scorer,
    hs_quality_scorer,
    hs_train_sft,
    plain_forward,
    question,
    reward_loop,
    spearman,
    superfiltering_ids,
    superfiltering_loop,
    sync,
    timed,
)
from transformers import TrainerCallback


def _row_tokens(tok: Any, rows: list[dict], max_length: int, ok: np.ndarray) -> tuple[list[int], int]:
    """Sequence lengths of both passes and the scored tokens, over the rows that got a score."""
    lengths, scored = [], 0
    for row, good in zip(rows, ok, strict=True):
        ids = superfiltering_ids(tok, row, max_length) if good else None
        if ids is not None:
            whole, start, alone = ids
            lengths += [len(whole), len(alone)]
            scored += len(whole) - start + len(alone) - 1
    return lengths, scored


def _score_ifd(ctx: Ctx, m: dict[str, Any], model: Any, tok: Any,
               rows: list[dict]) -> tuple[np.ndarray, list[int], int, float]:
    """score_ifd (Superfiltering's layout, so that the per-row loop computes the same thing) over ``rows``; returns
    the ``ifd_ppl`` column, the lengths of both passes and the scored tokens (rows with a score), and the seconds."""
    scorer = hs_ifd_scorer(ctx, model, tok, "superfiltering")
    scorer(columns(rows[:8]))  # warm-up: kernels, allocator
    out, t = timed(ctx, lambda: scorer(columns(rows)))
    ppl = np.array(out["ifd_ppl"], dtype=float)
    lengths, scored = _row_tokens(tok, rows, ctx.sizes.max_length, np.isfinite(ppl))
    m.update(score_ifd_rows=len(rows), score_ifd_scored_rows=int(np.isfinite(ppl).sum()), score_ifd_s=t,
             score_ifd_rows_s=len(rows) / t, score_ifd_tokens_s=sum(lengths) / t)
    return ppl, lengths, scored, t


def stage_ifd_smollm2(ctx: Ctx, m: dict[str, Any]) -> None:
    """IFD with SmolLM2-135M-Instruct in the scoring dtype (bf16 on GPU): ``score_ifd`` rows/s and tokens/s
    (Superfiltering's layout, and the default layout), the seed scripts' per-row fp32 loop on ``loop_rows`` rows,
    a plain forward of the same model on full batches, and the rank agreement with the fp32 loop."""
    s = ctx.sizes
    rows = ctx.rows[: s.ifd_rows]
    lm, tok = ctx.load_lm(ctx.dtype)
    m["dtype"] = ctx.dtype_name()
    ppl = _score_ifd(ctx, m, lm, tok, rows)[0]
    default = hs_ifd_scorer(ctx, lm, tok, "hf_select")
    default(columns(rows[:8]))
    out, t = timed(ctx, lambda: default(columns(rows)))
    m.update(default_layout_rows_s=len(rows) / t, default_layout_response_tokens_s=sum(out["response_tokens"]) / t)
    t_plain, batch, seq = plain_forward(ctx, lm, len(tok))
    m.update(plain_forward_shape=[batch, seq], plain_forward_tokens_s=s.plain_repeats * batch * seq / t_plain)
    m["pct_of_plain_forward"] = 100 * m["score_ifd_tokens_s"] / m["plain_forward_tokens_s"]
    del lm
    lm32, tok32 = ctx.load_lm(torch.float32)
    superfiltering_loop(ctx, lm32, tok32, rows[:2])  # warm-up
    ref, t_loop = timed(ctx, lambda: superfiltering_loop(ctx, lm32, tok32, rows[: s.loop_rows]))
    n = len(ref)
    ref_a = np.array(ref, dtype=float)
    m.update(loop_rows=n, loop_dtype="float32", loop_rows_s=n / t_loop)
    m["speedup_vs_loop"] = m["score_ifd_rows_s"] / m["loop_rows_s"]
    m["spearman_vs_fp32_loop"] = spearman(ppl[:n], ref_a)
    both = np.isfinite(ppl[:n]) & np.isfinite(ref_a)
    m["max_abs_ifd_ppl_diff"] = float(np.max(np.abs(ppl[:n][both] - ref_a[both]))) if both.any() else float("nan")
    fp32 = np.array(hs_ifd_scorer(ctx, lm32, tok32, "superfiltering", torch.float32)(columns(rows[:n]))["ifd_ppl"])
    ok = np.isfinite(fp32) & np.isfinite(ref_a)
    m["fp32_scorer_max_rel_diff_vs_loop"] = float(np.max(np.abs(fp32[ok] - ref_a[ok]) / np.abs(ref_a[ok])))
    m["targets"] = {"speedup_vs_loop >= 100": bool(m["speedup_vs_loop"] >= 100),
                    "pct_of_plain_forward >= 50": bool(m["pct_of_plain_forward"] >= 50)}


def stage_ifd_large(ctx: Ctx, m: dict[str, Any]) -> None:
    """The same scorer at a 1-2B shape (SmolLM2-1.7B's, random weights from a config): tokens/s and MFU of
    ``score_ifd`` and of a plain forward on full batches (:data:`device_common.FLOP_FORMULA`)."""
    tok = ctx.tokenizer()
    model = build_large_lm(ctx, tok)
    shape = flop_shape(model)
    m.update(weights=sum(p.numel() for p in model.parameters()), shape=ctx.sizes.large_shape,
             flop_formula=FLOP_FORMULA, peak_tflops=ctx.peak_tflops, matmul_tflops=ctx.matmul_tflops,
             dtype=ctx.dtype_name())
    _, lengths, scored, t = _score_ifd(ctx, m, model, tok, ctx.rows[: ctx.sizes.large_rows])
    add_mfu(ctx, m, "score_ifd", forward_flops(**shape, lengths=lengths, head_tokens=scored), t)
    t_plain, batch, seq = plain_forward(ctx, model, shape["vocab"])
    r = ctx.sizes.plain_repeats
    m.update(plain_forward_shape=[batch, seq], plain_forward_tokens_s=r * batch * seq / t_plain)
    add_mfu(ctx, m, "plain_forward", r * forward_flops(**shape, lengths=[seq] * batch, head_tokens=batch * seq),
            t_plain)
    m["pct_of_plain_forward"] = 100 * m["score_ifd_tokens_s"] / m["plain_forward_tokens_s"]


@torch.inference_mode()
def _mods_loop(x: torch.Tensor, picks: int, first: int) -> list[int]:
    """MoDS's k-center loop in float64: distances to each new center, running minimum, argmax."""
    x64 = x.double()
    sq = (x64 * x64).sum(1)
    min_d = torch.full_like(sq, float("inf"))
    out, nxt = [], first
    for _ in range(picks):
        out.append(nxt)
        c = x64[nxt]
        d = (sq - 2 * (x64 @ c) + c @ c).clamp_min(0).sqrt()
        torch.minimum(min_d, d, out=min_d)
        min_d[nxt] = -float("inf")
        nxt = int(torch.argmax(min_d))
    return out


def stage_kcenter(ctx: Ctx, m: dict[str, Any]) -> None:
    """k-center greedy on ``kcenter_rows`` x ``kcenter_dim`` standard-normal float32 embeddings (seed 0, made on the
    device), ``kcenter_k`` picks; the first ``kcenter_check`` picks against MoDS's float64 loop from the same first
    center."""
    s = ctx.sizes
    g = torch.Generator(device=ctx.device).manual_seed(0)
    x = torch.randn((s.kcenter_rows, s.kcenter_dim), generator=g, device=ctx.device, dtype=torch.float32)
    m.update(rows=s.kcenter_rows, dim=s.kcenter_dim, k=s.kcenter_k)
    picks, t = timed(ctx, lambda: hs_kcenter(x, s.kcenter_k, ctx.device))
    m.update(seconds=t, picks_s=len(picks) / t, picks=len(picks), targets={"seconds <= 30": bool(t <= 30)})
    ref = _mods_loop(x, s.kcenter_check, picks[0])
    same = next((i for i, (a, b) in enumerate(zip(picks, ref, strict=False)) if a != b), len(ref))
    m.update(checked_picks=len(ref), identical_checked_picks=same == len(ref), first_difference=same)


def stage_quality(ctx: Ctx, m: dict[str, Any]) -> None:
    """``score_quality`` with a reward model of DeBERTa-v3-large's shape (sequence classification from a config,
    random weights; SmolLM2's tokenizer encodes the pairs) against MoDS's one-pair-at-a-time loop."""
    s = ctx.sizes
    tok = ctx.tokenizer()
    rm = build_reward_model(ctx, tok)
    rows = ctx.rows[: s.quality_rows]
    scorer = hs_quality_scorer(ctx, rm, tok)
    scorer(columns(rows[:4]))
    out, t = timed(ctx, lambda: scorer(columns(rows)))
    tokens = sum(len(tok(question(r), r["output"], truncation=True, max_length=512)["input_ids"]) for r in rows)
    m.update(rows=len(rows), dtype=ctx.dtype_name(), shape=list(s.reward_shape), rows_s=len(rows) / t,
             tokens_s=tokens / t)
    pairs = [(question(r), r["output"]) for r in rows[: s.quality_loop_rows]]
    reward_loop(ctx, rm, tok, pairs[:2])
    ref, t_loop = timed(ctx, lambda: reward_loop(ctx, rm, tok, pairs))
    m.update(loop_rows=len(pairs), loop_rows_s=len(pairs) / t_loop)
    m["speedup_vs_loop"] = m["rows_s"] / m["loop_rows_s"]
    got = np.array(out["quality"][: len(pairs)], dtype=float)
    m["max_abs_diff_vs_loop"] = float(np.nanmax(np.abs(got - np.array(ref))))


def _necessity_loop(ctx: Ctx, lm: Any, tok: Any, rm: Any, rows: list[dict]) -> list[str]:
    """One prompt at a time through ``generate`` (greedy), then one pair at a time through the reward model."""
    answers = []
    with torch.inference_mode():
        for row in rows:
            text = tok.apply_chat_template([{"role": "user", "content": question(row)}], tokenize=False,
                                           add_generation_prompt=True)
            x = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]], device=ctx.device)
            y = lm.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=ctx.sizes.new_tokens,
                            do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            answers.append(tok.decode(y[0, x.shape[1]:], skip_special_tokens=True).strip())
    reward_loop(ctx, rm, tok, [(question(r), a) for r, a in zip(rows, answers, strict=True)])
    return answers


def stage_necessity(ctx: Ctx, m: dict[str, Any]) -> None:
    """``score_necessity``: SmolLM2-135M-Instruct answers greedily (``new_tokens`` at most) and the reward model
    above scores the answers; rows/s and generated tokens/s against a one-prompt-at-a-time loop."""
    s = ctx.sizes
    lm, tok = ctx.load_lm(ctx.dtype)
    rm = build_reward_model(ctx, tok)
    rows = ctx.rows[: s.necessity_rows]
    hs_necessity_scorer(ctx, lm, tok, rm, 2)(columns(rows[:2]))  # warm-up
    scorer = hs_necessity_scorer(ctx, lm, tok, rm, s.new_tokens)
    out, t = timed(ctx, lambda: scorer(columns(rows)))
    statuses: dict[str, int] = {}
    for st in out["necessity_status"]:
        statuses[st] = statuses.get(st, 0) + 1
    m.update(rows=len(rows), max_new_tokens=s.new_tokens, dtype=ctx.dtype_name(), rows_s=len(rows) / t,
             generated_tokens=int(sum(out["generated_tokens"])), statuses=statuses)
    m["generated_tokens_s"] = m["generated_tokens"] / t
    loop_rows = rows[: s.necessity_loop_rows]
    answers, t_loop = timed(ctx, lambda: _necessity_loop(ctx, lm, tok, rm, loop_rows))
    m.update(loop_rows=len(loop_rows), loop_rows_s=len(loop_rows) / t_loop)
    m["speedup_vs_loop"] = m["rows_s"] / m["loop_rows_s"]
    same = sum(a == b for a, b in zip(out["generated_response"], answers, strict=False))
    m["identical_answers"] = same / len(answers)


class BatchRecorder(TrainerCallback):
    """A TrainerCallback that keeps a CPU copy of every training batch (wrapping the train dataloader's collate
    function before the first epoch starts) and times the run: start, end of step 1, end."""

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.batches: list[dict[str, torch.Tensor]] = []
        self.times: dict[str, float] = {}

    def _record(self, collate: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def wrapped(examples: Any) -> Any:
            out = collate(examples)
            self.batches.append({k: v.detach().clone() for k, v in out.items() if isinstance(v, torch.Tensor)})
            return out

        return wrapped

    def on_train_begin(self, args: Any, state: Any, control: Any, train_dataloader: Any = None, **kwargs: Any) -> None:
        loader = train_dataloader
        while loader is not None and "base_dataloader" in vars(loader):  # accelerate's adapter wraps a DataLoader
            loader = vars(loader)["base_dataloader"]
        if loader is not None:
            loader.collate_fn = self._record(loader.collate_fn)
        sync(self.ctx)
        self.times["begin"] = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 1:
            sync(self.ctx)
            self.times["step1"] = time.perf_counter()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        sync(self.ctx)
        self.times["end"] = time.perf_counter()


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def _plain_training(ctx: Ctx, model: Any, batches: list[dict[str, torch.Tensor]], lr: float) -> dict[str, float]:
    """forward, backward, clip to norm 1 (as Trainer does), fused AdamW step; bf16 autocast on CUDA."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=ctx.device.type == "cuda")
    cast = (torch.autocast("cuda", dtype=torch.bfloat16) if ctx.device.type == "cuda" else contextlib.nullcontext())
    keys = ("input_ids", "attention_mask", "labels", "position_ids")
    times, loss = {}, None
    sync(ctx)
    times["begin"] = time.perf_counter()
    for i, batch in enumerate(batches):
        inputs = {k: batch[k].to(ctx.device, non_blocking=True) for k in keys if k in batch}
        with cast:
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i == 0:
            sync(ctx)
            times["step1"] = time.perf_counter()
    sync(ctx)
    times["end"] = time.perf_counter()
    times["last_loss"] = float(loss) if loss is not None else float("nan")
    return times


def stage_sft(ctx: Ctx, m: dict[str, Any]) -> None:
    """TRL SFT (hf_select's ``train_sft``: 1 epoch, completion-only loss, bf16 mixed precision on GPU) of SmolLM2 on
    ``sft_rows`` rows, against a plain PyTorch loop over the very batches TRL made; tokens = non-padding input
    tokens. ``steady`` figures leave out step 1 on both sides."""
    s = ctx.sizes
    rows = ctx.rows[: s.sft_rows]
    model, tok = ctx.load_lm(torch.float32)
    rec = BatchRecorder(ctx)
    sync(ctx)
    t0 = time.perf_counter()
    result = hs_train_sft(ctx, rows, model, tok, [rec])
    sync(ctx)
    wall = time.perf_counter() - t0
    if not rec.batches or "end" not in rec.times:
        raise RuntimeError("the callback recorded no training batches: the Trainer's dataloader API changed")
    tokens = [_tokens(b) for b in rec.batches]
    tr = rec.times
    m.update(rows=len(rows), batch=s.sft_batch, max_length=s.sft_max_length, steps=len(tokens), tokens=sum(tokens),
             trl_wall_s=wall, trl_train_s=tr["end"] - tr["begin"], trl_loss=result.train_loss,
             trl_reported_tokens=result.metrics.get("num_tokens"))
    m["trl_tokens_s"] = sum(tokens) / m["trl_train_s"]
    if "step1" in tr and len(tokens) > 1:
        m["trl_steady_tokens_s"] = sum(tokens[1:]) / (tr["end"] - tr["step1"])
    del model, result
    gc.collect()
    fresh, _ = ctx.load_lm(torch.float32)
    pl = _plain_training(ctx, fresh, rec.batches, 2e-5)
    m.update(plain_train_s=pl["end"] - pl["begin"], plain_last_loss=pl["last_loss"])
    m["plain_tokens_s"] = sum(tokens) / m["plain_train_s"]
    if len(tokens) > 1:
        m["plain_steady_tokens_s"] = sum(tokens[1:]) / (pl["end"] - pl["step1"])
        if "trl_steady_tokens_s" in m:
            m["trl_pct_of_plain_steady"] = 100 * m["trl_steady_tokens_s"] / m["plain_steady_tokens_s"]
    m["trl_pct_of_plain"] = 100 * m["trl_tokens_s"] / m["plain_tokens_s"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, float]:
    """Run one ``accelerate launch`` in its own process group: (exit status, output, seconds). A stage cap or an
    error while it runs kills the whole group (launcher and training processes), so no process keeps the GPU."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, time.perf_counter() - t


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:].strip()


def stage_fsdp_resume(ctx: Ctx, m: dict[str, Any]) -> None:
    """FSDP training launched as the recipes launch it (``accelerate launch --config_file
    recipes/accelerate/fsdp.yaml``: FSDP2, full shard, one unit per decoder layer, sharded checkpoints), one process
    per GPU (at most 2), ``train_sft`` of the small LM for 4 steps with a checkpoint every 2: the first launch is
    killed right after its step-2 checkpoint, the second resumes from it. Checked: accelerate ran FSDP and the
    checkpoint holds one model shard and one optimizer shard per process (``pytorch_model_fsdp_0``,
    ``optimizer_0``); the second launch resumed at step 2 and ran only steps 3-4; its model folder loads with
    transformers (full weights, moved by training). Smoke (CPU): accelerate enables FSDP only on GPU-type devices
    (a CPU run is plain or gloo DDP; ``recipes/accelerate/fsdp.yaml`` says why), so the same launches run unsharded
    there and the sharding checks are left to the GPU."""
    from transformers import AutoModelForCausalLM

    if ctx.lm_path is None:
        raise RuntimeError(f"no small LM on this machine: {ctx.lm_error}")
    on_gpu = ctx.device.type == "cuda"
    processes = fsdp_processes(ctx.device.type, torch.cuda.device_count() if on_gpu else 0)
    folder = ctx.workdir / "fsdp_resume"
    folder.mkdir(parents=True, exist_ok=True)
    cmd, args = hs_fsdp_launch(ctx, folder, processes, _free_port())
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    env.setdefault("OMP_NUM_THREADS", "1")
    out, stopped, result = Path(args["out"]), Path(args["stopped"]), Path(args["result"])
    m.update(processes=processes, steps=FSDP_STEPS, killed_after_step=FSDP_STOP_AT, expect_fsdp=on_gpu)

    code, log, m["first_launch_s"] = _launch([*cmd, json.dumps(args)], env, folder)
    if not stopped.is_file():
        raise RuntimeError(f"the first launch (exit {code}) did not reach its step-{FSDP_STOP_AT} checkpoint: "
                           f"{_tail(log)}")
    info = json.loads(stopped.read_text())
    m.update(distributed_type=info["distributed_type"], fsdp_version=info["fsdp_version"],
             state_dict_type=info["state_dict_type"], world_size=info["processes"])
    checkpoint = out / f"checkpoint-{FSDP_STOP_AT}"
    m["checkpoint_files"] = sorted(str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file())
    model_shards = sorted((checkpoint / "pytorch_model_fsdp_0").glob("*.distcp"))
    optim_shards = sorted((checkpoint / "optimizer_0").glob("*.distcp"))
    m.update(model_shards=len(model_shards), optimizer_shards=len(optim_shards))
    m["sharded_checkpoint"] = bool(model_shards) and len(model_shards) == len(optim_shards) == processes
    if on_gpu and (info["distributed_type"] != "FSDP" or info["processes"] != processes):
        raise RuntimeError(f"accelerate ran {info['distributed_type']} on {info['processes']} processes, not FSDP on "
                           f"{processes}")
    if on_gpu and not m["sharded_checkpoint"]:
        raise RuntimeError(f"checkpoint-{FSDP_STOP_AT} holds no sharded state for {processes} processes: "
                           f"{m['checkpoint_files']}")

    code, log, m["second_launch_s"] = _launch([*cmd, json.dumps(args)], env, folder)
    if code != 0 or not result.is_file():
        raise RuntimeError(f"the resumed launch failed (exit {code}): {_tail(log)}")
    res = json.loads(result.read_text())
    m.update(resumed_from_step=res["resumed_from_step"], global_step=res["global_step"],
             steps_after_resume=res["steps_run"], train_loss=res["train_loss"])
    if (res["resumed_from_step"], res["global_step"], res["steps_run"]) != (
            FSDP_STOP_AT, FSDP_STEPS, FSDP_STEPS - FSDP_STOP_AT):
        raise RuntimeError(f"expected a resume at step {FSDP_STOP_AT} running steps {FSDP_STOP_AT + 1}-{FSDP_STEPS}, "
                           f"got {res}")
    m["checkpoints_left"] = len(list(out.glob("checkpoint-*")))  # train_sft removes them once the model is saved

    m["model_folder"] = sorted(p.name for p in out.iterdir())
    if not (out / "config.json").is_file() or not any(out.glob("*.safetensors")):
        raise RuntimeError(f"the model folder holds no model (config.json and weights): {m['model_folder']}")
    trained = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(ctx.lm_path, dtype=torch.float32)
    got, want = trained.state_dict(), base.state_dict()
    if got.keys() != want.keys():
        names = sorted(got.keys() ^ want.keys())[:8]
        raise RuntimeError(f"the saved model's weight names differ from the base's: {names}")
    m["max_weight_change"] = max(float((got[k] - want[k]).abs().max()) for k in want)
    with torch.inference_mode():
        logits = trained(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    m["final_model_loads"] = bool(torch.isfinite(logits).all()) and m["max_weight_change"] > 0
    if not m["final_model_loads"]:
        raise RuntimeError(f"the final model folder is not the trained model (max weight change "
                           f"{m['max_weight_change']}, finite logits {bool(torch.isfinite(logits).all())})")
    if on_gpu:
        m["targets"] = {"resumed from the sharded checkpoint, model folder loads": True}


STAGES: dict[str, Callable[[Ctx, dict[str, Any]], None]] = {
    "ifd_smollm2": stage_ifd_smollm2,
    "kcenter": stage_kcenter,
    "ifd_large": stage_ifd_large,
    "quality": stage_quality,
    "necessity": stage_necessity,
    "sft": stage_sft,
    "fsdp_resume": stage_fsdp_resume,
}
