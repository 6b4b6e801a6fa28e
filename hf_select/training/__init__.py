"""Fine-tuning with TRL's ``SFTTrainer`` for every model a recipe trains (seed, pre-experienced, final), and the
held-out loss of a model on an eval set.

Rows in any supported format (:mod:`hf_select.formats`) become TRL's *conversational prompt-completion* rows:
``prompt`` is the list of messages before an assistant turn and ``completion`` is ``[that assistant message]``.
TRL then renders both with the model's chat template and computes the loss on the completion tokens only
(``completion_only_loss=True``). There is no hand-written training loop here: :func:`train_sft` builds an
``SFTConfig`` from a :class:`TrainConfig` and calls ``SFTTrainer.train``; :func:`evaluate_loss` calls
``SFTTrainer.evaluate`` and returns its ``eval_loss``.

The modules, one job each; each imports only modules above it in this list:

- :mod:`~hf_select.training.config`: configuration, :class:`TrainConfig` and its allowed values
  (:data:`PRECISIONS`, :data:`TURN_MODES`, :data:`MODEL_CONFIG_FIELDS`, ...), the precision
  (:func:`resolve_precision`) and the weights' dtype (:func:`training_dtype`), and the check that peft,
  bitsandbytes or a GPU are there when asked for (:func:`check_model_environment`);
- :mod:`~hf_select.training.rows`: conversion of rows to prompt-completion rows (:func:`to_prompt_completion`)
  and the held-out eval sets (:func:`load_eval_dataset`);
- :mod:`~hf_select.training.sft_head`: the trainer class, ``SFTTrainer`` with a cheaper LM head on CPU;
- :mod:`~hf_select.training.trainer`: trainer construction and the run (:func:`load_model_for_training`,
  :func:`build_sft_config`, :func:`sft_trainer_class`, :func:`train_sft`, :func:`record_adapter_base`);
- :mod:`~hf_select.training.evaluation`: the held-out loss (:func:`evaluate_loss`, :class:`EvalResult`).

Every name is importable from ``hf_select.training`` itself, as it was when this package was one module.

Example:
    >>> from datasets import Dataset
    >>> from hf_select.training import TrainConfig, to_prompt_completion
    >>> ds = Dataset.from_list([{"instruction": "Add 2 and 3.", "input": "", "output": "5"}])
    >>> pc = to_prompt_completion(ds)
    >>> pc[0]["prompt"], pc[0]["completion"]
    ([{'role': 'user', 'content': 'Add 2 and 3.'}], [{'role': 'assistant', 'content': '5'}])
    >>> result = train_sft(ds, TrainConfig(num_train_epochs=1), "out/seed",
    ...                    model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
    >>> evaluate_loss("out/seed", load_eval_dataset("alpaca_eval_gpt4_805.json")).loss  # doctest: +SKIP
    1.93
"""

from __future__ import annotations

from .config import (
    DERIVED_SFT_FIELDS,
    MODEL_CONFIG_FIELDS,
    MODEL_DTYPES,
    OWN_TRAIN_FIELDS,
    PRECISIONS,
    TURN_MODES,
    TrainConfig,
    TrainSettingError,
    check_model_environment,
    owned_sft_fields,
    resolve_precision,
    sharded_training,
    training_dtype,
)
from .evaluation import EvalResult, evaluate_loss
from .rows import DEMO_EVAL_SEED, load_eval_dataset, to_prompt_completion
from .trainer import (
    SFTResult,
    build_sft_config,
    load_model_for_training,
    record_adapter_base,
    sft_trainer_class,
    train_sft,
)
from .trainer import _free_memory as _free_memory  # stages.py and heldout.py free memory between models

__all__ = [
    "DEMO_EVAL_SEED", "DERIVED_SFT_FIELDS", "MODEL_CONFIG_FIELDS", "MODEL_DTYPES", "OWN_TRAIN_FIELDS", "PRECISIONS",
    "TURN_MODES", "EvalResult", "SFTResult", "TrainConfig", "TrainSettingError", "build_sft_config",
    "check_model_environment", "evaluate_loss", "load_eval_dataset", "load_model_for_training", "owned_sft_fields",
    "record_adapter_base", "resolve_precision", "sft_trainer_class", "sharded_training", "to_prompt_completion",
    "train_sft", "training_dtype",
]
