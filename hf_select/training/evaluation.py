"""Evaluation: the held-out loss of a model on an eval set, completion tokens only, through ``SFTTrainer.evaluate``.

:func:`evaluate_loss` converts the rows as training does (:func:`hf_select.training.rows.to_prompt_completion`, every
assistant turn by default), builds the same ``SFTConfig`` and trainer class as :func:`hf_select.training.train_sft`
and returns the Trainer's ``eval_loss`` in an :class:`EvalResult`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import TrainConfig
from .rows import to_prompt_completion
from .trainer import (
    _check_chat_template,
    _free_memory,
    _jsonable,
    build_sft_config,
    load_model_for_training,
    sft_trainer_class,
)


@dataclass
class EvalResult:
    """What :func:`evaluate_loss` returns: the Trainer's ``eval_loss`` (completion tokens only) and the row count."""

    loss: float
    rows: int
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def evaluate_loss(
    model: Any,
    eval_dataset: Any,
    *,
    tokenizer: Any = None,
    max_length: int = 1024,
    batch_size: int = 8,
    precision: str = "auto",
    column_mapping: Mapping[str, str] | None = None,
    turns: str = "all",
    chat_template_path: str | None = None,
    seed: int = 0,
) -> EvalResult:
    """Held-out mean loss of a model on an eval set, completion tokens only, through ``SFTTrainer.evaluate``.

    ``model`` is a Hub id, a folder or a loaded model (then pass ``tokenizer``). Every assistant turn of a
    multi-turn row is scored (``turns="all"``), each given the conversation before it. The value is the Trainer's
    ``eval_loss``: the mean over batches of each batch's mean token loss.

    Example:
        >>> evaluate_loss("out/final", load_eval_dataset("alpaca_eval_gpt4_805.json", limit=64)).loss  # doctest: +SKIP
        1.87
    """
    if isinstance(model, (str, os.PathLike)):
        name = str(model)
        model, tokenizer = load_model_for_training(name, config=TrainConfig(precision=precision))
    elif tokenizer is None:
        raise ValueError("evaluate_loss: pass the tokenizer together with a loaded model")
    else:
        name = getattr(model.config, "_name_or_path", "the model")
    config = TrainConfig(max_length=max_length, per_device_eval_batch_size=batch_size, precision=precision,
                         chat_template_path=chat_template_path, seed=seed,
                         column_mapping=dict(column_mapping or {}) or None)
    _check_chat_template(tokenizer, config, name)
    pc = to_prompt_completion(eval_dataset, column_mapping=column_mapping, turns=turns)
    was_training = model.training
    with tempfile.TemporaryDirectory(prefix="hf-select-eval-") as tmp:
        args = build_sft_config(config, tmp)
        trainer = sft_trainer_class()(model=model, args=args, train_dataset=pc.select(range(1)),
                                      processing_class=tokenizer)
        metrics = trainer.evaluate(eval_dataset=pc)
        del trainer
    model.train(was_training)
    loss = float(metrics["eval_loss"])
    _free_memory()
    return EvalResult(loss=loss, rows=len(pc), metrics=_jsonable(metrics))

