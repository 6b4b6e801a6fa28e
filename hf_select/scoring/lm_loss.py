"""Per-item mean token losses of a causal LM, batched, with the vocabulary projection only where a loss is taken.

An item is ``(context_ids, target_ids)``: the loss is the mean cross-entropy of ``target_ids`` given
``context_ids``. Items are padded on the right into one batch; the model's backbone runs once, the hidden
states in front of each target token are gathered, and only those go through the output head, in chunks,
so no ``batch x length x vocabulary`` fp32 tensor is ever made.

Example:
    >>> from hf_select.scoring.lm_loss import mean_target_losses
    >>> losses = mean_target_losses(model, [([1, 5, 6], [7, 8])], pad_token_id=0)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# Rows of hidden states sent through the output head at once (bounds the fp32 logits to chunk x vocab).
LOGIT_CHUNK = 2048


def _softcap(model: Any) -> float | None:
    cfg = getattr(model, "config", None)
    cap = getattr(cfg, "final_logit_softcapping", None)
    return float(cap) if cap else None


def supports_fused_head(model: Any) -> bool:
    """True when the model is ``backbone -> output embeddings`` so the head can be applied to gathered states."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        return False
    if model.get_output_embeddings() is None:
        return False
    base = getattr(model, "base_model", None)
    return base is not None and base is not model


def build_batch(
    items: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Right-padded ``input_ids``/``attention_mask`` plus flat (row, position-of-predictor, target, item) arrays."""
    lengths = np.array([len(c) + len(t) for c, t in items], dtype=np.int64)
    width = int(lengths.max())
    ids = np.full((len(items), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(items), width), dtype=np.int64)
    rows, pos, tgt, item = [], [], [], []
    for b, (ctx, target) in enumerate(items):
        seq = np.fromiter((*ctx, *target), dtype=np.int64, count=len(ctx) + len(target))
        ids[b, : len(seq)] = seq
        mask[b, : len(seq)] = 1
        n = len(target)
        start = len(ctx)
        rows.append(np.full(n, b, dtype=np.int64))
        pos.append(np.arange(start - 1, start - 1 + n, dtype=np.int64))
        tgt.append(seq[start:])
        item.append(np.full(n, b, dtype=np.int64))
    return (
        torch.from_numpy(ids),
        torch.from_numpy(mask),
        np.concatenate(rows),
        np.concatenate(pos),
        np.concatenate(tgt),
        np.concatenate(item),
    )


@torch.inference_mode()
def mean_target_losses(
    model: Any,
    items: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_token_id: int,
    *,
    fused_head: bool | None = None,
    logit_chunk: int = LOGIT_CHUNK,
) -> torch.Tensor:
    """Mean cross-entropy of each item's target tokens given its context; a float64 CPU tensor, one per item.

    Every context must hold at least one token and every target at least one token.
    """
    if not items:
        return torch.zeros(0, dtype=torch.float64)
    device = next(model.parameters()).device
    ids, mask, rows, pos, tgt, item = build_batch(items, pad_token_id)
    ids, mask = ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)
    rows_t = torch.from_numpy(rows).to(device)
    pos_t = torch.from_numpy(pos).to(device)
    tgt_t = torch.from_numpy(tgt).to(device)
    item_t = torch.from_numpy(item).to(device)
    if fused_head is None:
        fused_head = supports_fused_head(model)
    if fused_head:
        hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        picked = hidden[rows_t, pos_t]
        head = model.get_output_embeddings()
        cap = _softcap(model)
        losses = torch.empty(picked.shape[0], dtype=torch.float32, device=device)
        for lo in range(0, picked.shape[0], logit_chunk):
            logits = head(picked[lo : lo + logit_chunk]).float()
            if cap:
                logits = torch.tanh(logits / cap) * cap
            losses[lo : lo + logit_chunk] = F.cross_entropy(logits, tgt_t[lo : lo + logit_chunk], reduction="none")
    else:
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        losses = F.cross_entropy(logits[rows_t, pos_t].float(), tgt_t, reduction="none")
    sums = torch.zeros(len(items), dtype=torch.float64, device=device)
    sums.index_add_(0, item_t, losses.double())
    counts = torch.bincount(item_t, minlength=len(items)).double()
    return (sums / counts).cpu()
