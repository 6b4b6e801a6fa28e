"""Configuration of a fine-tuning run: :class:`TrainConfig`, its allowed values, its precision and weights' dtype.

Every :class:`TrainConfig` field except :data:`OWN_TRAIN_FIELDS` is the ``trl.SFTConfig`` field of the same name,
passed on unchanged by :func:`hf_select.training.trainer.build_sft_config`; TRL's ``ModelConfig`` fields
(:data:`MODEL_CONFIG_FIELDS`: LoRA, 4-bit, dtype, attention) are :class:`TrainConfig` fields too.
:func:`resolve_precision` picks bf16 or fp32 on this machine, :func:`training_dtype` the dtype the weights load in,
and :func:`check_model_environment` fails early, in one line, when peft, bitsandbytes or a GPU is missing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import HFSelectError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
TURN_MODES = ("last", "all")

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
        from ..errors import scrub

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
