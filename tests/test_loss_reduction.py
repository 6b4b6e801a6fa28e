"""Loss reduction (CoLoR-Filter-style) on the tiny LM: the score against a brute-force computation with plain
forward passes, the tuning record, and the errors (no target, an empty target, a diverging tuned copy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_select.errors import HFSelectError
from hf_select.scoring.loss_reduction import LossReductionConfig, LossReductionScorer
from hf_select.scoring.registry import get_scorer_classes

POOL = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5"},
    {"instruction": "Reverse the string.", "input": "hello", "output": "olleh"},
    {"instruction": "Say nothing.", "input": "", "output": ""},
    {"instruction": "Sort the list", "input": "[3, 1, 2]", "output": "[1, 2, 3] is the sorted list."},
    {"instruction": None, "input": "", "output": "x"},
]
TARGET = [
    {"instruction": "Add 4 and 5.", "input": "", "output": "4 + 5 = 9"},
    {"instruction": "Add 1 and 7.", "input": "", "output": "1 + 7 = 8"},
    {"instruction": "Add 6 and 2.", "input": "", "output": "6 + 2 = 8"},
]


def ids(tok, messages, **kw):
    return list(tok.apply_chat_template(messages, tokenize=True, return_dict=True, **kw)["input_ids"])


def hand_loss(model, tok, row):
    """Mean completion-token loss with one plain forward pass: the chat template of prompt and of prompt + answer."""
    user = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
    prompt = ids(tok, [{"role": "user", "content": user}], add_generation_prompt=True)
    full = ids(tok, [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}])
    assert full[: len(prompt)] == prompt
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    losses = [-float(logp[t - 1, full[t]]) for t in range(len(prompt), len(full))]
    return float(np.mean(losses))


def make_scorer(path, tmp_path, **kw):
    target = tmp_path / "target.jsonl"
    target.write_text("\n".join(json.dumps(r) for r in TARGET))
    cfg = LossReductionConfig(model_name_or_path=str(path), target=str(target), device="cpu", dtype="float32",
                              **{"steps": 3, "learning_rate": 1e-3, "batch_size": 2, **kw})
    return LossReductionScorer(cfg)


def test_loss_reduction_equals_base_minus_tuned_by_hand(tiny_lm_path, tmp_path):
    from hf_select.models import load_causal_lm

    scorer = make_scorer(tiny_lm_path, tmp_path)
    out = Dataset.from_list(POOL).map(scorer, batched=True, batch_size=8)
    assert out["loss_reduction_status"] == ["ok", "ok", "empty_response", "ok", "invalid_row"]
    base, tok = load_causal_lm(str(tiny_lm_path), device="cpu", dtype="float32")
    tuned = scorer.load()[1]
    for i in (0, 1, 3):
        b, t = hand_loss(base, tok, POOL[i]), hand_loss(tuned, tok, POOL[i])
        assert out[i]["loss_base"] == pytest.approx(b, rel=1e-5)
        assert out[i]["loss_tuned"] == pytest.approx(t, rel=1e-5)
        assert out[i]["loss_reduction"] == pytest.approx(b - t, abs=1e-5)
    assert np.isnan(out[2]["loss_reduction"]) and np.isnan(out[4]["loss_base"])  # NaN and a reason, never 0
    # the tuning ran as recorded and moved the model toward the target rows
    info = scorer.tuning
    assert info["steps"] == 3 and info["learning_rate"] == 1e-3 and info["target_rows"] == 3
    assert info["seconds"] >= 0 and info["target_loss_after"] < info["target_loss_before"]
    assert out[0]["loss_reduction"] > 0  # the addition row is like the target rows
    # the base model is left as it was
    assert hand_loss(scorer.load()[0], tok, POOL[0]) == pytest.approx(out[0]["loss_base"], rel=1e-5)


@pytest.mark.parametrize("micro_batch_tokens", [2048, 1])
def test_tuning_matches_a_plain_adamw_loop(tiny_lm_path, tmp_path, micro_batch_tokens):
    """The tuned copy is exactly a plain AdamW loop over the same batches (1 step of all target rows), whether the
    step runs as one pass or one row per micro-batch (gradients summed, weighted by completion tokens)."""
    from hf_select.models import load_causal_lm

    scorer = make_scorer(tiny_lm_path, tmp_path, steps=1, batch_size=3, micro_batch_tokens=micro_batch_tokens)
    tuned = scorer.load()[1]
    model, tok = load_causal_lm(str(tiny_lm_path), device="cpu", dtype="float32")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    order = np.random.default_rng(0).permutation(3).tolist()
    total, count = 0.0, 0
    for i in order:
        row = TARGET[i]
        prompt = ids(tok, [{"role": "user", "content": row["instruction"]}], add_generation_prompt=True)
        full = ids(tok, [{"role": "user", "content": row["instruction"]},
                         {"role": "assistant", "content": row["output"]}])
        logits = model(input_ids=torch.tensor([full])).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        for t in range(len(prompt), len(full)):
            total = total - logp[t - 1, full[t]]
            count += 1
    (total / count).backward()  # token-weighted mean over the batch, as the trainer's loss
    opt.step()
    for (name, a), b in zip(tuned.named_parameters(), model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_errors_no_target_empty_target_and_divergence(tiny_lm_path, tmp_path):
    ds = Dataset.from_list(POOL[:2])
    with pytest.raises(HFSelectError, match="LossReductionConfig.target"):
        LossReductionScorer(LossReductionConfig(model_name_or_path=str(tiny_lm_path), device="cpu")).load()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(HFSelectError, match="empty"):
        LossReductionScorer(LossReductionConfig(model_name_or_path=str(tiny_lm_path), target=str(empty),
                                                device="cpu")).load()
    scorer = make_scorer(tiny_lm_path, tmp_path)
    with pytest.raises(HFSelectError, match="empty"):
        scorer.set_target(Dataset.from_list([{"instruction": "a", "output": "b"}]).select([])).load()
    with pytest.raises(HFSelectError, match="no row of the target set"):
        scorer.set_target([{"instruction": "a", "input": "", "output": ""}]).load()
    diverging = make_scorer(tiny_lm_path, tmp_path, learning_rate=1e30, steps=3)
    with pytest.raises(HFSelectError, match=r"LossReductionConfig.learning_rate \(or steps\)") as err:
        ds.map(diverging, batched=True)
    assert "learning_rate=1e+30" in str(err.value)
    with pytest.raises(ValueError, match="learning_rate must be a finite number"):
        LossReductionConfig(learning_rate=float("nan"))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        LossReductionConfig(steps=0)


def test_registered_and_fingerprint_follows_the_target(tiny_lm_path, tmp_path):
    assert get_scorer_classes("loss_reduction")[1] is LossReductionScorer
    scorer = make_scorer(tiny_lm_path, tmp_path)
    ds = Dataset.from_list(POOL[:2])
    first = scorer.fingerprint(ds)
    (tmp_path / "target.jsonl").write_text(json.dumps(TARGET[0]))
    assert scorer.fingerprint(ds) != first  # other target rows: another score
