"""Row filters on score columns: threshold, top fraction/count, the IFD rule, a token budget, exact and near dedup.

Every filter takes a ``datasets.Dataset`` and returns a :class:`StepResult`: the positions of the rows it keeps
and, for every other row, the reason it was dropped (``nan_score``, ``below_min``, ``not_top``, ``duplicate``,
...). Nothing is silently lost: :func:`hf_select.selection.select` turns the reasons into the ``dropped`` dataset
and the provenance counts. A NaN score never passes a threshold or makes a top list. ``StepResult`` and the column
readers live in :mod:`.base` (they can still be imported from here).

Example:
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"quality": [0.5, -1.0, float("nan"), 2.0]})
    >>> r = threshold(ds, "quality", min=0.0)
    >>> r.keep.tolist(), {k: v.tolist() for k, v in r.dropped.items()}
    ([0, 3], {'nan_score': [2], 'below_min': [1]})
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import HFSelectError
from .base import (
    StepResult,
    column_values,
    embedding_matrix,
    iter_texts,
    rank_positions,
    renamed_params,
    resolve_count,
    string_values,
)

logger = logging.getLogger(__name__)

IFD_OF_CHOICES = ("all", "eligible", "scored")



def threshold(
    dataset: Any,
    column: str,
    *,
    min: float | None = None,
    max: float | None = None,
    strict: bool = False,
) -> StepResult:
    """Keep rows with ``min <= column <= max`` (``<`` with ``strict=True``; MoDS keeps reward > 0).

    Reasons: ``nan_score``, ``below_min``, ``above_max``.

    Example:
        >>> from datasets import Dataset
        >>> threshold(Dataset.from_dict({"r": [0.0, 1.0]}), "r", min=0.0, strict=True).keep.tolist()
        [1]
    """
    if min is None and max is None:
        raise ValueError("threshold: give min, max or both")
    if min is not None and max is not None and min > max:
        raise ValueError(f"threshold: min ({min}) is larger than max ({max})")
    v = column_values(dataset, column, "threshold")
    nan = np.isnan(v)
    with np.errstate(invalid="ignore"):
        below = np.zeros(len(v), bool) if min is None else (v <= min if strict else v < min)
        above = np.zeros(len(v), bool) if max is None else (v >= max if strict else v > max)
    keep = ~nan & ~below & ~above
    return StepResult.from_mask(keep, {"nan_score": nan, "below_min": below, "above_max": above})


def top(
    dataset: Any,
    column: str,
    *,
    fraction: float | None = None,
    count: int | None = None,
    of: str = "all",
    descending: bool = True,
) -> StepResult:
    """Keep the rows with the highest (``descending=False``: lowest) values of ``column``.

    ``fraction`` counts all rows of the step's input (``of="all"``) or only the rows with a score
    (``of="scored"``). Ties are broken by row order. Reasons: ``nan_score``, ``not_top``.

    Example:
        >>> from datasets import Dataset
        >>> top(Dataset.from_dict({"s": [3.0, 1.0, 2.0, float("nan")]}), "s", fraction=0.5).keep.tolist()
        [0, 2]
    """
    v = column_values(dataset, column, "top")
    scored = np.flatnonzero(~np.isnan(v))
    n = resolve_count(len(v), len(scored), fraction=fraction, count=count, of=of, step="top")
    ranked = rank_positions(v, scored, descending)
    keep = np.zeros(len(v), bool)
    keep[ranked[:n]] = True
    info = {"cutoff": float(v[ranked[n - 1]])} if n else {}
    return StepResult.from_mask(keep, {"nan_score": np.isnan(v), "not_top": ~keep}, info)


@renamed_params("ifd_rule", top="fraction")
def ifd_rule(
    dataset: Any,
    *,
    fraction: float | None = None,
    count: int | None = None,
    column: str = "ifd",
    status_column: str | None = "ifd_status",
    max_ifd: float = 1.0,
    of: str = "all",
) -> StepResult:
    """The IFD rule of both seeds: only rows with ``ifd_status == "ok"``, drop ``IFD >= max_ifd``, keep the highest.

    The budget is ``count`` rows or a ``fraction`` (``top`` is the old name of ``fraction``: still accepted, with a
    ``FutureWarning``). What a fraction counts (``of``) is where the seeds differ:

    - ``of="all"``: a share of all rows of the step's input, whatever their score. Superfiltering's rule
      (its selection keeps ``rate x`` the size of the whole dataset after dropping IFD >= 1).
    - ``of="eligible"``: a share of the rows left after the statuses, NaN and ``IFD >= max_ifd`` are dropped.
      Cherry LLM's rule (it drops IFD > 1, then keeps ``rate x`` the rows that remain).
    - ``of="scored"``: a share of the rows with an ok score, counted before ``IFD >= max_ifd`` is dropped.

    Ties are broken by row order. Reasons: ``ifd_status:<status>`` (e.g. ``ifd_status:prompt_too_long``),
    ``nan_score``, ``ifd_ge_1``, ``not_top``.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"ifd": [0.9, 1.2, 0.5, 0.7], "ifd_status": ["ok", "ok", "ok", "ok"]})
        >>> ifd_rule(ds, count=2).keep.tolist()
        [0, 3]
        >>> len(ifd_rule(ds, fraction=0.5).keep), len(ifd_rule(ds, fraction=0.5, of="eligible").keep)
        (2, 1)
    """
    v = column_values(dataset, column, "ifd_rule")
    reasons: dict[str, np.ndarray] = {}
    ok = np.ones(len(v), bool)
    if status_column is not None and status_column in dataset.column_names:
        status = np.asarray(string_values(dataset, status_column, "ifd_rule"), dtype=object)
        for st in sorted({s for s in status if s != "ok"}, key=str):
            reasons[f"{status_column}:{st}"] = status == st
        ok &= status == "ok"
    nan = np.isnan(v)
    with np.errstate(invalid="ignore"):
        ge = ~nan & (v >= max_ifd)
    reasons["nan_score"] = nan
    reasons["ifd_ge_1" if max_ifd == 1.0 else f"ifd_ge_{max_ifd:g}"] = ge
    eligible = np.flatnonzero(ok & ~nan & ~ge)
    if of not in IFD_OF_CHOICES:
        raise ValueError(f"ifd_rule: of must be one of {IFD_OF_CHOICES}, got {of!r}")
    n_base = len(eligible) if of == "eligible" else int((ok & ~nan).sum())
    n = resolve_count(len(v), len(eligible), fraction=fraction, count=count, of="all" if of == "all" else "scored",
                      step="ifd_rule", n_scored=n_base)
    ranked = rank_positions(v, eligible, True)
    keep = np.zeros(len(v), bool)
    keep[ranked[:n]] = True
    reasons["not_top"] = ~keep
    info = {"eligible": int(len(eligible)), "cutoff": float(v[ranked[n - 1]]) if n else None}
    return StepResult.from_mask(keep, reasons, info)


def _token_counts(dataset: Any, tokens_column: str | Sequence[str] | None, tokenizer: Any, text: str, template: str,
                  column_mapping: Mapping[str, str] | None) -> tuple[np.ndarray, str]:
    """Token counts per row (NaN where unknown) and where they came from, for the provenance."""
    columns = [tokens_column] if isinstance(tokens_column, str) else list(tokens_column or [])
    if any(not isinstance(c, str) for c in columns):
        raise HFSelectError(f"token_budget: tokens_column must be a column name or a list of them (summed, e.g. "
                            f"[prompt_tokens, response_tokens]), got {tokens_column!r}")
    missing = [c for c in columns if c not in dataset.column_names]
    if columns and not missing:
        counts = np.sum([column_values(dataset, c, "token_budget") for c in columns], axis=0)
        return np.asarray(counts, dtype=np.float64).reshape(len(dataset)), " + ".join(columns)
    if tokenizer is None:
        what = f"no {' or '.join(repr(c) for c in missing)} column" if missing else "no tokens_column"
        raise HFSelectError(
            f"token_budget: the dataset has {what} and no tokenizer was given. Fix: name the column of token counts a "
            "scorer wrote with tokens_column=... (IFD scoring writes 'response_tokens'; a list such as "
            "[prompt_tokens, response_tokens] is summed), or pass a loaded tokenizer object as tokenizer=... "
            "(from Python; a selection step loads no model or tokenizer itself)."
        )
    if isinstance(tokenizer, (str, bytes)) or not callable(tokenizer):
        raise HFSelectError(
            f"token_budget: tokenizer must be a loaded tokenizer object, got {tokenizer!r}; a selection step loads no "
            "model or tokenizer. Fix: load it yourself (e.g. hf_select.models.load_tokenizer(name)) and pass the "
            "object, or give tokens_column=<a column of token counts a scorer wrote, e.g. response_tokens>."
        )
    counts: list[float] = []
    for texts, _ in iter_texts(dataset, text, template=template, column_mapping=column_mapping, tokenizer=tokenizer):
        present = [t for t in texts if t is not None]
        ids = tokenizer(present, add_special_tokens=False)["input_ids"] if present else []
        it = iter(ids)
        counts.extend(np.nan if t is None else float(len(next(it))) for t in texts)
    return np.asarray(counts, dtype=np.float64), f"tokenizer ({text})"


def token_budget(
    dataset: Any,
    budget: int,
    *,
    tokens_column: str | Sequence[str] | None = "response_tokens",
    tokenizer: Any = None,
    text: str = "row",
    template: str = "plain",
    order_by: str | None = None,
    descending: bool = True,
    fill: bool = False,
    column_mapping: Mapping[str, str] | None = None,
) -> StepResult:
    """Keep rows, in order, until ``budget`` training tokens.

    Token counts come from ``tokens_column``: a column a scorer wrote (default ``response_tokens``, what IFD
    scoring writes: the tokens a completion-only SFT trains on), or a list of columns that are summed (e.g.
    ``[prompt_tokens, response_tokens]`` for whole rows). When those columns are missing, a tokenizer *object* the
    caller passes (``tokenizer=``, from Python) counts the tokens of ``text`` (``row`` = prompt + response, or
    ``response``). The step never loads a tokenizer itself: a name is an error, and so is having neither. Rows go by
    ``order_by`` (highest first; NaN rows are dropped as ``nan_score``) or in dataset order. Without ``fill`` the
    first row that does not fit ends the selection; with ``fill`` later, smaller rows may still fill the budget.
    Reasons: ``nan_score``, ``no_token_count``, ``over_budget``.

    Raises:
        HFSelectError: no token-count column and no tokenizer object (the message says how to give either).

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"response_tokens": [5, 5, 5], "ifd": [0.2, 0.9, 0.5]})
        >>> token_budget(ds, 10, order_by="ifd").keep.tolist()
        [1, 2]
        >>> pair = Dataset.from_dict({"prompt_tokens": [3, 1], "response_tokens": [5, 5]})
        >>> token_budget(pair, 10, tokens_column=["prompt_tokens", "response_tokens"]).info
        {'tokens': 8, 'budget': 10, 'counts': 'prompt_tokens + response_tokens'}
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer, float)) or budget < 0:
        raise ValueError(f"token_budget: budget must be a non-negative number of tokens, got {budget!r}")
    counts, source = _token_counts(dataset, tokens_column, tokenizer, text, template, column_mapping)
    n = len(counts)
    no_count = ~np.isfinite(counts) | (counts < 0)
    if order_by is not None:
        v = column_values(dataset, order_by, "token_budget")
        nan = np.isnan(v)
        order = rank_positions(v, np.flatnonzero(~nan & ~no_count), descending)
    else:
        nan = np.zeros(n, bool)
        order = np.flatnonzero(~no_count)
    keep = np.zeros(n, bool)
    used = 0.0
    for i in order:
        if used + counts[i] <= budget:
            keep[i] = True
            used += counts[i]
        elif not fill:
            break
    info = {"tokens": int(used), "budget": budget, "counts": source}
    return StepResult.from_mask(keep, {"nan_score": nan, "no_token_count": no_count, "over_budget": ~keep}, info)


def normalise_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: two texts equal after this are exact duplicates.

    Example:
        >>> normalise_text("  Hello\\n  WORLD ")
        'hello world'
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _preference_order(dataset: Any, prefer: str | None, n: int, step: str) -> np.ndarray:
    """Rows in the order duplicates are resolved: the first one seen is kept."""
    if prefer is None:
        return np.arange(n)
    v = column_values(dataset, prefer, step)
    return np.lexsort((np.arange(n), -np.nan_to_num(v, nan=0.0), np.isnan(v)))  # NaN last, then highest first


def dedup_exact(
    dataset: Any,
    *,
    text: str = "row",
    column: str | None = None,
    prefer: str | None = None,
    template: str = "plain",
    column_mapping: Mapping[str, str] | None = None,
) -> StepResult:
    """Drop rows whose normalised text (see :func:`normalise_text`) equals an earlier row's.

    The first row of each group is kept, or the one with the highest ``prefer`` score. Rows whose text cannot be
    read (e.g. ``invalid_row``) are kept and counted in ``info``. Reason: ``duplicate``.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"instruction": ["Hi", "hi ", "Yo"], "output": ["a", "A", "b"]})
        >>> dedup_exact(ds).keep.tolist()
        [0, 2]
    """
    digests: list[bytes | None] = []
    for texts, _ in iter_texts(dataset, text, column=column, template=template, column_mapping=column_mapping):
        digests.extend(None if t is None else hashlib.blake2b(normalise_text(t).encode(), digest_size=16).digest()
                       for t in texts)
    n = len(digests)
    dup = np.zeros(n, bool)
    seen: set[bytes] = set()
    for i in _preference_order(dataset, prefer, n, "dedup_exact"):
        d = digests[i]
        if d is None:
            continue
        if d in seen:
            dup[i] = True
        else:
            seen.add(d)
    info = {"unreadable_rows_kept": int(sum(d is None for d in digests))}
    return StepResult.from_mask(~dup, {"duplicate": dup}, info)


def dedup_near(
    dataset: Any,
    *,
    threshold: float = 0.95,
    column: str = "embedding",
    prefer: str | None = None,
    block_size: int = 1024,
    device: str | None = None,
) -> StepResult:
    """Drop rows whose embedding has cosine similarity >= ``threshold`` with an earlier kept row.

    Rows are visited in dataset order (or by ``prefer``, highest first); each is compared with the rows kept so
    far in blocks of ``block_size`` rows, so memory is the embeddings plus ``block x kept`` similarities, never
    N x N. Rows without an embedding are kept and counted in ``info``. Reason: ``near_duplicate``.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"embedding": [[1.0, 0.0], [0.99, 0.01], [0.0, 1.0]]})
        >>> dedup_near(ds, threshold=0.95).keep.tolist()
        [0, 2]
    """
    import torch

    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"dedup_near: threshold is a cosine similarity in [-1, 1], got {threshold}")
    if block_size < 1:
        raise ValueError(f"dedup_near: block_size must be >= 1, got {block_size}")
    n = len(dataset)
    x, rows = embedding_matrix(dataset, column, "dedup_near")
    order_all = _preference_order(dataset, prefer, n, "dedup_near")
    pos_in_x = np.full(n, -1, dtype=np.int64)
    pos_in_x[rows] = np.arange(len(rows))
    order = order_all[pos_in_x[order_all] >= 0]  # rows with a vector, in visiting order
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    xt = torch.from_numpy(x).to(dev)
    norms = xt.norm(dim=1, keepdim=True).clamp_min(1e-12)
    xt = xt / norms
    kept_vecs = torch.empty_like(xt)
    n_kept = 0
    dup = np.zeros(n, bool)
    cap = max(1, (1 << 24) // max(1, block_size))
    for lo in range(0, len(order), block_size):
        block_rows = order[lo : lo + block_size]
        b = xt[torch.from_numpy(pos_in_x[block_rows]).to(dev)]
        hit_prev = torch.zeros(len(block_rows), dtype=torch.bool, device=dev)
        for klo in range(0, n_kept, cap):
            sims = b @ kept_vecs[klo : min(n_kept, klo + cap)].T
            hit_prev |= (sims >= threshold).any(1)
        within = (b @ b.T >= threshold).cpu().numpy()
        hit = hit_prev.cpu().numpy()
        kept_here = np.zeros(len(block_rows), bool)
        for r in range(len(block_rows)):
            if hit[r] or within[r, :r][kept_here[:r]].any():
                dup[block_rows[r]] = True
            else:
                kept_here[r] = True
        new = b[torch.from_numpy(np.flatnonzero(kept_here)).to(dev)]
        kept_vecs[n_kept : n_kept + len(new)] = new
        n_kept += len(new)
    info = {"rows_without_embedding_kept": int(n - len(rows)), "threshold": threshold}
    return StepResult.from_mask(~dup, {"near_duplicate": dup}, info)
