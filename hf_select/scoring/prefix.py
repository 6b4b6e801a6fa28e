"""Shared-prefix reuse: the keys and values of a prefix that many sequences start with are computed once.

Every conditioned IFD sequence begins with its template's fixed text: SmolLM2's chat template puts a 24-token
system prompt and the user header in front of each instruction, and the Alpaca preamble of the Cherry LLM layout is
about as long. A causal model's hidden states at those positions do not depend on what follows, so
:func:`encode_prefix` runs the prefix through the model once, and each batch then computes only the rest of the
sequences that :func:`continuing` finds, attending to the cached prefix (fp32 scores agree with the plain way to
rounding: tests/test_prefix.py). On 150 alpaca rows the prefix was 15% of the positions the backbone computes
(benchmarks/RESULTS.md, "IFD on CPU").

The prefix is the template's (the IFD scorer takes the :func:`common_prefix` of a few probe prompts), never the
data's: whether a row is computed after the cache, and after how many tokens, depends on that row alone, not on the
other rows of its batch. (Other batch shapes still change fp32 rounding, by about 1e-8, with or without reuse.)

A model gets this only when :func:`supports_prefix_reuse` holds: it checks once per model object that a probe
sequence's hidden states after the cached prefix equal those of the whole sequence, so a model whose cache behaves
otherwise (recurrent layers, sliding windows, custom code) is scored the plain way, never wrongly.

Example:
    >>> continuing(common_prefix([[1, 2, 3, 9], [1, 2, 3, 8]]), [[1, 2, 3, 4, 5], [5, 6], [1, 2, 3]])
    [0]
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Shortest prefix worth a cache (fewer saved positions do not pay for the extra forward and cache copies).
MIN_PREFIX_TOKENS = 4
_PREFIX_CHECKED: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def common_prefix(seqs: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix all ``seqs`` share.

    Example:
        >>> common_prefix([[7, 7, 1], [7, 7, 2, 3], [7, 7]])
        [7, 7]
        >>> common_prefix([[1, 2], [3]])
        []
    """
    if not seqs:
        return []
    first, n = seqs[0], min(len(s) for s in seqs)
    for other in seqs[1:]:
        k = 0
        while k < n and other[k] == first[k]:
            k += 1
        n = k
    return list(first[:n])


def continuing(prefix: Sequence[int], contexts: Sequence[Sequence[int]]) -> list[int]:
    """Indices of the ``contexts`` that start with ``prefix`` and hold at least one token after it (the hidden state
    in front of a context's first target token must be computed with the target).

    Example:
        >>> continuing([7, 7], [[7, 7, 1], [7, 7], [1, 7, 7, 2], [7, 7, 2, 3]])
        [0, 3]
    """
    p, head = len(prefix), list(prefix)
    return [i for i, c in enumerate(contexts) if len(c) > p and list(c[:p]) == head]


@dataclass
class SharedPrefix:
    """A prefix's tokens and, per decoder layer, its cached keys and values (batch of one)."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]

    def __len__(self) -> int:
        return len(self.ids)

    def cache(self, rows: int) -> Any:
        """A fresh ``DynamicCache`` holding the prefix for ``rows`` sequences (the forward pass appends to it)."""
        from transformers import DynamicCache

        data = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in self.layers]
        return DynamicCache(ddp_cache_data=data)


@torch.inference_mode()
def encode_prefix(model: Any, ids: Sequence[int]) -> SharedPrefix:
    """Run ``ids`` through ``model``'s backbone once and keep the keys and values of every layer."""
    device = next(model.parameters()).device
    out = model.base_model(input_ids=torch.tensor([list(ids)], device=device), use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    return SharedPrefix(list(ids), [(layer.keys, layer.values) for layer in cache.layers])


@functools.lru_cache(maxsize=32)
def _cache_argument(cls: type) -> str:
    """The name under which ``cls.forward`` takes a cache: ``cache`` (transformers >= 5.24) or, before that,
    ``past_key_values`` (looked up once per model class)."""
    try:
        params = inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def hidden_states_match(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> bool:
    """True when every position's hidden state in ``got`` is within the probes' tolerance of ``want``, relative to
    its norm: 1e-3 in fp32, 3e-2 in 16-bit (the packing and prefix checks share it).

    Example:
        >>> x = torch.ones(2, 4)
        >>> hidden_states_match(x * 1.0001, x, torch.float32), hidden_states_match(x * 1.01, x, torch.float32)
        (True, False)
    """
    tol = 1e-3 if dtype == torch.float32 else 3e-2
    got, want = got.float(), want.float()
    return bool(((got - want).norm(dim=-1) / want.norm(dim=-1).clamp_min(1e-6)).max() < tol)


def supports_prefix_reuse(model: Any) -> bool:
    """True when hidden states computed after a cached prefix equal those of the whole sequence (checked once per
    model object, on a random probe; any error or mismatch means no)."""
    if model in _PREFIX_CHECKED:
        return _PREFIX_CHECKED[model]
    ok = False
    try:
        ok = _probe(model)
    except (TypeError, ValueError, RuntimeError, NotImplementedError, AttributeError, IndexError):
        ok = False
    _PREFIX_CHECKED[model] = ok
    return ok


@torch.inference_mode()
def _probe(model: Any) -> bool:
    cfg = getattr(model, "config", None)
    if getattr(cfg, "is_encoder_decoder", False) or model.get_output_embeddings() is None:
        return False
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return False
    device = next(model.parameters()).device
    vocab = int(model.get_output_embeddings().weight.shape[0])
    gen = torch.Generator().manual_seed(0)
    seq = torch.randint(1, vocab, (2, 20), generator=gen)
    seq[:, :12] = seq[0, :12]  # two rows sharing a 12-token prefix, then different (and right-padded) tails
    mask = torch.ones_like(seq)
    mask[1, 17:] = 0
    whole = base(input_ids=seq.to(device), attention_mask=mask.to(device), use_cache=False).last_hidden_state
    prefix = encode_prefix(model, seq[0, :12].tolist())
    tail = hidden_after_prefix(model, prefix, seq[:, 12:].to(device), mask[:, 12:].to(device))
    dtype = next(model.parameters()).dtype
    real_tail = hidden_states_match(tail[1, :5], whole[1, 12:17], dtype)  # row 1's padding is not compared
    return hidden_states_match(tail[0], whole[0, 12:], dtype) and real_tail


def hidden_after_prefix(model: Any, prefix: SharedPrefix, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states of right-padded ``ids`` (rows x width) that each continue ``prefix``."""
    rows, width = ids.shape
    p = len(prefix)
    full_mask = torch.cat([torch.ones(rows, p, dtype=mask.dtype, device=mask.device), mask], dim=1)
    positions = torch.arange(p, p + width, device=ids.device).expand(rows, -1)
    cache = {_cache_argument(type(model.base_model)): prefix.cache(rows)}
    out = model.base_model(input_ids=ids, attention_mask=full_mask, position_ids=positions, use_cache=True, **cache)
    return out.last_hidden_state
