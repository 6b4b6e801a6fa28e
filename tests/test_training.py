"""SFT through TRL's SFTTrainer: prompt-completion conversion, completion-only loss, seeds, eval loss, configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_file
from datasets import Dataset

from hf_select.errors import HFSelectError
from hf_select.training import (
    TrainConfig,
    build_sft_config,
    evaluate_loss,
    load_eval_dataset,
    to_prompt_completion,
    train_sft,
)


def _alpaca(n: int, offset: int = 0) -> Dataset:
    rows = [{"instruction": f"Add {i} and {i + 1}.", "input": "" if i % 2 else "show your work",
             "output": f"{i} + {i + 1} = {2 * i + 1}."} for i in range(offset, offset + n)]
    return Dataset.from_list(rows)


TINY = dict(num_train_epochs=1, per_device_train_batch_size=4, per_device_eval_batch_size=4, max_length=96,
            learning_rate=1e-3, logging_steps=1, precision="fp32")


# -- conversion --------------------------------------------------------------------------------------------------
def test_prompt_completion_from_every_format():
    alpaca = to_prompt_completion(Dataset.from_list([{"instruction": "Sum", "input": "1 2", "output": "3"}]))
    assert alpaca[0]["prompt"] == [{"role": "user", "content": "Sum\n1 2"}]
    assert alpaca[0]["completion"] == [{"role": "assistant", "content": "3"}]
    assert alpaca[0]["_row_id"] == 0

    turns = [("system", "Be brief."), ("human", "Hi"), ("gpt", "Yo"), ("human", "Bye"), ("gpt", "Ciao")]
    share = Dataset.from_list([{"conversations": [{"from": f, "value": v} for f, v in turns]}])
    last = to_prompt_completion(share)
    assert len(last) == 1
    assert [m["role"] for m in last[0]["prompt"]] == ["system", "user", "assistant", "user"]
    assert last[0]["completion"][0]["content"] == "Ciao"
    both = to_prompt_completion(share, turns="all")
    assert [r["completion"][0]["content"] for r in both] == ["Yo", "Ciao"]
    assert both["_row_id"] == [0, 0]

    pc = to_prompt_completion(Dataset.from_list([{"prompt": "Q?", "completion": "A."}]))
    assert pc[0]["prompt"][0] == {"role": "user", "content": "Q?"}


def test_prompt_completion_keeps_row_ids_and_counts_drops(caplog):
    ds = Dataset.from_list([
        {"instruction": "a", "input": "", "output": "x", "_row_id": 10},
        {"instruction": "b", "input": "", "output": "", "_row_id": 11},
        {"instruction": "c", "input": "", "output": "z", "_row_id": 12},
    ])
    with caplog.at_level("WARNING"):
        pc = to_prompt_completion(ds)
    assert pc["_row_id"] == [10, 12]
    assert "empty_response=1" in caplog.text
    with pytest.raises(HFSelectError, match="no row"):
        to_prompt_completion(ds.select([1]))


# -- configs -----------------------------------------------------------------------------------------------------
def test_train_config_validation_names_the_field():
    with pytest.raises(ValueError, match="TrainConfig.precision"):
        TrainConfig(precision="int4")
    with pytest.raises(ValueError, match="TrainConfig.per_device_train_batch_size"):
        TrainConfig(per_device_train_batch_size=0)
    with pytest.raises(ValueError, match="trl.SFTConfig does not know.*not_a_field"):
        TrainConfig(sft_kwargs={"not_a_field": 1})
    with pytest.raises(ValueError, match="set the TrainConfig field"):
        TrainConfig(sft_kwargs={"learning_rate": 1.0})
    assert TrainConfig(sft_kwargs='{"optim": "adamw_torch"}').sft_kwargs == {"optim": "adamw_torch"}
    assert TrainConfig(column_mapping='{"q": "instruction"}').column_mapping == {"q": "instruction"}
    with pytest.raises(ValueError, match="TrainConfig.column_mapping is not valid JSON"):
        TrainConfig(column_mapping="{q:")


def test_sft_config_cpu_defaults(tmp_path):
    args = build_sft_config(TrainConfig(seed=7, sft_kwargs={"optim": "adamw_torch"}), tmp_path)
    assert args.completion_only_loss is True
    assert args.bf16 is False and args.fp16 is False  # fp32 on CPU (TRL's own default would be bf16)
    assert args.seed == 7 and args.data_seed == 7
    assert args.push_to_hub is False
    assert (args.save_strategy, args.save_steps, args.save_total_limit) == ("steps", 500, 1)  # for resuming only
    assert build_sft_config(TrainConfig(save_steps=None), tmp_path).save_strategy == "no"
    assert build_sft_config(TrainConfig(save_checkpoints=True), tmp_path).save_strategy == "epoch"
    assert args.optim == "adamw_torch"
    assert build_sft_config(TrainConfig(), tmp_path, keep_row_ids=True).remove_unused_columns is False


# -- training ----------------------------------------------------------------------------------------------------
def test_train_sft_saves_model_and_learns(tiny_lm_path, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ds = _alpaca(24)
    before = evaluate_loss(str(tiny_lm_path), ds.select(range(8)), max_length=96, batch_size=4, precision="fp32")
    cfg = TrainConfig(**{**TINY, "num_train_epochs": 3})
    result = train_sft(ds, cfg, tmp_path / "m", model_name_or_path=str(tiny_lm_path))
    assert result.train_rows == 24 and result.global_step == 18
    assert np.isfinite(result.train_loss)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "README.md"):
        assert (tmp_path / "m" / name).is_file(), name
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert next(model.parameters()).dtype.is_floating_point
    AutoTokenizer.from_pretrained(tmp_path / "m")
    after = evaluate_loss(str(tmp_path / "m"), ds.select(range(8)), max_length=96, batch_size=4, precision="fp32")
    assert after.loss < before.loss - 0.5, (before.loss, after.loss)


def test_same_seed_same_weights(tiny_lm_path, tmp_path):
    import torch
    from safetensors.torch import load_file

    ds = _alpaca(8)
    cfg = TrainConfig(**{**TINY, "max_steps": 2})
    for name in ("a", "b"):
        train_sft(ds, cfg, tmp_path / name, model_name_or_path=str(tiny_lm_path))
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    w0 = load_file(tiny_lm_path / "model.safetensors")
    assert any(not torch.equal(a[k], w0[k]) for k in a)


def test_eval_loss_is_completion_only(tiny_lm_path):
    """The Trainer's eval_loss with batch size 1 equals the mean over rows of the completion tokens' loss given the
    prompt, computed independently by the IFD scorer (same chat-template token spans)."""
    from hf_select.scoring.ifd import IFDConfig, IFDScorer

    ds = _alpaca(6)
    ev = evaluate_loss(str(tiny_lm_path), ds, max_length=256, batch_size=1, precision="fp32")
    ifd = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template="chat", max_length=256,
                              dtype="float32", device="cpu", direct_prefix="bos"))
    scored = ifd(ds[:])
    assert ev.rows == 6
    assert ev.loss == pytest.approx(float(np.mean(scored["loss_conditioned"])), rel=1e-4)
    # the loss of the whole sequence (prompt included) would differ
    assert ev.loss != pytest.approx(float(np.mean(scored["loss_direct"])), rel=1e-3)


def test_chat_template_required(tiny_lm_plain_path, tmp_path):
    with pytest.raises(HFSelectError, match="chat_template_path"):
        train_sft(_alpaca(4), TrainConfig(**TINY), tmp_path / "m", model_name_or_path=str(tiny_lm_plain_path))


# -- eval sets -----------------------------------------------------------------------------------------------------
def test_mt_bench_join(tmp_path):
    (tmp_path / "mt_bench_questions.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"question_id": 1, "category": "x", "turns": ["Q1a", "Q1b"]},
        {"question_id": 2, "category": "x", "turns": ["Q2a", "Q2b"]},
    ]))
    ref = tmp_path / "ref.jsonl"
    ref.write_text(json.dumps({"question_id": 2, "choices": [{"index": 0, "turns": ["A2a", "A2b"]}]}) + "\n")
    with pytest.raises(HFSelectError, match="questions file"):
        load_eval_dataset(ref, questions=tmp_path / "missing.jsonl")
    ds = load_eval_dataset(ref, questions=tmp_path / "mt_bench_questions.jsonl")
    assert ds[0]["messages"] == [{"role": "user", "content": "Q2a"}, {"role": "assistant", "content": "A2a"},
                                 {"role": "user", "content": "Q2b"}, {"role": "assistant", "content": "A2b"}]
    pc = to_prompt_completion(ds, turns="all")
    assert [r["completion"][0]["content"] for r in pc] == ["A2a", "A2b"]


def test_real_eval_sets_load():
    ref = shared_file("eval/mt_bench_reference_gpt4.jsonl")
    mt = load_eval_dataset(ref)
    assert len(mt) == 30 and all(len(m) == 4 for m in mt["messages"])
    alpaca_eval = load_eval_dataset(shared_file("eval/alpaca_eval_gpt4_805.json"), limit=20)
    assert len(to_prompt_completion(alpaca_eval)) == 20


def test_bf16_on_a_cpu_builds_a_cpu_config(tmp_path):
    """transformers refuses bf16 without a GPU unless use_cpu is set: hf-select sets it (bf16 autocast on CPU)."""
    import torch

    from hf_select.training import build_sft_config

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: bf16 runs there")
    cfg = build_sft_config(TrainConfig(precision="bf16"), tmp_path)
    assert cfg.bf16 and cfg.use_cpu
