"""Fine-tuning with TRL's ``SFTTrainer`` for every model a recipe trains (seed, pre-experienced, final), and the
held-out loss of a model on an eval set.

Rows in any supported format (:mod:`hf_select.formats`) become TRL's *conversational prompt-completion* rows:
``prompt`` is the list of messages before an assistant turn and ``completion`` is ``[that assistant message]``.
TRL then renders both with the model's chat template and computes the loss on the completion tokens only
(``completion_only_loss=True``). There is no hand-written training loop here: :func:`train_sft` builds an
``SFTConfig`` from a :class:`TrainConfig` and calls ``SFTTrainer.train``; :func:`evaluate_loss` calls
``SFTTrainer.evaluate`` and returns its ``eval_loss``.

CPU settings (``benchmarks/sft_cpu.py`` measures them against a plain PyTorch loop on the same batches): the trainer
is :func:`sft_trainer_class`, whose LM head on CPU projects only the completion positions (same loss as TRL's; for
SmolLM2-135M, 2 steps of batch 8 at 1 thread took 17.5 s of CPU time instead of 25.6 s with TRL's own head, measured
with cProfile on a loaded machine: :mod:`hf_select.sft_head`); no gradient checkpointing; fp32 unless ``precision``
asks for bf16 autocast (it changes the loss slightly, and was slower on this project's CPU); no packing (it changes
the batches and so the loss); ``dataloader_num_workers`` 0 (loading and collating the rows was about 2% of the
profiled CPU time).

On a GPU the weights load in bf16 where they are never updated in bf16 (:func:`training_dtype`: LoRA's frozen base,
FSDP/DeepSpeed's fp32 master shards), else in fp32 with bf16 autocast. TRL's ``ModelConfig`` fields
(:data:`MODEL_CONFIG_FIELDS`: LoRA, 4-bit, dtype, attention) are :class:`TrainConfig` fields; with ``use_peft`` the
adapter comes from TRL's ``get_peft_config`` and the model folder holds only the adapter, which
:func:`hf_select.models.load_causal_lm` loads on its base.

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

import dataclasses
import gc
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .columns import ROW_ID
from .errors import HFSelectError
from .formats import RowError, assistant_turns, detect_format, row_to_messages

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
TURN_MODES = ("last", "all")
_FORMAT_COLUMNS = ("instruction", "input", "output", "system", "history", "conversations", "chosen", "messages",
                   "prompt", "completion", "question", "query", "response", "answer", "_raw", ROW_ID)
DEMO_EVAL_SEED = 10_007  # held-out demo rows: another seed than any demo training set

# TrainConfig's fields that are trl.ModelConfig fields of the same name (how the model is loaded, and the LoRA
# adapter): TrainConfig.model_config() builds a trl.ModelConfig from them, and TRL's get_peft_config and
# get_quantization_config read it.
MODEL_CONFIG_FIELDS = ("dtype", "attn_implementation", "use_peft", "lora_r", "lora_alpha", "lora_dropout",
                       "lora_target_modules", "load_in_4bit")
# TrainConfig's own fields, which trl.SFTConfig does not have; every other TrainConfig field is an SFTConfig field of
# the same name and is passed to it as it is (build_sft_config, by introspection; tests/test_recipe_args.py checks it).
OWN_TRAIN_FIELDS = ("precision", "save_checkpoints", "turns", "column_mapping", "sft_kwargs", *MODEL_CONFIG_FIELDS)
MODEL_DTYPES = ("auto", "bfloat16", "float16", "float32")
# SFTConfig fields that build_sft_config derives itself (from precision, seed, save_checkpoints, ...).
DERIVED_SFT_FIELDS = ("output_dir", "bf16", "fp16", "activation_checkpointing", "data_seed", "save_strategy",
                      "completion_only_loss", "push_to_hub", "remove_unused_columns")


@dataclass
class TrainConfig:
    """Settings of one supervised fine-tuning run (TRL ``SFTTrainer``), shared by seed, pre-experienced and final
    models. Anything else ``SFTConfig`` accepts goes through ``sft_kwargs`` (a recipe also takes any ``SFTConfig``
    field at the top level of its YAML or as a flag, and moves it there).

    Every field except :data:`OWN_TRAIN_FIELDS` is the ``trl.SFTConfig`` field of the same name, with hf-select's
    default (cosine schedule, 3% warmup, seed 0, no gradient checkpointing, resumable checkpoints every 500 steps)
    and passed on unchanged; the own fields are translated (``precision`` -> ``bf16``/``fp16``, ``save_checkpoints``
    -> ``save_strategy``, ``turns`` and ``column_mapping`` -> the rows).

    Example:
        >>> TrainConfig(num_train_epochs=1, max_length=256).max_length
        256
    """

    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate of AdamW."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs over the selected rows."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: use epochs)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Rows per device per forward pass."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Rows per device per eval forward pass."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Forward passes per optimizer step."})
    max_length: int = field(default=1024, metadata={"help": "Tokens of prompt + completion kept (truncated)."})
    warmup_steps: float = field(
        default=0.03, metadata={"help": "Linear warmup: steps (>= 1) or a fraction of all steps (< 1)."}
    )
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule (transformers name)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    precision: str = field(
        default="auto",
        metadata={"help": f"One of {PRECISIONS}. auto: bf16 mixed precision on GPUs that support it, else fp32."},
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass (less memory, ~20% slower)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every N steps."})
    report_to: str = field(default="none", metadata={"help": "Trackers: none, tensorboard, wandb, trackio, ..."})
    seed: int = field(default=0, metadata={"help": "Seed of the model init, data order and dropout."})
    save_checkpoints: bool = field(
        default=False, metadata={"help": "Save a checkpoint every epoch (the final model is always saved)."}
    )
    save_steps: int | None = field(
        default=500,
        metadata={"help": "Save a Trainer checkpoint (model, optimizer, scheduler, RNG) every N optimizer steps "
                          "inside the stage's temporary folder, so that a killed recipe resumes training from the "
                          "last one; they are removed when the stage finishes. None: no mid-training checkpoints. "
                          "Ignored with save_checkpoints (those are kept, and resumed from)."},
    )
    chat_template_path: str | None = field(
        default=None,
        metadata={"help": "Chat template (a .jinja file or a tokenizer folder/id) for models that have none."},
    )
    turns: str = field(
        default="last",
        metadata={"help": f"Assistant turns that become training rows, one of {TURN_MODES} (multi-turn rows)."},
    )
    column_mapping: dict[str, str] | str | None = field(
        default=None,
        metadata={"help": "Map your column names to instruction/input/output/messages/... names (a dict, or JSON)."},
    )
    sft_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Any other trl.SFTConfig field, e.g. {'optim': 'adamw_torch_fused', 'packing': true}."},
    )
    # -- trl.ModelConfig fields (MODEL_CONFIG_FIELDS): how the model is loaded, and the LoRA adapter ------------------
    dtype: str | None = field(
        default=None,
        metadata={"help": "trl.ModelConfig.dtype: the dtype the trained model's weights load in, one of "
                          f"{MODEL_DTYPES} ('auto': the checkpoint's own). None: bfloat16 on a GPU with bf16 "
                          "precision for LoRA and under FSDP/DeepSpeed (which keep float32 master shards), else "
                          "float32 (always on a CPU); see hf_select.training.training_dtype."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "trl.ModelConfig.attn_implementation: eager, sdpa, flash_attention_2, ... (None: the "
                          "transformers default)."},
    )
    use_peft: bool = field(
        default=False,
        metadata={"help": "trl.ModelConfig.use_peft: train a LoRA adapter (TRL's get_peft_config) instead of every "
                          "weight; the model folders then hold the adapter, loaded on its base wherever a trained "
                          "model is read again. Needs peft (pip install 'hf-select[peft]')."},
    )
    lora_r: int = field(default=16, metadata={"help": "trl.ModelConfig.lora_r: the LoRA rank (with use_peft)."})
    lora_alpha: int = field(
        default=32, metadata={"help": "trl.ModelConfig.lora_alpha: the LoRA scaling numerator (with use_peft)."}
    )
    lora_dropout: float = field(
        default=0.05, metadata={"help": "trl.ModelConfig.lora_dropout: dropout on the LoRA input (with use_peft)."}
    )
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "trl.ModelConfig.lora_target_modules: module names that get an adapter, or 'all-linear' "
                          "(None: peft's default for the architecture, e.g. q_proj v_proj for Llama)."},
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={"help": "trl.ModelConfig.load_in_4bit: QLoRA, the base model quantized to 4 bits by bitsandbytes "
                          "(needs use_peft, a CUDA GPU and pip install bitsandbytes)."},
    )

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.turns not in TURN_MODES:
            raise ValueError(f"TrainConfig.turns must be one of {TURN_MODES}, got {self.turns!r}")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "max_length", "logging_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.save_steps is not None and int(self.save_steps) < 1:
            raise ValueError(f"TrainConfig.save_steps must be >= 1 or None (no checkpoints), got {self.save_steps}")
        if self.max_steps <= 0 and self.max_steps != -1:
            raise ValueError(f"TrainConfig.max_steps must be -1 (use epochs) or >= 1, got {self.max_steps}")
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise ValueError(f"TrainConfig.num_train_epochs must be > 0, got {self.num_train_epochs}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if isinstance(self.sft_kwargs, str):
            try:
                self.sft_kwargs = json.loads(self.sft_kwargs) if self.sft_kwargs.strip() else None
            except json.JSONDecodeError as err:
                raise ValueError(f"TrainConfig.sft_kwargs is not valid JSON: {err}") from err
        if isinstance(self.column_mapping, str):
            try:
                self.column_mapping = json.loads(self.column_mapping) if self.column_mapping.strip() else None
            except json.JSONDecodeError as err:
                raise ValueError(f"TrainConfig.column_mapping is not valid JSON: {err}") from err
        if self.column_mapping is not None and not isinstance(self.column_mapping, dict):
            raise ValueError("TrainConfig.column_mapping must map column names to names, e.g. "
                             f"{{'question': 'instruction'}}; got {self.column_mapping!r}")
        if self.sft_kwargs is not None and not isinstance(self.sft_kwargs, dict):
            raise ValueError(f"TrainConfig.sft_kwargs must be a dict of SFTConfig fields, got {self.sft_kwargs!r}")
        self._check_model_fields()
        if self.sft_kwargs:
            from trl import SFTConfig

            known = {f.name for f in dataclasses.fields(SFTConfig)}
            unknown = sorted(set(self.sft_kwargs) - known)
            if unknown:
                raise ValueError(f"TrainConfig.sft_kwargs has keys that trl.SFTConfig does not know: {unknown}")
            owned = sorted(set(self.sft_kwargs) & set(owned_sft_fields()))
            if owned:
                raise ValueError(
                    f"TrainConfig.sft_kwargs sets {owned}, which are TrainConfig fields or set by hf-select; "
                    "set the TrainConfig field instead."
                )

    def _check_model_fields(self) -> None:
        """The trl.ModelConfig fields: known values, and peft / bitsandbytes / a GPU where they are needed."""
        if self.dtype is not None and self.dtype not in MODEL_DTYPES:
            raise ValueError(f"TrainConfig.dtype must be one of {MODEL_DTYPES} or None (hf-select's choice), "
                             f"got {self.dtype!r}")
        if isinstance(self.lora_target_modules, (list, tuple)):
            modules = [str(m) for m in self.lora_target_modules]
            self.lora_target_modules = modules[0] if len(modules) == 1 else modules  # as trl.ModelConfig does
        if int(self.lora_r) < 1 or int(self.lora_alpha) < 1:
            raise ValueError(f"TrainConfig.lora_r and lora_alpha must be >= 1, got {self.lora_r}, {self.lora_alpha}")
        if not 0 <= float(self.lora_dropout) < 1:
            raise ValueError(f"TrainConfig.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        check_model_environment(use_peft=self.use_peft, load_in_4bit=self.load_in_4bit)

    def model_config(self, model_name_or_path: str | None = None) -> Any:
        """The ``trl.ModelConfig`` of these settings (for TRL's ``get_peft_config`` / ``get_quantization_config``),
        with the weights' dtype resolved by :func:`training_dtype`.

        Example:
            >>> mc = TrainConfig(use_peft=True, lora_r=4, lora_target_modules=["all-linear"]).model_config("m")
            >>> mc.use_peft, mc.lora_r, mc.lora_target_modules, mc.model_name_or_path
            (True, 4, 'all-linear', 'm')
        """
        from trl import ModelConfig

        values = {name: getattr(self, name) for name in MODEL_CONFIG_FIELDS}
        values["dtype"] = training_dtype(self.dtype, self.precision, quantized=self.load_in_4bit,
                                         frozen_base=self.use_peft)
        return ModelConfig(model_name_or_path=model_name_or_path, **values)

    @classmethod
    def from_object(cls, obj: Any, **overrides: Any) -> TrainConfig:
        """Build from any object carrying the same field names (e.g. a recipe's parsed arguments).

        Example:
            >>> from types import SimpleNamespace
            >>> TrainConfig.from_object(SimpleNamespace(learning_rate=1e-4), num_train_epochs=1).learning_rate
            0.0001
        """
        values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls) if hasattr(obj, f.name)}
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (for cards and stage records), with any token hidden."""
        from .errors import scrub

        return scrub(dataclasses.asdict(self))


def owned_sft_fields() -> tuple[str, ...]:
    """The ``SFTConfig`` fields hf-select sets itself, which ``sft_kwargs`` may not set: TrainConfig's fields that
    ``SFTConfig`` has, and :data:`DERIVED_SFT_FIELDS`.

    Example:
        >>> {"learning_rate", "bf16", "output_dir"} <= set(owned_sft_fields()), "optim" in owned_sft_fields()
        (True, False)
    """
    passed = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in OWN_TRAIN_FIELDS]
    return (*passed, *DERIVED_SFT_FIELDS)


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on a GPU that supports it, else ``fp32`` (CPU training is exact and not slower).

    Example:
        >>> resolve_precision("fp32")
        'fp32'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


class TrainSettingError(HFSelectError, ValueError):
    """A training setting this machine cannot honour (PEFT without peft, 4-bit without bitsandbytes or a GPU)."""


def check_model_environment(*, use_peft: bool, load_in_4bit: bool, cuda: bool | None = None) -> None:
    """Fail with one line when ``use_peft`` lacks peft, or ``load_in_4bit`` lacks ``use_peft``, bitsandbytes or a
    CUDA GPU (``cuda``: None asks torch).

    Example:
        >>> check_model_environment(use_peft=False, load_in_4bit=False)
        >>> try:
        ...     check_model_environment(use_peft=True, load_in_4bit=True, cuda=False)
        ... except TrainSettingError as err:
        ...     print(str(err)[:53])
        load_in_4bit needs a CUDA GPU (bitsandbytes quantizes
    """
    import importlib.util

    if use_peft and importlib.util.find_spec("peft") is None:
        raise TrainSettingError("use_peft needs the peft package: pip install 'hf-select[peft]' (or pip install "
                                "peft), or set use_peft false")
    if not load_in_4bit:
        return
    if not use_peft:
        raise TrainSettingError("load_in_4bit trains a LoRA adapter on a 4-bit base (QLoRA): set use_peft true too, "
                                "or set load_in_4bit false")
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        raise TrainSettingError("load_in_4bit needs a CUDA GPU (bitsandbytes quantizes on one); set load_in_4bit "
                                "false (LoRA on the full-precision model: use_peft true) or run on a GPU machine")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainSettingError("load_in_4bit needs the bitsandbytes package: pip install bitsandbytes, or set "
                                "load_in_4bit false")


def sharded_training() -> bool:
    """Whether this process was launched with FSDP or DeepSpeed (``accelerate launch --config_file
    recipes/accelerate/fsdp.yaml`` or ``zero3.yaml``): the launcher's ``ACCELERATE_USE_FSDP`` /
    ``ACCELERATE_USE_DEEPSPEED``.

    Example:
        >>> isinstance(sharded_training(), bool)
        True
    """
    return any(os.environ.get(name, "").lower() in ("1", "true")
               for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))


def training_dtype(dtype: str | None, precision: str, *, cuda: bool | None = None,
                   bf16_supported: bool | None = None, quantized: bool = False, frozen_base: bool = False,
                   sharded: bool | None = None) -> str:
    """The dtype the trained model's weights load in (a ``trl.ModelConfig.dtype`` name).

    An explicit ``dtype`` is kept. ``None`` (hf-select's choice) is ``bfloat16`` on a GPU where ``precision``
    resolves to bf16 (``auto`` on a GPU that supports it, or ``bf16``) and the bf16 weights are never updated in
    bf16:

    - ``frozen_base`` (LoRA, ``use_peft``): the base is frozen, and peft keeps the adapter's weights in float32;
    - ``sharded`` (FSDP or DeepSpeed ZeRO, :func:`sharded_training` when None): accelerate and DeepSpeed keep
      float32 master copies of the weights' shards, so bf16 loading halves only the loading memory;
    - ``quantized`` (a 4-bit base): its compute dtype.

    A full fine-tune without sharding (one GPU, DDP) keeps ``float32`` master weights with bf16 autocast: AdamW
    updating bf16 weights directly loses every step smaller than a bf16 rounding step (at learning rate 2e-5 most
    of them), so ask for ``dtype: bfloat16`` there only knowingly (it halves the weights and the Adam state).
    ``precision: fp32`` (asked) and ``fp16`` (its gradient scaler needs float32 weights) keep ``float32``; a CPU
    always does (``precision: bf16`` is autocast there). ``cuda`` and ``bf16_supported`` default to what torch
    reports.

    Example:
        >>> training_dtype(None, "auto", cuda=True, bf16_supported=True, frozen_base=True)
        'bfloat16'
        >>> training_dtype(None, "auto", cuda=True, bf16_supported=True, sharded=True)
        'bfloat16'
        >>> training_dtype(None, "auto", cuda=True, bf16_supported=True, sharded=False)
        'float32'
        >>> training_dtype(None, "fp32", cuda=True, bf16_supported=True, sharded=True)
        'float32'
        >>> training_dtype("bfloat16", "auto", cuda=False)
        'bfloat16'
    """
    if dtype is not None:
        if dtype not in MODEL_DTYPES:
            raise ValueError(f"dtype must be one of {MODEL_DTYPES} or None, got {dtype!r}")
        return dtype
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if cuda is None or bf16_supported is None:
        import torch

        cuda = torch.cuda.is_available() if cuda is None else cuda
        bf16_supported = (cuda and torch.cuda.is_bf16_supported()) if bf16_supported is None else bf16_supported
    if not cuda or precision in ("fp32", "fp16"):
        return "float32"
    if quantized:
        return "bfloat16" if bf16_supported else "float16"
    if not (precision == "bf16" or bf16_supported):
        return "float32"
    sharded = sharded_training() if sharded is None else sharded
    return "bfloat16" if frozen_base or sharded else "float32"


# -- data ---------------------------------------------------------------------------------------------------------
def _clean(message: Mapping[str, Any]) -> dict[str, str]:
    return {"role": message["role"], "content": message["content"]}


def to_prompt_completion(
    dataset: Any,
    *,
    column_mapping: Mapping[str, str] | None = None,
    turns: str = "last",
    drop_empty: bool = True,
) -> Any:
    """Convert rows of any supported format into TRL's conversational prompt-completion rows.

    Output columns: ``prompt`` (messages before the assistant turn), ``completion`` (``[assistant message]``) and
    ``_row_id`` (kept from the input when present, else the row's index). With ``turns="all"`` a multi-turn row gives
    one output row per assistant turn. Rows that cannot be converted are dropped and counted per reason in a
    warning (``dataset.info.description`` is left alone); ``drop_empty`` also drops empty responses.

    Raises:
        HFSelectError: when no row can be converted.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_list([{"messages": [{"role": "user", "content": "Hi"},
        ...                                      {"role": "assistant", "content": "Hello"}]}])
        >>> to_prompt_completion(ds)[0]["completion"]
        [{'role': 'assistant', 'content': 'Hello'}]
    """
    from datasets import Dataset

    if turns not in TURN_MODES:
        raise ValueError(f"turns must be one of {TURN_MODES}, got {turns!r}")
    fmt = detect_format(dataset.column_names, column_mapping)
    has_ids = ROW_ID in dataset.column_names
    wanted = set(_FORMAT_COLUMNS) | set(column_mapping or {})
    keep = [c for c in dataset.column_names if c in wanted]
    if len(keep) < len(dataset.column_names):
        dataset = dataset.select_columns(keep)  # scores and embeddings are not read
    rows: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    for i, row in enumerate(dataset):
        rid = int(row[ROW_ID]) if has_ids else i
        try:
            messages = row_to_messages(row, fmt, column_mapping)
        except RowError as err:
            dropped[err.status] = dropped.get(err.status, 0) + 1
            continue
        for t in assistant_turns(messages, turns):
            if drop_empty and not messages[t]["content"].strip():
                dropped["empty_response"] = dropped.get("empty_response", 0) + 1
                continue
            rows.append({"prompt": [_clean(m) for m in messages[:t]], "completion": [_clean(messages[t])],
                         ROW_ID: rid})
    if dropped:
        logger.warning("prompt-completion conversion dropped %d rows: %s", sum(dropped.values()),
                       ", ".join(f"{k}={v}" for k, v in sorted(dropped.items())))
    if not rows:
        raise HFSelectError(f"no row could be turned into a prompt and a completion (dropped: {dropped}).")
    return Dataset.from_list(rows)


def load_eval_dataset(source: str | os.PathLike, *, questions: str | os.PathLike | None = None,
                      limit: int | None = None) -> Any:
    """Load a held-out eval set: any file :func:`hf_select.io.load_rows` reads (e.g. AlpacaEval's
    ``alpaca_eval_gpt4_805.json`` with instruction/output), MT-Bench references (``question_id`` + ``choices``)
    joined with their questions (``questions``, default ``mt_bench_questions.jsonl`` beside the file) into one
    ``messages`` conversation per question, or ``demo:N``: N clean rows of the built-in demo dataset generated with
    another seed than the demo training rows (:data:`DEMO_EVAL_SEED`).

    Example:
        >>> ds = load_eval_dataset("../shared/data/eval/mt_bench_reference_gpt4.jsonl")  # doctest: +SKIP
        >>> ds.column_names  # doctest: +SKIP
        ['question_id', 'messages']
    """
    from datasets import Dataset

    from .io import load_rows

    spec = str(source)
    if spec == "demo" or spec.startswith("demo:"):
        from .demo import make_demo_dataset

        n = int(spec.split(":", 1)[1]) if ":" in spec else 200
        ds = make_demo_dataset(n=n, seed=DEMO_EVAL_SEED, corrupt_fraction=0.0)
        return ds.select(range(min(limit, len(ds)))) if limit is not None else ds
    ds = load_rows(source)
    if {"question_id", "choices"} <= set(ds.column_names):
        qpath = Path(questions) if questions else Path(source).with_name("mt_bench_questions.jsonl")
        if not qpath.is_file():
            raise HFSelectError(f"{source} holds MT-Bench answers; their questions file {qpath} is missing "
                                "(pass questions=...).")
        qs = {int(r["question_id"]): r["turns"] for r in load_rows(qpath)}
        rows = []
        for r in ds:
            q = qs.get(int(r["question_id"]))
            answers = (r["choices"] or [{}])[0].get("turns") or []
            if not q or len(answers) < len(q):
                continue
            messages = []
            for user, assistant in zip(q, answers, strict=False):
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
            rows.append({"question_id": int(r["question_id"]), "messages": messages})
        if not rows:
            raise HFSelectError(f"{source}: no MT-Bench answer matched a question in {qpath}.")
        ds = Dataset.from_list(rows)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds


# -- model ----------------------------------------------------------------------------------------------------------
def load_model_for_training(model_name_or_path: str, *, revision: str | None = None,
                            trust_remote_code: bool = False, config: TrainConfig | None = None) -> tuple[Any, Any]:
    """Load a causal LM for training, and its tokenizer.

    The weights load in :func:`training_dtype`'s dtype (float32 master weights on a CPU; bfloat16 on a GPU that
    supports it, unless ``config`` asks otherwise), with ``config``'s ``attn_implementation``; ``load_in_4bit``
    quantizes the base with TRL's ``get_quantization_config`` (QLoRA). A folder holding a LoRA adapter (a model
    trained with ``use_peft``) loads as its base with the adapter merged (:func:`hf_select.models.load_adapter_model`).
    Offline, the default SmolLM2 resolves to its plain bf16 folder (see :mod:`hf_select.models`).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from .models import adapter_base, load_adapter_model, load_tokenizer, resolve_model_path

    config = config or TrainConfig()
    path = resolve_model_path(model_name_or_path, revision)
    dtype = training_dtype(config.dtype, config.precision, quantized=config.load_in_4bit,
                           frozen_base=config.use_peft)
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code,
                              "dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    if config.load_in_4bit:
        from accelerate import PartialState
        from trl import get_quantization_config

        kwargs["quantization_config"] = get_quantization_config(config.model_config(str(path)))
        kwargs["device_map"] = {"": PartialState().local_process_index}  # each process its own GPU
    if adapter_base(path) is not None:
        tokenizer = load_tokenizer(path, revision=revision, trust_remote_code=trust_remote_code)
        return load_adapter_model(path, **kwargs), tokenizer
    tokenizer = load_tokenizer(path, revision=revision, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if getattr(model.config, "quantization_config", None) is not None and not config.load_in_4bit:
        raise HFSelectError(f"{model_name_or_path} is a quantized model; Trainer cannot fully fine-tune it. Use a "
                            "plain (bf16/fp32) checkpoint (see hf_select.models for the offline SmolLM2 folder), or "
                            "train a LoRA adapter on it (use_peft true).")
    return model, tokenizer


def _check_chat_template(tokenizer: Any, config: TrainConfig, name: str) -> None:
    if not getattr(tokenizer, "chat_template", None) and not config.chat_template_path:
        raise HFSelectError(
            f"{name} has no chat template, which TRL's conversational prompt-completion format needs; set "
            "TrainConfig.chat_template_path (e.g. an instruct model's folder or a .jinja file)."
        )


def build_sft_config(config: TrainConfig, output_dir: str | os.PathLike, *, keep_row_ids: bool = False,
                     has_eval: bool = False) -> Any:
    """The ``trl.SFTConfig`` of one run: completion-only loss, fixed seed, fp32 on CPU / bf16 on GPU, no pushing.

    Example:
        >>> build_sft_config(TrainConfig(), "/tmp/run").completion_only_loss
        True
    """
    from trl import SFTConfig

    precision = resolve_precision(config.precision)
    kwargs: dict[str, Any] = dict(config.sft_kwargs or {})
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    # transformers 5.23 renamed gradient_checkpointing (TRL's default: on) to activation_checkpointing
    kwargs["activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"] = (
        config.gradient_checkpointing
    )
    if has_eval:
        kwargs.setdefault("eval_strategy", "epoch")
    save_strategy = "epoch" if config.save_checkpoints else "no"  # epoch checkpoints are kept, and resumed from
    if config.save_steps is not None and not config.save_checkpoints:
        save_strategy = "steps"
        kwargs["save_steps"] = int(config.save_steps)
        kwargs.setdefault("save_total_limit", 1)  # resuming needs only the last one
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        kwargs.setdefault("use_cpu", True)  # several CPU processes (torchrun): gloo DDP, not one process each
    if precision == "bf16" and not torch.cuda.is_available():
        kwargs.setdefault("use_cpu", True)  # bf16 autocast on a CPU: transformers accepts it only with use_cpu
    if not torch.cuda.is_available():
        # Pinned memory only speeds up copies to a CUDA device; without one torch warns on every DataLoader.
        kwargs.setdefault("dataloader_pin_memory", False)
    # TrainConfig's SFTConfig fields as they are; gradient_checkpointing and save_steps are translated above
    passed = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)
              if f.name not in (*OWN_TRAIN_FIELDS, "gradient_checkpointing", "save_steps")}
    return SFTConfig(
        **passed,
        output_dir=str(output_dir),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        data_seed=config.seed,
        save_strategy=save_strategy,
        completion_only_loss=True,
        push_to_hub=False,
        # keep `_row_id` for the per-row loss collator (the TRL collator ignores the other columns)
        remove_unused_columns=not keep_row_ids,
        **kwargs,
    )


def sft_trainer_class() -> type:
    """The trainer class :func:`train_sft` uses: TRL's ``SFTTrainer`` with the completion-positions LM head on CPU
    (:class:`hf_select.sft_head.CompletionHeadSFTTrainer`; same loss, less work: see :mod:`hf_select.sft_head`).

    Example:
        >>> sft_trainer_class().__name__
        'CompletionHeadSFTTrainer'
    """
    from .sft_head import completion_head_trainer_class

    return completion_head_trainer_class()


@dataclass
class SFTResult:
    """What :func:`train_sft` returns."""

    output_dir: str
    train_rows: int
    train_loss: float | None
    global_step: int
    metrics: dict[str, Any]
    row_losses: dict[int, float] | None = None
    resumed_from_step: int | None = None  # the global step of the checkpoint training resumed from, if any

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.row_losses is not None:
            out["row_losses"] = {str(k): v for k, v in self.row_losses.items()}
        return out


def train_sft(
    train_dataset: Any,
    config: TrainConfig,
    output_dir: str | os.PathLike,
    *,
    model_name_or_path: str | None = None,
    model: Any = None,
    tokenizer: Any = None,
    eval_dataset: Any = None,
    callbacks: Sequence[Any] = (),
    record_row_losses: bool = False,
    model_card_name: str | None = None,
    dataset_name: str | None = None,
    resume: bool = False,
) -> SFTResult:
    """Fine-tune a causal LM on ``train_dataset`` (any supported row format) with TRL's ``SFTTrainer``, loss on the
    completion only, and save the final model + tokenizer (+ TRL's model card) to ``output_dir``.

    Pass either ``model_name_or_path`` (Hub id or folder; loaded in float32) or ``model`` and ``tokenizer``.
    With ``record_row_losses`` the loss of every training row at every step it was seen is kept by ``_row_id``
    (:class:`hf_select.callbacks.PerRowLossCallback`) and returned as the mean per row.

    With ``resume`` and a Trainer checkpoint (``checkpoint-N``) already in ``output_dir`` (a run killed part way),
    training continues from the last one: weights, optimizer, scheduler, RNG states and the position in the data
    order are restored, so the result matches an uninterrupted run's. Checkpoints written for ``save_steps`` are
    removed once the final model is saved.

    Example:
        >>> result = train_sft(subset, TrainConfig(num_train_epochs=1), "out/final",
        ...                    model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
        >>> result.train_loss  # doctest: +SKIP
        1.21
    """
    from .callbacks import PerRowLossCallback, RowIdCollator

    if model is None:
        if model_name_or_path is None:
            raise ValueError("train_sft needs model_name_or_path, or model and tokenizer")
        model, tokenizer = load_model_for_training(model_name_or_path, config=config)
    elif tokenizer is None:
        raise ValueError("train_sft: pass the tokenizer together with the model")
    name = model_name_or_path or getattr(model.config, "_name_or_path", "the model")
    _check_chat_template(tokenizer, config, name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_pc = to_prompt_completion(train_dataset, column_mapping=config.column_mapping, turns=config.turns)
    eval_pc = None
    if eval_dataset is not None:
        eval_pc = to_prompt_completion(eval_dataset, column_mapping=config.column_mapping, turns="all")
    args = build_sft_config(config, output_dir, keep_row_ids=record_row_losses, has_eval=eval_pc is not None)
    all_callbacks = list(callbacks)
    row_cb = None
    if record_row_losses:
        if args.packing or args.padding_free:
            raise ValueError("record_row_losses needs one row per sequence: set packing/padding_free off")
        row_cb = PerRowLossCallback()
        all_callbacks.append(row_cb)
    peft_config = None
    if config.use_peft:
        from trl import get_peft_config

        peft_config = get_peft_config(config.model_config(name))
    trainer = sft_trainer_class()(model=model, args=args, train_dataset=train_pc, eval_dataset=eval_pc,
                                  processing_class=tokenizer, callbacks=all_callbacks, peft_config=peft_config)
    if record_row_losses:
        trainer.data_collator = RowIdCollator(trainer.data_collator)
    resume_from, resumed_step = _last_checkpoint(output_dir) if resume else (None, None)
    if resume_from is not None:
        logger.warning("train_sft: resuming from %s (global step %d)", resume_from, resumed_step)
    out = trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model(str(output_dir))
    if config.use_peft and model_name_or_path is not None and trainer.is_world_process_zero():
        record_adapter_base(output_dir, model_name_or_path)
    if trainer.is_world_process_zero() and config.save_steps is not None and not config.save_checkpoints:
        for checkpoint in Path(output_dir).glob("checkpoint-*"):  # only for resuming; they hold pickles
            if checkpoint.is_dir():
                shutil.rmtree(checkpoint, ignore_errors=True)
    # Trainer saves its arguments as a torch pickle; keep them as JSON instead (outputs are never pickles).
    pickled_args = Path(output_dir) / "training_args.bin"
    if trainer.is_world_process_zero() and pickled_args.exists():
        pickled_args.unlink()
        from .errors import redact

        (Path(output_dir) / "training_args.json").write_text(redact(trainer.args.to_json_string()))
    metrics = dict(out.metrics)
    if eval_pc is not None:
        metrics.update(trainer.evaluate())
    if trainer.is_world_process_zero():
        tags = sorted({t for cb in all_callbacks for t in getattr(cb, "card_tags", ())})
        trainer.create_model_card(model_name=model_card_name or Path(output_dir).name, dataset_name=dataset_name,
                                  tags=tags or None)
        for cb in all_callbacks:
            update = getattr(cb, "update_model_card", None)
            if callable(update):
                update(output_dir)
        trainer.processing_class.save_pretrained(str(output_dir))
    loss = metrics.get("train_loss")
    result = SFTResult(
        output_dir=str(output_dir), train_rows=len(train_pc),
        train_loss=float(loss) if loss is not None and math.isfinite(loss) else None,
        global_step=int(trainer.state.global_step), metrics=_jsonable(metrics),
        row_losses=row_cb.mean_losses() if row_cb is not None else None, resumed_from_step=resumed_step,
    )
    del trainer
    _free_memory()
    return result


def record_adapter_base(folder: str | os.PathLike, base: str) -> None:
    """Name ``base`` as the adapter's base model in ``folder/adapter_config.json`` (``base_model_name_or_path``):
    the Hub id or folder the run was given, not the local copy it resolved to (an offline cache folder), so that
    the adapter loads on another machine and its Hub card links the base.

    Example:
        >>> import json, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = (Path(folder) / "adapter_config.json").write_text('{"base_model_name_or_path": "/cache/x"}')
        >>> record_adapter_base(folder, "HuggingFaceTB/SmolLM2-135M-Instruct")
        >>> json.loads((Path(folder) / "adapter_config.json").read_text())["base_model_name_or_path"]
        'HuggingFaceTB/SmolLM2-135M-Instruct'
    """
    path = Path(folder) / "adapter_config.json"
    if not path.is_file():
        return
    values = json.loads(path.read_text())
    values["base_model_name_or_path"] = str(base)
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


def _last_checkpoint(output_dir: str | os.PathLike) -> tuple[str | None, int | None]:
    """The last complete Trainer checkpoint in ``output_dir`` and its global step, or (None, None)."""
    if not os.path.isdir(output_dir):
        return None, None
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(output_dir))
    if found is None:
        return None, None
    state_file = Path(found) / "trainer_state.json"
    try:
        step = int(json.loads(state_file.read_text())["global_step"])
    except (OSError, ValueError, KeyError) as err:
        logger.warning("train_sft: %s is incomplete (%s); training from the start", found, err)
        return None, None
    return found, step


# -- evaluation -----------------------------------------------------------------------------------------------------
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


def _jsonable(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
        elif hasattr(v, "item"):
            out[k] = v.item()
        else:
            out[k] = str(v)
    return out


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - never fail a run over cache cleanup
        pass
