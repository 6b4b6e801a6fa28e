"""The completion-positions LM head of hf-select's SFT trainer: same losses, gradients and logged metrics as TRL's
``SFTTrainer`` on the same batches, and TRL's own path wherever the head does not apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_select.training import TrainConfig, build_sft_config, sft_trainer_class, to_prompt_completion
from hf_select.training.sft_head import completion_head_applies, completion_head_trainer_class


def _rows(n: int) -> Dataset:
    rows = [{"instruction": f"Write {i} words about the number {i}.", "input": "" if i % 3 else "be short",
             "output": " ".join(f"word{j}" for j in range(i % 7 + 1))} for i in range(n)]
    return Dataset.from_list(rows)


def _trainer(cls, tiny_lm_path, tmp_path, name, **sft):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_lm_path)
    cfg = TrainConfig(num_train_epochs=1, max_steps=3, per_device_train_batch_size=4, max_length=64,
                      learning_rate=1e-3, logging_steps=1, precision="fp32", save_steps=None, sft_kwargs=sft or None)
    args = build_sft_config(cfg, tmp_path / name)
    return cls(model=model, args=args, train_dataset=to_prompt_completion(_rows(12)), processing_class=tok)


def _train_recording(trainer) -> tuple[list[float], list[dict]]:
    losses = []
    compute_loss = trainer.compute_loss

    def recording(*a, **kw):
        loss = compute_loss(*a, **kw)
        losses.append(float(loss.detach()))
        return loss

    trainer.compute_loss = recording
    trainer.train()
    return losses, [h for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("packing", [False, True])
def test_same_losses_weights_and_metrics_as_trl(tiny_lm_path, tmp_path, packing):
    from trl import SFTTrainer

    sft = {"packing": True} if packing else {}
    ours = _trainer(completion_head_trainer_class(), tiny_lm_path, tmp_path, "ours", **sft)
    theirs = _trainer(SFTTrainer, tiny_lm_path, tmp_path, "theirs", **sft)
    batch = next(iter(ours.get_train_dataloader()))
    assert completion_head_applies(ours, ours.model, dict(batch), return_outputs=False)
    ours_losses, ours_logs = _train_recording(ours)
    theirs_losses, theirs_logs = _train_recording(theirs)
    assert len(ours_losses) == 3
    np.testing.assert_allclose(ours_losses, theirs_losses, rtol=1e-5)
    for a, b in zip(ours.model.state_dict().values(), theirs.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert len(ours_logs) == len(theirs_logs) == 3
    for a, b in zip(ours_logs, theirs_logs, strict=True):
        assert set(a) == set(b)
        for key in ("loss", "entropy", "mean_token_accuracy", "num_tokens"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


def test_eval_loss_matches_trl(tiny_lm_path, tmp_path):
    from trl import SFTTrainer

    ours = _trainer(completion_head_trainer_class(), tiny_lm_path, tmp_path, "ours")
    theirs = _trainer(SFTTrainer, tiny_lm_path, tmp_path, "theirs")
    ev = to_prompt_completion(_rows(9))
    a, b = ours.evaluate(eval_dataset=ev), theirs.evaluate(eval_dataset=ev)
    assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-5)
    assert a["eval_mean_token_accuracy"] == pytest.approx(b["eval_mean_token_accuracy"], rel=1e-6)


def test_falls_back_to_trl_where_the_head_does_not_apply(tiny_lm_path, tmp_path, monkeypatch):
    trainer = _trainer(completion_head_trainer_class(), tiny_lm_path, tmp_path, "fb")
    batch = dict(next(iter(trainer.get_train_dataloader())))
    assert completion_head_applies(trainer, trainer.model, batch, return_outputs=False)
    assert not completion_head_applies(trainer, trainer.model, batch, return_outputs=True)
    assert not completion_head_applies(trainer, trainer.model, {**batch, "shift_labels": batch["labels"]}, False)
    monkeypatch.setattr("hf_select.training.sft_head.MAX_LOGITS", 10)
    assert not completion_head_applies(trainer, trainer.model, batch, return_outputs=False)
    monkeypatch.undo()
    trainer.compute_loss_func = lambda *a, **k: None
    assert not completion_head_applies(trainer, trainer.model, batch, return_outputs=False)
    trainer.compute_loss_func = None
    trainer.args.loss_type = "dft"
    assert not completion_head_applies(trainer, trainer.model, batch, return_outputs=False)
    trainer.args.loss_type = "nll"
    for precision in ("bf16", "fp16"):  # autocast lives in the model's wrapped forward, which our head skips
        setattr(trainer.args, precision, True)
        assert not completion_head_applies(trainer, trainer.model, batch, return_outputs=False)
        setattr(trainer.args, precision, False)
    assert not completion_head_applies(trainer, trainer.model, {**batch, "_row_id": torch.arange(2)}, False)
    assert completion_head_applies(trainer, trainer.model, batch, return_outputs=False)

    calls = []
    parent = type(trainer).__mro__[1]
    real = parent.compute_loss

    def spy(self, *a, **kw):
        calls.append(kw.get("return_outputs"))
        return real(self, *a, **kw)

    monkeypatch.setattr(parent, "compute_loss", spy)
    trainer.model.eval()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, dict(batch))
        assert calls == []  # our head
        trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
    assert calls == [True]  # TRL's


def test_train_sft_uses_the_completion_head():
    assert sft_trainer_class() is completion_head_trainer_class()
    assert sft_trainer_class().__name__ == "CompletionHeadSFTTrainer"
