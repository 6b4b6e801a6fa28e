"""Shared-prefix reuse: scores with and without it agree (fp32: rtol 1e-5; bf16: 1e-2 on this tiny model), the
template's prefix really is cut from the batches, a row's scores do not depend on the other rows of its batch, and a
model whose cache misbehaves fails the check and is scored the plain way."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_select import IFDConfig, IFDScorer
from hf_select.scoring import lm_loss, prefix
from hf_select.scoring.config import config_to_dict
from hf_select.scoring.prefix import common_prefix, continuing, supports_prefix_reuse

TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2}


def _rows() -> list[dict[str, str]]:
    return [
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Count.", "input": "", "output": " ".join(map(str, range(30)))},
        {"instruction": "Add", "input": "2 3", "output": "2 + 3 = 5"},
        {"instruction": "Say nothing.", "input": "", "output": "   "},  # empty_response: no sequence
        *({"instruction": f"Repeat {'ab' * i}", "input": "", "output": "ab" * i} for i in range(1, 10)),
    ]


def _load(path, **kw):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, **kw).eval()


def test_common_prefix_and_the_contexts_that_continue_it():
    assert common_prefix([[9, 9, 9, 1, 2, 3], [9, 9, 9, 1, 2, 4, 5], [9, 9, 9, 1]]) == [9, 9, 9, 1]
    assert common_prefix([]) == [] and common_prefix([[1, 2]]) == [1, 2]
    contexts = [[9, 9, 1], [9, 9], (9, 9, 2, 3), [4, 9, 9, 1]]
    assert continuing([9, 9], contexts) == [0, 2]  # [9, 9] alone has no token after the prefix


def test_the_prefix_is_the_templates(tiny_lm_path):
    alpaca = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template="alpaca"))
    tok = alpaca.load()[1]
    text = tok.decode(alpaca.template_prefix(tok, 96))
    assert text.startswith("Below is an instruction") and text.endswith("### Instruction:\n")
    chat = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template="chat"))
    assert tok.decode(chat.template_prefix(tok, 96)) == "<|im_start|>user\n"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(("template", "sharing"), [("alpaca", 11), ("chat", 12)])
def test_scores_with_prefix_reuse_equal_scores_without(tiny_lm_path, monkeypatch, dtype, template, sharing):
    """``sharing``: conditioned passes after the shared prefix: every row with a response, except, under Alpaca, the
    row with an input (its preamble differs)."""
    cut = []
    real = lm_loss.hidden_after_prefix

    def spy(model, shared, ids, mask):
        cut.append((len(shared), ids.shape[0]))
        return real(model, shared, ids, mask)

    monkeypatch.setattr(lm_loss, "hidden_after_prefix", spy)
    base = dict(model_name_or_path=str(tiny_lm_path), template=template, max_length=96, dtype=dtype, device="cpu",
                max_tokens_per_batch=256)
    rows = Dataset.from_list(_rows())[:]
    plain = IFDScorer(IFDConfig(**base, prefix_reuse=False))(rows)
    assert not cut
    reused = IFDScorer(IFDConfig(**base))(rows)
    assert cut and all(p >= prefix.MIN_PREFIX_TOKENS for p, _ in cut)
    assert sum(n for _, n in cut) == sharing
    assert reused["ifd_status"] == plain["ifd_status"]
    for name in ("loss_conditioned", "loss_direct", "ifd"):
        got, want = np.array(reused[name], dtype=float), np.array(plain[name], dtype=float)
        np.testing.assert_allclose(got, want, rtol=TOLERANCE[dtype], equal_nan=True)


def test_a_rows_scores_do_not_depend_on_its_batch_beyond_rounding(tiny_lm_path):
    """Each row alone and all rows in one call: the same prefix is cut from the same rows, so only fp32 rounding of
    other batch shapes differs (up to 4e-8 here; 1.6e-8 without prefix reuse)."""
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template="alpaca", max_length=96))
    rows = Dataset.from_list(_rows())
    together = scorer(rows[:])["ifd"]
    alone = [scorer(rows[i : i + 1])["ifd"][0] for i in range(len(rows))]
    np.testing.assert_allclose(alone, together, rtol=1e-6, equal_nan=True)


def test_a_model_whose_cache_is_ignored_fails_the_check_and_keeps_its_scores(tiny_lm_path):
    model = _load(tiny_lm_path, dtype=torch.float32)
    assert supports_prefix_reuse(model)
    broken = _load(tiny_lm_path, dtype=torch.float32)
    inner = broken.model.forward

    def drop_cache(self, *args, cache=None, position_ids=None, attention_mask=None, **kwargs):
        if attention_mask is not None and cache is not None:  # the suffix alone, as if no prefix existed
            attention_mask = attention_mask[:, cache.get_seq_length():]
        return inner(*args, attention_mask=attention_mask, **kwargs)

    broken.model.forward = types.MethodType(drop_cache, broken.model)
    assert not supports_prefix_reuse(broken)
    tokenizer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path))).load()[1]
    cfg = IFDConfig(template="alpaca", max_length=96)
    rows = Dataset.from_list(_rows())[:]
    expected = IFDScorer(cfg).set_model(model, tokenizer)(rows)["ifd"]
    got = IFDScorer(cfg).set_model(broken, tokenizer)(rows)["ifd"]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_prefix_needs_the_fused_head_and_padded_rows(tiny_lm_path):
    model = _load(tiny_lm_path, dtype=torch.float32)
    shared = prefix.encode_prefix(model, list(range(5, 15)))
    with pytest.raises(ValueError, match="fused output head"):
        lm_loss.mean_target_losses(model, [([3], [4, 5])], 0, fused_head=False, prefix=shared)
    with pytest.raises(ValueError, match="right-padded"):
        lm_loss.mean_target_losses(model, [([3], [4, 5])], 0, rows=[[0]], prefix=shared)
    got = lm_loss.mean_target_losses(model, [([3], [4, 5]), ([6, 7], [8])], 0, prefix=shared)
    want = lm_loss.mean_target_losses(model, [(list(range(5, 15)) + [3], [4, 5]),
                                              (list(range(5, 15)) + [6, 7], [8])], 0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert all(math.isfinite(x) for x in got.tolist())


def test_prefix_reuse_at_its_default_leaves_the_cache_key_as_before():
    assert "prefix_reuse" not in config_to_dict(IFDConfig())
    assert config_to_dict(IFDConfig(prefix_reuse=False))["prefix_reuse"] is False
