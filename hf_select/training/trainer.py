"""Trainer construction and the run: the model to train, TRL's ``SFTConfig`` and ``SFTTrainer``, and :func:`train_sft`.

There is no hand-written training loop here: :func:`train_sft` turns the rows into prompt-completion rows
(:func:`hf_select.training.rows.to_prompt_completion`), builds an ``SFTConfig`` from a
:class:`~hf_select.training.config.TrainConfig` (:func:`build_sft_config`: completion-only loss,
``completion_only_loss=True``) and calls ``SFTTrainer.train``, resuming from the last Trainer checkpoint if asked.

CPU settings (``benchmarks/sft_cpu.py`` measures them against a plain PyTorch loop on the same batches): the trainer
is :func:`sft_trainer_class`, whose LM head on CPU projects only the completion positions (same loss as TRL's; for
SmolLM2-135M, 2 steps of batch 8 at 1 thread took 17.5 s of CPU time instead of 25.6 s with TRL's own head, measured
with cProfile on a loaded machine: :mod:`hf_select.training.sft_head`); no gradient checkpointing; fp32 unless
``precision`` asks for bf16 autocast (it changes the loss slightly, and was slower on this project's CPU); no packing
(it changes the batches and so the loss); ``dataloader_num_workers`` 0 (loading and collating the rows was about 2%
of the profiled CPU time).

On a GPU the weights load in bf16 where they are never updated in bf16
(:func:`~hf_select.training.config.training_dtype`: LoRA's frozen base, FSDP/DeepSpeed's fp32 master shards), else
in fp32 with bf16 autocast. With ``use_peft`` the adapter comes from TRL's ``get_peft_config`` and the model folder
holds only the adapter (:func:`record_adapter_base` names its base), which :func:`hf_select.models.load_causal_lm`
loads on its base.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HFSelectError
from .config import OWN_TRAIN_FIELDS, TrainConfig, resolve_precision, training_dtype
from .rows import to_prompt_completion

logger = logging.getLogger(__name__)


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

    from ..models import adapter_base, load_adapter_model, load_tokenizer, resolve_model_path

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
    (:class:`hf_select.training.sft_head.CompletionHeadSFTTrainer`; same loss, less work: see
    :mod:`hf_select.training.sft_head`).

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
    from ..callbacks import PerRowLossCallback, RowIdCollator

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
    _save_final_model(trainer, output_dir)
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
        from ..errors import redact

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


def _save_final_model(trainer: Any, output_dir: str | os.PathLike) -> None:
    """``trainer.save_model(output_dir)``, gathering the weights whole under FSDP.

    With ``fsdp_state_dict_type: SHARDED_STATE_DICT`` (``recipes/accelerate/fsdp.yaml``: sharded Trainer checkpoints)
    ``Trainer.save_model`` saves no weights and no config at all (transformers 5 writes the model only for
    ``FULL_STATE_DICT``), which would leave the stage's model folder without a model. The final save switches the
    plugin to ``FULL_STATE_DICT`` (accelerate gathers the full state dict to the first process, on CPU) and back.
    """
    plugin = None
    if getattr(trainer, "is_fsdp_enabled", False):
        plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if plugin is None or "FULL_STATE_DICT" in str(plugin.state_dict_type):
        trainer.save_model(str(output_dir))
        return
    previous = plugin.state_dict_type
    plugin.set_state_dict_type("FULL_STATE_DICT")
    try:
        trainer.save_model(str(output_dir))
    finally:
        plugin.set_state_dict_type(previous)


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


# -- helpers shared with evaluation.py (and _free_memory with stages.py and heldout.py) ---------------------------
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
