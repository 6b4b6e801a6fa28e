"""Helpers the model-backed scorers share: the model's length limit, fitting a (question, answer) pair into it,
padding and batching by length, the identity of an in-memory model, and the reward-model loader.

Nothing here knows a score: each function serves two scorers or more (quality, necessity, indicators, IFD, embed).

Example:
    >>> from hf_select.testing import make_tiny_lm
    >>> model, tok = make_tiny_lm()
    >>> model_limit(model, tok, 10**6) == model.config.max_position_embeddings
    True
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ..formats import RowError
from ..models import load_tokenizer, resolve_device, resolve_dtype, resolve_model_path
from .base import weights_identity

# Tokenizer limits at or above this are "no limit" placeholders (transformers writes ~1e30).
NO_LIMIT = 10**9
ROW_STATUSES = ("invalid_row", "unknown_role", "no_assistant_turn", "template_mismatch", "template_error", "oom",
                "non_finite")
"""Statuses of a row that cannot be read (``hf_select.formats``), rendered with its template, or run (out of memory,
a non-finite result): shared by the scorers that render a prompt template (IFD, necessity, indicators)."""
PAIR_STATUSES = ("prompt_too_long",)
"""The status of the ``RowError`` :func:`fit_pair` raises when the template leaves no room for the pair."""


def loaded_model_identity(model: Any, tokenizer: Any) -> str:
    """A string that changes when an in-memory model's weights change (for models passed to ``set_model``).

    The config's name plus a digest of every weight's bytes (:func:`hf_select.scoring.base.weights_identity`).
    """
    return weights_identity(model, tokenizer)


def model_limit(model: Any, tokenizer: Any, max_length: int) -> int:
    """``max_length`` lowered to the model's own limit: the tokenizer's ``model_max_length`` and the model's
    positions (``max_position_embeddings``, GPT-2's ``n_positions``); ``model`` may be None. Longer sequences would
    index past the position table and stop the whole run.

    Example:
        >>> from types import SimpleNamespace
        >>> tok = SimpleNamespace(model_max_length=int(1e30))
        >>> model_limit(SimpleNamespace(config=SimpleNamespace(n_positions=512)), tok, 1024)
        512
        >>> model_limit(None, SimpleNamespace(model_max_length=256), 1024)
        256
    """
    limit = max_length
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < NO_LIMIT:
        limit = min(limit, tok_max)
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        pos = getattr(config, name, None)
        if isinstance(pos, int) and pos > 0:
            limit = min(limit, pos)
    return limit


class _Cutter:
    """Cuts a text to its first or last ``k`` tokens (by character offsets when the tokenizer gives them)."""

    def __init__(self, tokenizer: Any, text: str):
        self.text = text
        self.tokenizer = tokenizer
        self.offsets: list[tuple[int, int]] | None = None
        if getattr(tokenizer, "is_fast", False) and text:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            self.ids = list(enc["input_ids"])
            self.offsets = [tuple(o) for o in enc["offset_mapping"]]
        else:
            self.ids = list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
        self.n = len(self.ids)

    def head(self, k: int) -> str:
        if k >= self.n:
            return self.text
        if k <= 0:
            return ""
        if self.offsets is not None:
            return self.text[: self.offsets[k - 1][1]]
        return self.tokenizer.decode(self.ids[:k])

    def tail(self, k: int) -> str:
        if k >= self.n:
            return self.text
        if k <= 0:
            return ""
        if self.offsets is not None:
            return self.text[self.offsets[self.n - k][0] :]
        return self.tokenizer.decode(self.ids[self.n - k :])


Encoded = tuple[list[int], list[int] | None]  # input ids, token type ids (text pairs)


@dataclass
class FittedPair:
    """A pair rendered to token ids within a limit: what was kept, and whether anything was cut."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    question: str
    answer: str
    truncated: bool


def fit_pair(
    tokenizer: Any, question: str, answer: str, render: Callable[[str, str], Encoded], limit: int
) -> FittedPair:
    """Render ``(question, answer)`` with ``render`` into at most ``limit`` tokens.

    When the whole pair does not fit, the question keeps its first tokens and the answer its last ones. The room
    left by the template is shared: a side shorter than half of it keeps everything and the other side gets the
    rest; otherwise each gets half. Since cut texts may tokenize a little differently inside the template, the
    room shrinks by the excess until the rendering fits.

    Raises:
        RowError: ``prompt_too_long`` when the template alone leaves fewer than 2 tokens of room.

    Example:
        >>> from hf_select.testing import make_tiny_tokenizer
        >>> tok = make_tiny_tokenizer()
        >>> render = lambda q, a: (tok(q + " || " + a)["input_ids"], None)
        >>> fit = fit_pair(tok, "Sort the list " * 20, "The answer is 42. " * 20, render, 40)
        >>> fit.truncated, len(fit.input_ids) <= 40, fit.answer.endswith("42. ")
        (True, True, True)
    """
    ids, types = render(question, answer)
    if len(ids) <= limit:
        return FittedPair(list(ids), types, question, answer, False)
    q, a = _Cutter(tokenizer, question), _Cutter(tokenizer, answer)
    overhead = max(0, len(ids) - q.n - a.n)
    room = limit - overhead
    for _ in range(16):
        if room < 2:
            break
        q_keep = min(q.n, max(room - a.n, room // 2))
        a_keep = min(a.n, room - q_keep)
        q_text, a_text = q.head(q_keep), a.tail(a_keep)
        ids, types = render(q_text, a_text)
        if len(ids) <= limit:
            return FittedPair(list(ids), types, q_text, a_text, True)
        room -= len(ids) - limit
    raise RowError("prompt_too_long", f"the template leaves no room for the pair within {limit} tokens")


def split_padding(group: Sequence[int], lengths: Sequence[int], slack: float = 0.25) -> list[list[int]]:
    """Split a batch of items sorted longest first wherever an item is shorter than ``(1 - slack)`` times the
    longest item of its batch, so that padding stays under ``slack`` of every batch.

    Token-budget batches of rows with very different lengths (instruction data: 15 to 1,000 tokens) are mostly
    padding; on a CPU, where a single row already keeps the cores busy, that made batching slower than a loop.

    Example:
        >>> split_padding([0, 1, 2, 3], [100, 90, 60, 50])
        [[0, 1], [2, 3]]
    """
    out: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in group:
        if current and lengths[i] < (1 - slack) * longest:
            out.append(current)
            current = []
        if not current:
            longest = lengths[i]
        current.append(i)
    if current:
        out.append(current)
    return out


def pad_right(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` tensors (CPU, long) for token id lists.

    Example:
        >>> ids, mask = pad_right([[5, 6, 7], [8]], pad=0)
        >>> ids.tolist(), mask.tolist()
        ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def unused_token_id(seqs: Sequence[Sequence[int]], preferred: Sequence[int | None], vocab_size: int) -> int:
    """A token id that occurs in none of ``seqs``: the first free one of ``preferred``, else the highest free id.

    Sequence-classification models find each row's last token as the rightmost token that is not the pad id, so
    the pad id must never be a real token of the batch (a pad that equals EOS would hide a final EOS).

    Example:
        >>> unused_token_id([[1, 2, 3]], [2, None], vocab_size=10)
        9
    """
    used = {t for s in seqs for t in s}
    for cand in preferred:
        if cand is not None and cand not in used:
            return int(cand)
    for cand in range(vocab_size - 1, -1, -1):
        if cand not in used:
            return cand
    raise ValueError("every token id of the vocabulary occurs in the batch; no id is free for padding")


@contextmanager
def pad_id_set(model: Any, pad: int) -> Iterator[None]:
    """Set ``pad_token_id`` on the model's config (and its text config) for the duration of a forward pass.

    Example:
        >>> from hf_select.testing import make_tiny_lm
        >>> model, _ = make_tiny_lm()
        >>> with pad_id_set(model, 7):
        ...     model.config.pad_token_id
        7
    """
    configs = [model.config]
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if text is not model.config:
        configs.append(text)
    before = [c.pad_token_id for c in configs]
    try:
        for c in configs:
            c.pad_token_id = pad
        yield
    finally:
        for c, b in zip(configs, before, strict=True):
            c.pad_token_id = b


def forward_accepts(model: Any, name: str) -> bool:
    """Whether ``model.forward`` takes an argument ``name`` (e.g. ``token_type_ids``).

    Example:
        >>> forward_accepts(torch.nn.Linear(2, 2), "input")
        True
    """
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def load_reward_model(
    name_or_path: str,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load a sequence-classification (reward) model and its tokenizer, in eval mode on ``device``.

    Example:
        >>> model, tok = load_reward_model("OpenAssistant/reward-model-deberta-v3-large-v2")  # doctest: +SKIP
    """
    from transformers import AutoModelForSequenceClassification

    dev = resolve_device(device)
    path = resolve_model_path(name_or_path, revision)
    tokenizer = load_tokenizer(path, revision=revision, trust_remote_code=trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, dtype=resolve_dtype(dtype, dev), revision=revision, trust_remote_code=trust_remote_code
    )
    model.to(dev).eval()
    return model, tokenizer
