"""Token budgets: every method keeps rows, in its own order, until the completion tokens the trainer will supervise
reach the budget.

Equal rows are not equal training signal: the 300 longest rows of a pool can carry several times the supervised
tokens of 300 random rows. So a comparison can give every method the same number of *supervised completion
tokens* instead (``CompareConfig.budget_tokens``). Tokens are counted once per pool, exactly as the trainer sees
them (:func:`hf_select.chat_tokens.supervised_token_counts`: the chat template applied, cut at the training
``max_length``, rows the trainer would drop counted as 0), in the stage ``tokens/``.

A method's order is the order its steps keep rows in as its row count grows: :func:`rows_for_tokens` searches the
smallest row count whose selection reaches the budget. For the nested selections every built-in step makes (top
by a score, longest, a seeded random permutation, greedy k-center), that is exactly "keep rows in order until the
budget is reached"; the last row may pass the budget by less than one row's tokens, and the table shows the
tokens each method trained on.

Example:
    >>> import numpy as np
    >>> tokens = np.array([50, 10, 40, 30, 20])
    >>> order = [0, 2, 3, 4, 1]                                  # a method's preference order
    >>> rows_for_tokens(lambda k: order[:k], tokens, 95)
    (3, [0, 2, 3])
    >>> subset_tokens([0, 2, 3], TokenCounts(tokens, np.array([1, 0, 0, 0, 0], bool), np.zeros(5, bool)))
    {'rows': 3, 'rows_trained': 3, 'supervised_tokens': 120, 'rows_truncated': 1}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HFSelectError

TOKENS_FILE = "tokens.npz"


@dataclass
class TokenCounts:
    """Per pool row: ``supervised`` completion tokens the trainer computes a loss on, whether the completion was
    ``truncated`` at ``max_length``, and whether the trainer ``dropped`` the row (no supervised token)."""

    supervised: np.ndarray
    truncated: np.ndarray
    dropped: np.ndarray
    key: str | None = None  # the ``tokens`` stage's key: a selection made from these counts is keyed by it

    @property
    def total(self) -> int:
        return int(self.supervised.sum())

    def save(self, path: Path) -> None:
        np.savez(path, supervised=self.supervised, truncated=self.truncated, dropped=self.dropped)

    @classmethod
    def load(cls, path: Path) -> TokenCounts:
        with np.load(path) as data:
            return cls(data["supervised"].astype(np.int64), data["truncated"].astype(bool),
                       data["dropped"].astype(bool))


def count_pool_tokens(pool: Any, model_name_or_path: str, max_length: int, *, chat_template_path: str | None = None,
                      turns: str = "last") -> TokenCounts:
    """:class:`TokenCounts` of every pool row with the model's tokenizer and chat template at ``max_length``."""
    from ..chat_tokens import supervised_token_counts
    from ..models import load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(resolve_model_path(model_name_or_path))
    if chat_template_path:
        raise HFSelectError("counting supervised tokens with TrainConfig.chat_template_path is not supported: "
                            "give the model a chat template of its own (its tokenizer_config.json)")
    counts = supervised_token_counts(pool, tokenizer, max_length, turns=turns)
    return TokenCounts(np.asarray(counts.supervised, dtype=np.int64), np.asarray(counts.truncated, dtype=bool),
                       np.asarray(counts.dropped, dtype=bool))


def tokens_stage(runner: Any, pool: Any, pool_key: str, config: Any) -> TokenCounts:
    """Stage ``tokens``: the pool's :class:`TokenCounts` at the training ``max_length`` (reused while the pool, the
    model, the length and the template are the same)."""

    def compute(folder: Path) -> dict[str, Any]:
        counts = count_pool_tokens(pool, config.model_name_or_path, config.max_length,
                                   chat_template_path=config.chat_template_path, turns=config.turns)
        if runner.is_main:
            counts.save(folder / TOKENS_FILE)
        return {"rows": len(counts.supervised), "supervised_tokens": counts.total,
                "rows_truncated": int(counts.truncated.sum()), "rows_dropped": int(counts.dropped.sum())}

    params = {"pool": pool_key, "model": config.model_name_or_path, "max_length": config.max_length,
              "chat_template_path": config.chat_template_path, "turns": config.turns}
    info = runner.run("tokens", compute, params=params)
    counts = TokenCounts.load(info.path / TOKENS_FILE)
    counts.key = info.key
    return counts


def subset_tokens(ids: Sequence[int], counts: TokenCounts) -> dict[str, int]:
    """What the trainer gets of the rows ``ids``: rows chosen, rows trained (not dropped), supervised tokens and
    rows truncated."""
    idx = np.asarray(list(ids), dtype=np.int64)
    return {"rows": int(len(idx)), "rows_trained": int((~counts.dropped[idx]).sum()),
            "supervised_tokens": int(counts.supervised[idx].sum()), "rows_truncated": int(counts.truncated[idx].sum())}


def rows_for_tokens(select_k: Callable[[int], Sequence[int]], tokens: np.ndarray, budget: int, *,
                    max_rows: int | None = None) -> tuple[int, list[int]]:
    """The smallest row count ``k`` whose selection ``select_k(k)`` holds at least ``budget`` supervised tokens,
    and that selection (binary search: about log2(rows) selections).

    When even ``select_k(max_rows)`` (default: every row) holds fewer tokens, that whole selection is returned:
    the method cannot reach the budget (its filters keep too few rows), and the caller reports the shortfall.

    Raises:
        HFSelectError: a budget below 1 token.
    """
    if budget < 1:
        raise HFSelectError(f"budget_tokens must be >= 1, got {budget}")
    hi = int(max_rows if max_rows is not None else len(tokens))
    cache: dict[int, list[int]] = {}

    def pick(k: int) -> tuple[list[int], int]:
        if k not in cache:
            cache[k] = [int(i) for i in select_k(k)]
        return cache[k], int(tokens[np.asarray(cache[k], dtype=np.int64)].sum()) if cache[k] else 0

    ids, total = pick(hi)
    if total < budget:
        return len(ids), ids
    lo = 0  # pick(lo) is below the budget (0 rows hold 0 tokens); pick(hi) reaches it
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pick(mid)[1] >= budget:
            hi = mid
        else:
            lo = mid
    return hi, pick(hi)[0]


def check_budget(budget: int, counts: TokenCounts, name: str = "CompareConfig.budget_tokens") -> None:
    """A token budget the pool can hold: more than the whole pool's supervised tokens is an error."""
    if budget > counts.total:
        raise HFSelectError(f"{name}={budget} is more than the {counts.total} supervised tokens the whole pool holds "
                            f"({len(counts.supervised)} rows at this max_length); lower it or use a larger pool")


def describe(counts: TokenCounts) -> str:
    """One line about the pool's tokens, for logs."""
    return json.dumps({"rows": len(counts.supervised), "supervised_tokens": counts.total,
                       "truncated": int(counts.truncated.sum()), "dropped": int(counts.dropped.sum())})
