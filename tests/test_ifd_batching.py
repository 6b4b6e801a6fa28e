"""IFD batching: sequence batches pad less than pair batches, packed and padded batches give the per-row scores
(fp32: rtol 1e-5; bf16: rtol 1e-3 on this tiny model), the chunked output head equals full logits, the packing
check rejects a model that lets attention cross sequences, and ``dtype="auto"`` follows the CPU's measured bf16
speed."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_select import IFDConfig, IFDScorer
from hf_select import models as models_module
from hf_select.scoring.batching import pack_rows, padded_share, token_budget_batches
from hf_select.scoring.common import model_limit
from hf_select.scoring.lm_loss import build_batch, mean_target_losses, supports_packing
from tests.conftest import shared_rows

TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-3}  # relative, per-row reference vs batched (padded or packed)
MAX_LENGTH = 96


def _rows() -> list[dict[str, str]]:
    return [
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Write a lot.", "input": "", "output": "word " * 200},  # truncated at max_length
        {"instruction": "Count.", "input": "", "output": " ".join(map(str, range(30)))},
        {"instruction": "long " * 120, "input": "", "output": "x"},  # prompt_too_long
        {"instruction": "Say nothing.", "input": "", "output": "   "},  # empty_response
        {"instruction": "Add", "input": "2 3", "output": "2 + 3 = 5"},
        *({"instruction": f"Repeat {'ab' * i}", "input": "", "output": "ab" * i} for i in range(1, 12)),
    ]


def _seed_loss(model: torch.nn.Module, ctx: list[int], tgt: list[int]) -> float:
    """The seed scripts' way: one sequence per forward, full logits, ``model(ids, labels=...).loss``."""
    ids = torch.tensor([list(ctx) + list(tgt)])
    labels = ids.clone()
    labels[0, : len(ctx)] = -100
    with torch.inference_mode():
        return float(model(input_ids=ids, labels=labels).loss)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("packing", [False, True])
def test_batched_scores_equal_the_per_row_reference(tiny_lm_path, dtype, packing):
    cfg = IFDConfig(model_name_or_path=str(tiny_lm_path), template="alpaca", max_length=MAX_LENGTH, dtype=dtype,
                    device="cpu", packing=packing, max_tokens_per_batch=256)
    scorer = IFDScorer(cfg)
    rows = _rows()
    out = scorer(Dataset.from_list(rows)[:])
    model, tok = scorer.load()
    assert model.dtype == getattr(torch, dtype)
    assert not packing or supports_packing(model)
    assert out["ifd_status"][3:5] == ["prompt_too_long", "empty_response"]
    assert out["response_tokens"][1] > 0 and math.isnan(out["ifd"][3]) and math.isnan(out["ifd"][4])
    batch = {k: [r[k] for r in rows] for k in rows[0]}
    items, *_ = scorer._build_items(batch, len(rows), tok, model_limit(model, tok, MAX_LENGTH))
    assert max(len(it.context) + len(it.target) for it in items) == MAX_LENGTH  # a row hits max_length
    rtol = TOLERANCE[dtype]
    for it in items:
        lc = _seed_loss(model, it.context, it.target)
        ld = _seed_loss(model, it.direct, it.direct_tokens)
        assert out["ifd_status"][it.row] == "ok"
        assert math.isclose(out["loss_conditioned"][it.row], lc, rel_tol=rtol)
        assert math.isclose(out["loss_direct"][it.row], ld, rel_tol=rtol)
        assert math.isclose(out["ifd"][it.row], lc / ld, rel_tol=2 * rtol)


def test_packed_rows_really_hold_several_sequences(tiny_lm_path, monkeypatch):
    from hf_select.scoring import lm_loss

    shapes = []
    real = lm_loss.build_batch

    def spy(items, pad, **kw):
        batch = real(items, pad, **kw)
        shapes.append((len(items), batch.ids.shape[0], batch.position_ids is not None))
        return batch

    monkeypatch.setattr(lm_loss, "build_batch", spy)
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template="alpaca", max_length=MAX_LENGTH,
                                 dtype="float32", packing=True))
    scorer(Dataset.from_list(_rows())[:])
    packed = [s for s in shapes if s[2]]
    assert packed and sum(n for n, _, _ in packed) > sum(r for _, r, _ in packed)


@pytest.mark.parametrize("packed", [False, True])
def test_chunked_head_equals_full_logits(tiny_lm_path, packed):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(1)
    items = [(torch.randint(5, 300, (c,), generator=gen).tolist(), torch.randint(5, 300, (t,), generator=gen).tolist())
             for c, t in ((3, 7), (1, 2), (10, 1), (4, 12), (2, 5))]
    rows = pack_rows([len(c) + len(t) for c, t in items], 16) if packed else None
    full = mean_target_losses(model, items, 0, fused_head=False, rows=rows)
    chunked = mean_target_losses(model, items, 0, fused_head=True, logit_chunk=3, rows=rows)
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-6)
    reference = torch.tensor([_seed_loss(model, c, t) for c, t in items], dtype=torch.float64)
    torch.testing.assert_close(chunked, reference, rtol=1e-5, atol=1e-6)


def test_packed_batch_layout():
    batch = build_batch([([1, 2], [3]), ([4], [5, 6]), ([7], [8])], 0, rows=[[0, 2], [1]], width=6)
    assert batch.ids.tolist() == [[1, 2, 3, 7, 8, 0], [4, 5, 6, 0, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 0, 1, 2]]
    assert batch.mask is None
    assert list(zip(batch.rows.tolist(), batch.pos.tolist(), batch.tgt.tolist(), batch.item.tolist(),
                    strict=True)) == [(0, 1, 3, 0), (0, 3, 8, 2), (1, 0, 5, 1), (1, 1, 6, 1)]


def test_packing_check_rejects_a_model_whose_attention_crosses_sequences(tiny_lm_path, caplog):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path, dtype=torch.float32).eval()
    assert supports_packing(model)
    leaky = AutoModelForCausalLM.from_pretrained(tiny_lm_path, dtype=torch.float32).eval()
    inner = leaky.model.forward

    def ignore_positions(self, *args, position_ids=None, **kwargs):  # plain causal attention over the whole row
        return inner(*args, **kwargs)

    leaky.model.forward = types.MethodType(ignore_positions, leaky.model)
    assert not supports_packing(leaky)
    rows = _rows()
    tokenizer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path))).load()[1]
    padded = IFDScorer(IFDConfig(template="alpaca", max_length=MAX_LENGTH)).set_model(model, tokenizer)
    packed = IFDScorer(IFDConfig(template="alpaca", max_length=MAX_LENGTH, packing=True)).set_model(leaky, tokenizer)
    expected = padded(Dataset.from_list(rows)[:])["ifd"]
    with caplog.at_level("WARNING"):
        got = packed(Dataset.from_list(rows)[:])["ifd"]
    assert "fails the packing check" in caplog.text
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_sequence_batches_pad_less_than_pair_batches(tiny_lm_path):
    rows = shared_rows("train/alpaca_9k.json", 400)
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path)))
    tok = scorer.load()[1]
    batch = {k: [r[k] for r in rows] for k in ("instruction", "input", "output")}
    items, *_ = scorer._build_items(batch, len(rows), tok, 1024)
    cond = [len(it.context) + len(it.target) for it in items]
    direct = [len(it.direct) + len(it.direct_tokens) for it in items]
    seqs, n = cond + direct, len(items)
    pairs = token_budget_batches([c + d for c, d in zip(cond, direct, strict=True)], 2048, 256)  # the old batching
    old = padded_share(seqs, [[[i] for i in g] for g in pairs] + [[[i + n] for i in g] for g in pairs])
    new = padded_share(seqs, [[[i] for i in g] for g in token_budget_batches(seqs, 1024, 256)])
    assert new < 0.03 and new < old / 3, (old, new)


@pytest.mark.parametrize(("speedup", "expected"), [(0.0, torch.float32), (0.5, torch.float32), (1.6, torch.bfloat16)])
def test_dtype_auto_on_a_cpu_follows_the_measured_bf16_speed(tiny_lm_path, monkeypatch, speedup, expected):
    """'auto' is bf16 on a CPU only where bf16 matrix multiplies measure faster (native bf16 alone is not enough: on
    ours it is half as fast); 'float32' and 'bfloat16' are what they say."""
    monkeypatch.setattr(models_module, "CPU_BF16_MIN_SPEEDUP", 1.3)  # the shipped rule (conftest pins fp32)
    monkeypatch.delenv(models_module.CPU_AUTO_DTYPE_ENV, raising=False)
    monkeypatch.setattr(models_module, "cpu_bf16_matmul_speedup", lambda: speedup)
    assert IFDConfig().torch_dtype("cpu") == expected
    assert IFDConfig(dtype="float32").torch_dtype("cpu") == torch.float32
    assert IFDConfig(dtype="bfloat16").torch_dtype("cpu") == torch.bfloat16
    auto = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), device="cpu"))
    assert auto.load()[0].dtype == expected


def test_cpu_bf16_speedup_is_measured_once_and_zero_without_native_bf16(monkeypatch):
    models_module.cpu_bf16_matmul_speedup.cache_clear()
    monkeypatch.setattr(models_module, "cpu_has_native_bf16", lambda: False)
    assert models_module.cpu_bf16_matmul_speedup() == 0.0
    models_module.cpu_bf16_matmul_speedup.cache_clear()
    monkeypatch.undo()
    first = models_module.cpu_bf16_matmul_speedup()
    assert first >= 0.0 and models_module.cpu_bf16_matmul_speedup() == first
    models_module.cpu_bf16_matmul_speedup.cache_clear()


def test_packing_at_its_default_leaves_the_cache_key_as_before():
    from hf_select.scoring.config import config_to_dict

    assert "packing" not in config_to_dict(IFDConfig())
    assert config_to_dict(IFDConfig(packing=True))["packing"] is True


def test_the_environment_fixes_what_auto_means_on_a_cpu(monkeypatch):
    """HF_SELECT_CPU_AUTO_DTYPE wins over the measurement (child processes inherit it; the tests pin float32)."""
    monkeypatch.setattr(models_module, "CPU_BF16_MIN_SPEEDUP", 1.3)
    monkeypatch.setattr(models_module, "cpu_bf16_matmul_speedup", lambda: 4.0)
    cpu = torch.device("cpu")
    monkeypatch.setenv(models_module.CPU_AUTO_DTYPE_ENV, "float32")
    assert models_module.resolve_dtype("auto", cpu) == torch.float32
    monkeypatch.setenv(models_module.CPU_AUTO_DTYPE_ENV, "bfloat16")
    monkeypatch.setattr(models_module, "cpu_bf16_matmul_speedup", lambda: 0.5)
    assert models_module.resolve_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setenv(models_module.CPU_AUTO_DTYPE_ENV, "fp8")
    with pytest.raises(ValueError, match="HF_SELECT_CPU_AUTO_DTYPE must be float32 or bfloat16"):
        models_module.resolve_dtype("auto", cpu)
