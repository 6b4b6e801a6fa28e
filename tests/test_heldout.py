"""hf_select.heldout: the held-out completion loss equals a plain forward pass + cross-entropy computed by hand, every
row that is cut or not scored is accounted for, and the eval stage's key holds everything that changes the number."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from hf_select.errors import HFSelectError
from hf_select.heldout import heldout_loss


@pytest.fixture(scope="module")
def tiny():
    from hf_select.testing import make_tiny_lm

    return make_tiny_lm(seed=3)


def _rows(n: int) -> list[dict]:
    return [{"instruction": f"Add {i} and {i + 1}." + " Show every step." * (i % 3),
             "input": "" if i % 2 else "carefully", "output": f"{i} + {i + 1} = {2 * i + 1}." + " Done." * (i % 4)}
            for i in range(n)]


def _by_hand(model, tok, rows: list[dict], limit: int) -> tuple[list[float], list[int]]:
    """Per row: the summed cross-entropy of its completion tokens (those that fit in ``limit``) given its prompt,
    from one unbatched ``model(input_ids).logits`` forward pass, and the number of tokens summed."""
    sums, counts = [], []
    for row in rows:
        user = row["instruction"] + ("\n" + row["input"] if row["input"].strip() else "")  # formats.py
        prompt = [{"role": "user", "content": user}]
        full = prompt + [{"role": "assistant", "content": row["output"]}]
        p = tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
        ids = tok.apply_chat_template(full, tokenize=True, return_dict=True)["input_ids"]
        assert ids[: len(p)] == p
        ids = ids[:limit]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        targets = torch.tensor(ids[len(p):])
        losses = F.cross_entropy(logits[len(p) - 1 : len(ids) - 1], targets, reduction="none")
        sums.append(float(losses.sum()))
        counts.append(len(targets))
    return sums, counts


def test_loss_equals_a_plain_forward_pass(tiny):
    model, tok = tiny
    rows = _rows(9)
    sums, counts = _by_hand(model, tok, rows, limit=10_000)
    # a small token budget: several length-sorted, right-padded batches
    result = heldout_loss(model, Dataset.from_list(rows), tokenizer=tok, max_length=512, precision="fp32",
                          max_tokens_per_batch=160, max_batch_size=3)
    assert result.loss == pytest.approx(sum(sums) / sum(counts), rel=1e-5)
    assert result.row_mean_loss == pytest.approx(np.mean([s / c for s, c in zip(sums, counts, strict=True)]), rel=1e-5)
    assert (result.rows, result.items, result.rows_scored, result.rows_truncated) == (9, 9, 9, 0)
    assert result.tokens_scored == result.tokens_total == sum(counts)
    assert result.unscored == {} and result.max_length == 512 and result.dtype == "float32"
    # the same number whatever the batching
    alone = heldout_loss(model, Dataset.from_list(rows), tokenizer=tok, max_length=512, max_batch_size=1)
    assert alone.loss == pytest.approx(result.loss, rel=1e-5)
    assert json.loads(json.dumps(result.to_dict()))["loss"] == result.loss
    assert not model.training


def test_long_prompts_cut_completions_and_empty_rows_are_counted(tiny):
    model, tok = tiny
    rows = _rows(5)
    rows[1]["instruction"] = "Explain " + "every single thing, " * 30  # the prompt alone fills the limit
    rows[3]["output"] = "a long answer, " * 20  # cut to the tokens that fit
    rows[4]["output"] = "  "  # empty
    limit = 96
    kept = [0, 2, 3]
    sums, counts = _by_hand(model, tok, [rows[i] for i in kept], limit=limit)
    _, full_counts = _by_hand(model, tok, [rows[i] for i in kept], limit=10_000)
    assert counts[2] < full_counts[2] and counts[:2] == full_counts[:2]  # row 3 really is cut
    result = heldout_loss(model, Dataset.from_list(rows), tokenizer=tok, max_length=limit)
    assert result.unscored == {"prompt_too_long": [1], "empty_completion": [4]}
    assert (result.rows, result.rows_scored, result.rows_truncated) == (5, 3, 1)
    assert result.tokens_scored == sum(counts)
    assert result.tokens_total > sum(full_counts)  # row 1's completion tokens count too, before any cut
    assert result.loss == pytest.approx(sum(sums) / sum(counts), rel=1e-5)
    # the model's own limit caps the eval's
    model.config.max_position_embeddings = 48
    try:
        assert heldout_loss(model, Dataset.from_list(rows), tokenizer=tok, max_length=4096).max_length == 48
    finally:
        model.config.max_position_embeddings = 2048


def test_every_row_failing_raises(tiny):
    model, tok = tiny
    rows = [{"instruction": "Explain " + "everything, " * 40, "input": "", "output": "ok"},
            {"instruction": "Say nothing.", "input": "", "output": ""}]
    with pytest.raises(HFSelectError, match=r"heldout\.json: no row could be scored \(prompt_too_long=1, "
                                            r"empty_completion=1\)"):
        heldout_loss(model, Dataset.from_list(rows), tokenizer=tok, max_length=32, name="heldout.json")
    with pytest.raises(ValueError, match="tokenizer"):
        heldout_loss(model, Dataset.from_list(rows))


def test_multi_turn_rows_score_every_turn(tiny):
    model, tok = tiny
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Add 1 and 2."}, {"role": "assistant", "content": "3"}]
    result = heldout_loss(model, Dataset.from_list([{"messages": messages}]), tokenizer=tok)
    assert (result.rows, result.items, result.rows_scored) == (1, 2, 2)
    last = heldout_loss(model, Dataset.from_list([{"messages": messages}]), tokenizer=tok, turns="last")
    assert last.items == 1 and last.tokens_scored < result.tokens_scored


# -- the eval stage ---------------------------------------------------------------------------------------------------
def test_eval_stage_key(tiny_lm_path, tmp_path):
    from hf_select.recipes.arguments import RecipeArguments
    from hf_select.stages import StageRunner, eval_stage

    eval_file = tmp_path / "heldout.json"
    eval_file.write_text(json.dumps(_rows(4)))
    out = tmp_path / "run"
    base = dict(dataset_name="demo:10", output_dir=str(out), model_name_or_path=str(tiny_lm_path),
                eval_dataset=str(eval_file), precision="fp32", per_device_eval_batch_size=4, eval_max_length=256)

    def run(**changes) -> tuple[dict, bool]:
        runner = StageRunner(out)
        meta = eval_stage(runner, RecipeArguments(**{**base, **changes}), tiny_lm_path)
        return meta, runner.infos[-1].reused

    meta, reused = run()
    assert not reused and meta["rows"] == 4 and meta["rows_scored"] == 4 and meta["max_length"] == 256
    assert meta["dataset"] == str(eval_file) and meta["loss"] > 0 and meta["unscored"] == {}
    assert json.loads((out / "eval" / "eval.json").read_text())["loss"] == meta["loss"]
    assert run()[1]  # same parameters: reused
    assert not run(eval_max_length=24)[1]
    assert not run(precision="bf16")[1]
    assert not run(per_device_eval_batch_size=2)[1]
    assert run(per_device_eval_batch_size=2)[1]
    eval_file.write_text(json.dumps(_rows(4)[::-1][:3]))  # same path, other content
    meta, reused = run(per_device_eval_batch_size=2)
    assert not reused and meta["rows"] == 3
    meta, reused = run(per_device_eval_batch_size=2, eval_base_model=True)
    assert not reused and meta["loss_base"] == pytest.approx(meta["loss"]) and meta["heldout_base"]["rows"] == 3


def test_eval_max_length_is_validated():
    from hf_select.recipes.arguments import RecipeArguments

    with pytest.raises(ValueError, match="eval_max_length must be >= 8"):
        RecipeArguments(dataset_name="demo:10", output_dir="/tmp/x", eval_max_length=4)
    assert RecipeArguments(dataset_name="demo:10", output_dir="/tmp/x").eval_max_length == 2048


def test_the_shipped_evaluate_metric_loads_offline_and_equals_heldout_loss(tiny_lm_path, monkeypatch):
    import socket

    import evaluate

    from hf_select.metrics import HELDOUT_LOSS

    def no_network(*args, **kwargs):
        raise OSError("the heldout_loss metric tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    metric = evaluate.load(str(HELDOUT_LOSS), keep_in_memory=True)  # from the installed package, no Hub
    assert type(metric).__name__ == "HeldoutLoss" and metric.name == "heldout_loss"
    rows = [{**row, "input": ""} for row in _rows(6)]
    rows[5]["output"] = ""
    out = metric.compute(instruction=[r["instruction"] for r in rows], output=[r["output"] for r in rows],
                         model=str(tiny_lm_path), max_length=512, precision="fp32")
    expected = heldout_loss(str(tiny_lm_path), Dataset.from_list(rows), max_length=512, precision="fp32")
    assert out["heldout_loss"] == pytest.approx(expected.loss, rel=1e-6)
    assert out["row_mean_loss"] == pytest.approx(expected.row_mean_loss, rel=1e-6)
    assert (out["rows_scored"], out["tokens_scored"], out["unscored"]) == (5, expected.tokens_scored,
                                                                           {"empty_completion": 1})
    with pytest.raises(HFSelectError, match="pass the model"):
        metric.compute(instruction=["Say hi."], output=["Hi!"])
    with pytest.raises(HFSelectError, match=r"unknown options \['turns'\]"):
        metric.compute(instruction=["Say hi."], output=["Hi!"], model=str(tiny_lm_path), turns="last")
