"""Per-item mean token losses of a causal LM, batched, with the vocabulary projection only where a loss is taken.

An item is ``(context_ids, target_ids)``: the loss is the mean cross-entropy of ``target_ids`` given
``context_ids``. The items of one call go through the model's backbone once, either right-padded (one item per
row) or packed (several items per row, each with its own position ids starting at 0 and attention kept inside its
own segment: transformers builds that block-diagonal causal mask from the position ids, or uses varlen flash
attention where the model runs on it). Then the hidden states in front of each target token are gathered and only
those go through the output head, :data:`LOGIT_CHUNK` positions at a time, so a batch never makes a
``tokens x vocabulary`` fp32 logits tensor (at most ``LOGIT_CHUNK x vocabulary``).

Example:
    >>> from hf_select.scoring.lm_loss import mean_target_losses
    >>> losses = mean_target_losses(model, [([1, 5, 6], [7, 8])], pad_token_id=0)  # doctest: +SKIP
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .batching import pack_rows, run_with_oom_retry, token_budget_batches
from .prefix import (
    MIN_PREFIX_TOKENS,
    SharedPrefix,
    continuing,
    encode_prefix,
    hidden_after_prefix,
    hidden_states_match,
    supports_prefix_reuse,
)

# Rows of hidden states sent through the output head at once (bounds the fp32 logits to chunk x vocab).
LOGIT_CHUNK = 2048
_PACKING_CHECKED: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


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


@dataclass
class LossBatch:
    """One forward pass's inputs and, flat over every target token, where its loss is read.

    ``rows``/``pos``: the row and position of the hidden state that predicts the token, ``tgt``: the token id,
    ``item``: the item it belongs to. ``mask`` is None and ``position_ids`` set when the rows are packed.
    """

    ids: torch.Tensor
    mask: torch.Tensor | None
    position_ids: torch.Tensor | None
    rows: np.ndarray
    pos: np.ndarray
    tgt: np.ndarray
    item: np.ndarray

    @property
    def computed_tokens(self) -> int:
        """Positions the backbone computes (rows x width), padding included."""
        return int(self.ids.numel())


def build_batch(items: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int,
                *, rows: Sequence[Sequence[int]] | None = None, width: int | None = None) -> LossBatch:
    """The batch of ``items``: right-padded, one item per row, or packed: ``rows`` lists the items of each row
    (indices into ``items``), laid end to end, each with position ids from 0, in rows of at least ``width`` tokens.

    Example:
        >>> b = build_batch([([1, 2], [3]), ([4], [5])], pad_token_id=0)
        >>> b.ids.tolist(), b.mask.tolist(), b.pos.tolist()
        ([[1, 2, 3], [4, 5, 0]], [[1, 1, 1], [1, 1, 0]], [1, 0])
        >>> b = build_batch([([1, 2], [3]), ([4], [5])], pad_token_id=0, rows=[[0, 1]], width=6)
        >>> b.ids.tolist(), b.position_ids.tolist(), b.rows.tolist(), b.pos.tolist()
        ([[1, 2, 3, 4, 5, 0]], [[0, 1, 2, 0, 1, 0]], [0, 0], [1, 3])
    """
    lengths = [len(c) + len(t) for c, t in items]
    packed = rows is not None
    bins = [list(r) for r in rows] if rows is not None else [[i] for i in range(len(items))]
    width = max([width or 0, *(sum(lengths[i] for i in b) for b in bins)])
    ids = np.full((len(bins), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(bins), width), dtype=np.int64)
    position = np.zeros((len(bins), width), dtype=np.int64)
    rows_at, pos, tgt, item = [], [], [], []
    for b, members in enumerate(bins):
        at = 0
        for i in members:
            ctx, target = items[i]
            seq = np.fromiter((*ctx, *target), dtype=np.int64, count=lengths[i])
            ids[b, at : at + lengths[i]] = seq
            mask[b, at : at + lengths[i]] = 1
            position[b, at : at + lengths[i]] = np.arange(lengths[i])
            n, start = len(target), at + len(ctx)
            rows_at.append(np.full(n, b, dtype=np.int64))
            pos.append(np.arange(start - 1, start - 1 + n, dtype=np.int64))
            tgt.append(seq[len(ctx) :])
            item.append(np.full(n, i, dtype=np.int64))
            at += lengths[i]
        position[b, at:] = np.arange(width - at)  # the padding tail is a segment of its own
    return LossBatch(
        torch.from_numpy(ids),
        None if packed else torch.from_numpy(mask),
        torch.from_numpy(position) if packed else None,
        np.concatenate(rows_at),
        np.concatenate(pos),
        np.concatenate(tgt),
        np.concatenate(item),
    )


def _backbone(model: Any, batch: LossBatch, device: torch.device, fused: bool,
              prefix: SharedPrefix | None = None) -> torch.Tensor:
    """Last hidden states (``fused``) or logits of the batch; after the cached ``prefix`` when one is given."""
    if prefix is not None:
        if batch.mask is None:
            raise ValueError("a shared prefix needs right-padded rows, not packed ones")
        return hidden_after_prefix(model, prefix, batch.ids.to(device), batch.mask.to(device))
    kwargs: dict[str, Any] = {"input_ids": batch.ids.to(device, non_blocking=True), "use_cache": False}
    if batch.mask is not None:
        kwargs["attention_mask"] = batch.mask.to(device, non_blocking=True)
    if batch.position_ids is not None:
        kwargs["position_ids"] = batch.position_ids.to(device, non_blocking=True)
    if fused:
        return model.base_model(**kwargs).last_hidden_state
    return model(**kwargs).logits


@torch.inference_mode()
def supports_packing(model: Any) -> bool:
    """True when packed rows give each segment the hidden states it gets alone (checked once per model object).

    The check packs two short probe sequences into one row and compares the second one's last hidden states with
    its own forward pass, and with the packed pass after the first sequence changed: a model that lets attention
    cross segments, or ignores ``position_ids``, fails it and is scored right-padded.
    """
    if model in _PACKING_CHECKED:
        return _PACKING_CHECKED[model]
    ok = False
    try:
        if supports_fused_head(model):
            ok = _probe_packing(model)
    except (TypeError, ValueError, RuntimeError, NotImplementedError):
        ok = False
    _PACKING_CHECKED[model] = ok
    return ok


def _probe_packing(model: Any) -> bool:
    device = next(model.parameters()).device
    vocab = int(model.get_output_embeddings().weight.shape[0])
    gen = torch.Generator().manual_seed(0)
    a, a2, b = (torch.randint(1, vocab, (n,), generator=gen).tolist() for n in (12, 12, 8))

    def hidden(items: list[tuple[list[int], list[int]]], packed: bool) -> torch.Tensor:
        batch = build_batch(items, 0, rows=[list(range(len(items)))] if packed else None)
        out = _backbone(model, batch, device, fused=True).float()
        return out[0, -len(b) :] if packed else out[0]

    alone = hidden([(b[:1], b[1:])], packed=False)
    packed = hidden([(a[:1], a[1:]), (b[:1], b[1:])], packed=True)
    other = hidden([(a2[:1], a2[1:]), (b[:1], b[1:])], packed=True)
    dtype = next(model.parameters()).dtype
    return hidden_states_match(packed, alone, dtype) and hidden_states_match(other, alone, dtype)


@torch.inference_mode()
def mean_target_losses(
    model: Any,
    items: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_token_id: int,
    *,
    fused_head: bool | None = None,
    logit_chunk: int = LOGIT_CHUNK,
    rows: Sequence[Sequence[int]] | None = None,
    width: int | None = None,
    prefix: SharedPrefix | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of each item's target tokens given its context; a float64 CPU tensor, one per item.

    Every context must hold at least one token and every target at least one token. ``rows`` packs the items,
    several to a row (see :func:`build_batch`; :func:`~hf_select.scoring.batching.pack_rows` makes them); only
    for models where :func:`supports_packing` holds. ``prefix``: every item's context continues this cached prefix
    (:mod:`~hf_select.scoring.prefix`; the contexts given here leave it out); right-padded rows and the fused head
    only, for models where :func:`~hf_select.scoring.prefix.supports_prefix_reuse` holds.
    """
    if not items:
        return torch.zeros(0, dtype=torch.float64)
    device = next(model.parameters()).device
    batch = build_batch(items, pad_token_id, rows=rows, width=width)
    rows_t = torch.from_numpy(batch.rows).to(device)
    pos_t = torch.from_numpy(batch.pos).to(device)
    tgt_t = torch.from_numpy(batch.tgt).to(device)
    item_t = torch.from_numpy(batch.item).to(device)
    if fused_head is None:
        fused_head = supports_fused_head(model)
    if prefix is not None and not fused_head:
        raise ValueError("a shared prefix needs the fused output head (fused_head=True)")
    if fused_head:
        picked = _backbone(model, batch, device, fused=True, prefix=prefix)[rows_t, pos_t]
        head = model.get_output_embeddings()
        cap = _softcap(model)
        losses = torch.empty(picked.shape[0], dtype=torch.float32, device=device)
        for lo in range(0, picked.shape[0], logit_chunk):
            logits = head(picked[lo : lo + logit_chunk]).float()
            if cap:
                logits = torch.tanh(logits / cap) * cap
            losses[lo : lo + logit_chunk] = F.cross_entropy(logits, tgt_t[lo : lo + logit_chunk], reduction="none")
    else:
        logits = _backbone(model, batch, device, fused=False)
        losses = F.cross_entropy(logits[rows_t, pos_t].float(), tgt_t, reduction="none")
    sums = torch.zeros(len(items), dtype=torch.float64, device=device)
    sums.index_add_(0, item_t, losses.double())
    counts = torch.bincount(item_t, minlength=len(items)).double()
    return (sums / counts).cpu()


def sequence_losses(
    model: Any,
    seqs: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_token_id: int,
    *,
    max_tokens: int,
    max_rows: int,
    fused_head: bool | None = None,
    pack_width: int | None = None,
    shared_prefix: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mean_target_losses` of any number of ``(context, target)`` sequences, batched by token budget.

    Right-padded batches of length-sorted sequences (``rows x longest <= max_tokens``, at most ``max_rows`` rows),
    or, with ``pack_width``, the sequences packed into rows of ``pack_width`` tokens (first-fit decreasing), as many
    rows per batch as ``max_tokens`` holds. A batch that runs out of memory is halved and retried; a sequence (or
    packed row) that does not fit alone gets NaN. Returns the losses (float64) and a mask of the sequences that fit.
    ``shared_prefix`` (token ids; right-padded batches only): computed once, and the sequences whose contexts continue
    it are batched from after it (:mod:`~hf_select.scoring.prefix`), where the model passes the reuse check and the
    prefix holds at least ``MIN_PREFIX_TOKENS`` tokens.

    Example:
        >>> losses, fits = sequence_losses(model, [([1, 5], [6]), ([2], [7, 8])], 0, max_tokens=1024,
        ...                                max_rows=64)  # doctest: +SKIP
    """
    losses = np.full(len(seqs), np.nan)
    fits = np.ones(len(seqs), dtype=bool)
    lengths = [len(c) + len(t) for c, t in seqs]

    def on_oom(idx: list[int]) -> None:
        return None

    if pack_width is not None:
        packed = pack_rows(lengths, pack_width)
        per_batch = max(1, min(max_rows, max_tokens // pack_width))

        def run_rows(rix: list[int]) -> np.ndarray:
            members = [i for r in rix for i in packed[r]]
            local = {i: k for k, i in enumerate(members)}
            rows = [[local[i] for i in packed[r]] for r in rix]
            return mean_target_losses(model, [seqs[i] for i in members], pad_token_id, fused_head=fused_head,
                                      rows=rows, width=pack_width).numpy()

        for lo in range(0, len(packed), per_batch):
            for rix, part in run_with_oom_retry(list(range(lo, min(lo + per_batch, len(packed)))), run_rows, on_oom):
                idx = [i for r in rix for i in packed[r]]
                if part is None:
                    fits[idx] = False
                else:
                    losses[idx] = part
        return losses, fits

    prefix: SharedPrefix | None = None
    cached: list[int] = []
    fused = supports_fused_head(model) if fused_head is None else fused_head
    long_enough = shared_prefix is not None and len(shared_prefix) >= MIN_PREFIX_TOKENS
    if long_enough and fused and supports_prefix_reuse(model):
        cached = continuing(shared_prefix, [c for c, _ in seqs])
        prefix = encode_prefix(model, shared_prefix) if cached else None
    cut = len(prefix) if prefix is not None else 0

    def run(idx: list[int]) -> np.ndarray:
        return mean_target_losses(model, [seqs[i] for i in idx], pad_token_id, fused_head=fused_head).numpy()

    def run_after_prefix(idx: list[int]) -> np.ndarray:
        return mean_target_losses(model, [(seqs[i][0][cut:], seqs[i][1]) for i in idx], pad_token_id,
                                  fused_head=True, prefix=prefix).numpy()

    in_prefix = set(cached)
    parts = [(run_after_prefix, cached, cut), (run, [i for i in range(len(seqs)) if i not in in_prefix], 0)]
    for fn, subset, skip in parts:
        for group in token_budget_batches([lengths[i] - skip for i in subset], max_tokens, max_rows):
            for idx, part in run_with_oom_retry([subset[g] for g in group], fn, on_oom):
                if part is None:
                    fits[idx] = False
                else:
                    losses[idx] = part
    return losses, fits
