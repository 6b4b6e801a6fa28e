"""The token ids TRL's ``SFTTrainer`` trains on for each conversational prompt-completion row, counted without
building a trainer: which completion tokens carry loss after truncation to ``max_length``, and which rows TRL drops.

What TRL 1.x does (``SFTTrainer._prepare_dataset``, prompt-completion rows, ``completion_only_loss=True``):

1. ``prompt_ids = apply_chat_template(prompt, add_generation_prompt=True)`` and ``prompt_completion_ids =
   apply_chat_template(prompt + completion)`` (``tokenize=True``, the tokenizer's own template, no EOS added: the
   template ends the assistant turn itself);
2. the completion starts where the two diverge (``common_prefix_length``; after the prompt for an ordinary
   template): ``completion_mask = [0] * prefix + [1] * (len(prompt_completion_ids) - prefix)``;
3. ``labels`` are the ids where the mask is 1, else -100; the sequence and the labels are cut to ``max_length``
   (``truncation_mode="keep_start"``: the first ``max_length`` tokens; ``"keep_end"``: the last);
4. rows left with no label at all (the prompt alone fills ``max_length``) are dropped from the dataset;
5. the loss shifts the labels by one, so the label at position 0 (never predicted) carries no loss.

:func:`tokenize_prompt_completion` does 1-2 (batched), :func:`trained_tokens` 3-5, and
:func:`supervised_token_counts` both for a dataset in any format :mod:`hf_select.formats` reads.
``tests/test_chat_tokens.py`` checks the counts against a real ``SFTTrainer``'s prepared dataset.

Example:
    >>> from hf_select.testing import make_tiny_tokenizer
    >>> tok = make_tiny_tokenizer()
    >>> row = {"prompt": [{"role": "user", "content": "Add 2 and 3."}],
    ...        "completion": [{"role": "assistant", "content": "5"}]}
    >>> [(prompt, completion)] = tokenize_prompt_completion(tok, [row])
    >>> tok.decode(completion)
    '5<|im_end|>\\n'
    >>> trained_tokens(prompt, completion, max_length=len(prompt) + 1)
    TrainedTokens(supervised=1, truncated=True, dropped=False)
    >>> trained_tokens(prompt, completion, max_length=len(prompt)).dropped
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .columns import ROW_ID
from .errors import HFSelectError

TRUNCATION_MODES = ("keep_start", "keep_end")
TOKENIZE_CHUNK = 512  # rows per batched apply_chat_template call


@dataclass(frozen=True)
class TrainedTokens:
    """What TRL trains on for one prompt-completion row: ``supervised`` completion tokens that carry loss after
    truncation, whether the sequence was ``truncated``, and whether the row is ``dropped`` (TRL filters it out, or
    it has no token to learn from)."""

    supervised: int
    truncated: bool
    dropped: bool


@dataclass
class TokenCounts:
    """:func:`supervised_token_counts`' answer: one entry per input row, by position (``row_ids``: the input's
    ``_row_id`` when it has one, else the position)."""

    row_ids: list[int] = field(default_factory=list)
    supervised: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    dropped: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.supervised)

    @property
    def total(self) -> int:
        """Supervised tokens over every row."""
        return int(sum(self.supervised))

    def to_dict(self) -> dict[str, Any]:
        """Totals for JSON records: rows, supervised tokens, rows truncated, rows dropped."""
        return {"rows": len(self), "supervised_tokens": self.total, "rows_truncated": int(sum(self.truncated)),
                "rows_dropped": int(sum(self.dropped))}


def _common_prefix_length(ids: Sequence[int], other: Sequence[int]) -> int:
    n = 0
    for a, b in zip(ids, other, strict=False):
        if a != b:
            break
        n += 1
    return n


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(m, Mapping) for m in value):
        raise HFSelectError("tokenize_prompt_completion needs conversational rows: 'prompt' and 'completion' lists of "
                            "{'role', 'content'} messages (hf_select.training.to_prompt_completion makes them); got "
                            f"{type(value).__name__}")
    return [dict(m) for m in value]


def tokenize_prompt_completion(tokenizer: Any, rows: Iterable[Mapping[str, Any]], *,
                               chat_template: str | None = None) -> list[tuple[list[int], list[int]]]:
    """``(prompt_ids, completion_ids)`` of each conversational prompt-completion row, the ids TRL's ``SFTTrainer``
    builds: ``prompt_ids + completion_ids`` is its ``input_ids`` and ``completion_ids`` the tokens its
    ``completion_mask`` marks (see the module docstring). Batched: :data:`TOKENIZE_CHUNK` rows per template call.

    Raises:
        HFSelectError: when the tokenizer has no chat template, or a row is not conversational.

    Example:
        >>> from hf_select.testing import make_tiny_tokenizer
        >>> rows = [{"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant",
        ...          "content": "Hello"}]}]
        >>> [(p, c)] = tokenize_prompt_completion(make_tiny_tokenizer(), rows)
        >>> make_tiny_tokenizer().decode(p)
        '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise HFSelectError("the tokenizer has no chat template, which conversational prompt-completion rows need; "
                            "set chat_template_path (an instruct model's folder or a .jinja file).")
    out: list[tuple[list[int], list[int]]] = []
    chunk: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []

    def flush() -> None:
        if not chunk:
            return
        kwargs = {"tokenize": True, "return_dict": True, "chat_template": chat_template, "tools": None}
        prompts = tokenizer.apply_chat_template([p for p, _ in chunk], add_generation_prompt=True,
                                                **kwargs)["input_ids"]
        full = tokenizer.apply_chat_template([p + c for p, c in chunk], **kwargs)["input_ids"]
        for prompt_ids, ids in zip(prompts, full, strict=True):
            cut = _common_prefix_length(prompt_ids, ids)
            out.append((list(ids[:cut]), list(ids[cut:])))
        chunk.clear()

    for row in rows:
        chunk.append((_messages(row["prompt"]), _messages(row["completion"])))
        if len(chunk) >= TOKENIZE_CHUNK:
            flush()
    flush()
    return out


def trained_tokens(prompt_ids: Sequence[int], completion_ids: Sequence[int], max_length: int | None, *,
                   truncation_mode: str = "keep_start") -> TrainedTokens:
    """The completion tokens TRL computes the loss on after cutting ``prompt_ids + completion_ids`` to
    ``max_length`` (None: no cut), whether it cut, and whether the row is dropped (no label left: TRL filters it
    out) or has no supervised token (a lone label at position 0, which the shifted loss never predicts).

    Example:
        >>> trained_tokens([1, 2, 3], [4, 5], 10)
        TrainedTokens(supervised=2, truncated=False, dropped=False)
        >>> trained_tokens([1, 2, 3], [4, 5], 4)
        TrainedTokens(supervised=1, truncated=True, dropped=False)
        >>> trained_tokens([1, 2, 3], [4, 5], 3)  # the prompt fills max_length
        TrainedTokens(supervised=0, truncated=True, dropped=True)
        >>> trained_tokens([1, 2, 3], [4, 5], 1, truncation_mode="keep_end")  # one label, at position 0
        TrainedTokens(supervised=0, truncated=True, dropped=True)
    """
    if truncation_mode not in TRUNCATION_MODES:
        raise ValueError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {truncation_mode!r}")
    n_prompt, n_completion = len(prompt_ids), len(completion_ids)
    total = n_prompt + n_completion
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 or None, got {max_length}")
    truncated = max_length is not None and total > max_length
    start, end = 0, total
    if truncated:
        start, end = (0, max_length) if truncation_mode == "keep_start" else (total - max_length, total)
    # completion positions kept: [max(start, n_prompt), end); the first kept position is never a target
    labels = max(0, end - max(start, n_prompt))
    supervised = labels - (1 if labels and n_prompt <= start else 0)
    return TrainedTokens(supervised=supervised, truncated=truncated, dropped=labels == 0 or supervised == 0)


def supervised_token_counts(dataset: Any, tokenizer: Any, max_length: int | None, *, turns: str = "last",
                            column_mapping: Mapping[str, str] | None = None, truncation_mode: str = "keep_start",
                            chat_template: str | None = None) -> TokenCounts:
    """Per input row of ``dataset`` (any format :mod:`hf_select.formats` reads, by position): the completion tokens
    TRL's ``SFTTrainer`` trains on at ``max_length`` (the rows :func:`hf_select.training.train_sft` builds with
    ``turns``), whether its sequence was truncated, and whether it is dropped. With ``turns="all"`` a row's turns
    add up: supervised tokens summed, truncated if any turn is, dropped if every turn is. A row that
    :func:`~hf_select.training.to_prompt_completion` cannot convert, or whose response is empty, is dropped with 0
    tokens.

    Example:
        >>> from datasets import Dataset
        >>> from hf_select.testing import make_tiny_tokenizer
        >>> ds = Dataset.from_list([{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
        ...                         {"instruction": "Say nothing.", "input": "", "output": ""}])
        >>> counts = supervised_token_counts(ds, make_tiny_tokenizer(), 512)
        >>> counts.supervised, counts.dropped
        ([3, 0], [False, True])
    """
    from .formats import detect_format
    from .training import to_prompt_completion

    n = len(dataset)
    row_ids = [int(r) for r in dataset[ROW_ID]] if ROW_ID in dataset.column_names else list(range(n))
    counts = TokenCounts(row_ids=row_ids, supervised=[0] * n, truncated=[False] * n, dropped=[True] * n)
    if n == 0:
        return counts
    detect_format(dataset.column_names, column_mapping)  # a dataset in no known format fails here, not below
    plain = dataset.remove_columns(ROW_ID) if ROW_ID in dataset.column_names else dataset  # _row_id = position
    try:
        pc = to_prompt_completion(plain, column_mapping=column_mapping, turns=turns)
    except HFSelectError:  # no row could be converted: every row is dropped
        return counts
    pairs = tokenize_prompt_completion(tokenizer, pc.select_columns(["prompt", "completion"]),
                                       chat_template=chat_template)
    seen: set[int] = set()
    for position, (prompt_ids, completion_ids) in zip(pc[ROW_ID], pairs, strict=True):
        got = trained_tokens(prompt_ids, completion_ids, max_length, truncation_mode=truncation_mode)
        counts.supervised[position] += got.supervised
        counts.truncated[position] = counts.truncated[position] or got.truncated
        counts.dropped[position] = got.dropped and (counts.dropped[position] or position not in seen)
        seen.add(position)
    return counts
