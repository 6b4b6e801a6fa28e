"""hf-select's SFT trainer: TRL's ``SFTTrainer`` with a cheaper LM head on CPU.

TRL 1.x computes the completion-only loss with a fused LM head (``add_fused_lm_head``) that never builds the full
``(tokens, vocab)`` logits. On CUDA it projects only the completion positions, with Triton kernels. On any other device
it projects *every* position (prompt tokens too, to keep tile shapes fixed for compilers), folds each tile in float32
torch ops for the log-probabilities, the entropy and the top-1 flag, and recomputes the projection in the backward
pass. For SmolLM2-135M on CPU (49,152-token vocabulary, 576 hidden) that head was 35% of a training step's CPU time
(cProfile of ``benchmarks/sft_cpu.py --profile``).

:class:`CompletionHeadSFTTrainer` (built by :func:`completion_head_trainer_class`) keeps everything else of
``SFTTrainer`` and, on CPU, replaces only the loss: the backbone runs once, the LM head projects the completion
positions only (``labels != -100`` after the shift), and the loss is the same sum of token cross-entropies divided
by the same count (``num_items_in_batch``) as TRL's, with ordinary autograd (no recomputation). The logged
``entropy`` and ``mean_token_accuracy`` are computed from the same logits. Anything this path does not cover goes to
TRL's own ``compute_loss`` unchanged: CUDA or other accelerators, several processes (DDP/FSDP wrap the model),
PEFT models, a custom ``compute_loss_func``, label smoothing, loss types other than ``nll``, MoE auxiliary losses,
pre-shifted ``shift_labels`` (context parallelism), ``return_outputs=True``, and batches whose completion logits
would exceed :data:`MAX_LOGITS` values (about 1 GiB in float32), bf16/fp16 mixed precision (accelerate's autocast
wraps the model's forward, which this path does not call), and batches that carry ``_row_id`` (the per-row
losses of :class:`hf_select.callbacks.PerRowLossCallback` are read by hooks on the model's full forward call).

Example:
    >>> cls = completion_head_trainer_class()
    >>> cls.__name__, cls.__mro__[1].__name__
    ('CompletionHeadSFTTrainer', 'SFTTrainer')
"""

from __future__ import annotations

import functools
from typing import Any

from ..columns import ROW_ID

# Largest number of completion logits (positions x vocabulary) the CPU head builds at once; above, TRL's tiled head.
MAX_LOGITS = 1 << 28


def completion_head_applies(trainer: Any, model: Any, inputs: dict[str, Any], return_outputs: bool) -> bool:
    """Whether :class:`CompletionHeadSFTTrainer` computes this batch's loss itself (see the module docstring).

    Example:
        >>> from types import SimpleNamespace
        >>> completion_head_applies(SimpleNamespace(), None, {}, return_outputs=True)
        False
    """
    if return_outputs or "labels" not in inputs or "shift_labels" in inputs or ROW_ID in inputs:
        return False  # ROW_ID: PerRowLossCallback hooks the model's own forward call
    if getattr(trainer, "compute_loss_func", None) is not None or getattr(trainer, "label_smoother", None) is not None:
        return False
    args = getattr(trainer, "args", None)
    if args is None or getattr(args, "loss_type", "nll") != "nll" or getattr(trainer, "aux_loss_enabled", True):
        return False
    if getattr(args, "bf16", False) or getattr(args, "fp16", False):
        # accelerate applies autocast by wrapping the model's forward; this path calls the backbone directly and
        # would silently train in fp32 (measured: the same loss as fp32 in benchmarks/sft_cpu.py's bf16 case)
        return False
    if not hasattr(trainer, "_metrics") or not hasattr(trainer, "_total_train_tokens"):
        return False  # a TRL whose bookkeeping differs from the one this was written against
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is None or accelerator.num_processes != 1 or accelerator.unwrap_model(model) is not model:
        return False
    if getattr(model, "peft_config", None) is not None:
        return False
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "weight", None) is None or head.weight.device.type != "cpu":
        return False
    text_config = model.config.get_text_config()
    for name in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                 "logits_scaling"):
        if getattr(text_config, name, None) not in (None, 1.0):
            return False  # logits that are rescaled after the projection: TRL's head knows how
    n_completion = int((inputs["labels"][:, 1:] != -100).sum())
    return n_completion * head.weight.shape[0] <= MAX_LOGITS


@functools.cache
def completion_head_trainer_class() -> type:
    """``CompletionHeadSFTTrainer``: ``trl.SFTTrainer`` whose CPU loss projects only the completion positions.

    Built on first use (TRL is imported then, not when hf-select is). See the module docstring.
    """
    import torch
    from trl import SFTTrainer

    class CompletionHeadSFTTrainer(SFTTrainer):
        """``SFTTrainer`` with the completion-positions LM head on CPU (:mod:`hf_select.training.sft_head`)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not completion_head_applies(self, model, inputs, return_outputs):
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            kwargs = {k: v for k, v in inputs.items() if k != "labels"}
            kwargs["use_cache"] = False
            hidden = model.base_model(**kwargs).last_hidden_state[:, :-1]
            target = inputs["labels"][:, 1:]
            mask = target != -100
            head = model.get_output_embeddings()
            logits = head(hidden[mask])
            target = target[mask]
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            loss_sum = -log_probs.gather(-1, target.unsqueeze(-1)).sum()
            count = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = loss_sum / torch.as_tensor(count).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            with torch.no_grad():
                lp = log_probs.detach()
                num_valid = int(mask.sum())
                if num_valid:
                    entropy = float(-(lp.exp() * lp).sum() / num_valid)
                    accuracy = float((lp.argmax(-1) == target).sum() / num_valid)
                else:
                    entropy = accuracy = 0.0
            self._metrics[mode]["entropy"].append(entropy)
            self._metrics[mode]["mean_token_accuracy"].append(accuracy)
            if mode == "train":
                if "attention_mask" in inputs:
                    self._total_train_tokens += int(inputs["attention_mask"].sum())
                else:  # padding-free: one row of real tokens
                    self._total_train_tokens += int(inputs["position_ids"].size(1))
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return CompletionHeadSFTTrainer
