"""Row filters on score columns: threshold, top fraction/count, the IFD rule, a token budget, exact and near dedup.

Every filter takes a ``datasets.Dataset`` and returns a :class:`StepResult`: the positions of the rows it keeps
and, for every other row, the reason it was dropped (``nan_score``, ``below_min``, ``not_top``, ``duplicate``,
...). Nothing is silently lost: :func:`hf_select.selection.select` turns the reasons into the ``dropped`` dataset
and the provenance counts. A NaN score never passes a threshold or makes a top list.

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
import math
import unicodedata
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import HFSelectError

logger = logging.getLogger(__name__)

OF_CHOICES = ("all", "scored")
IFD_OF_CHOICES = ("all", "eligible", "scored")
TEXT_CHOICES = ("instruction", "prompt", "row", "response")
_TEXT_BATCH = 1000


@dataclass
class StepResult:
    """What one selection step did: kept positions (into the step's input) and dropped positions by reason.

    ``info`` holds JSON-serialisable facts for the provenance (a cutoff, a radius, an objective value).
    """

    keep: np.ndarray
    dropped: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mask(cls, keep: np.ndarray, reasons: Mapping[str, np.ndarray], info: dict[str, Any] | None = None
                  ) -> StepResult:
        """Build from a boolean keep mask and boolean masks per reason (the first matching reason wins)."""
        keep = np.asarray(keep, dtype=bool)
        taken = keep.copy()
        dropped: dict[str, np.ndarray] = {}
        for reason, mask in reasons.items():
            m = np.asarray(mask, dtype=bool) & ~taken
            if m.any():
                dropped[reason] = np.flatnonzero(m)
            taken |= m
        if not taken.all():
            dropped["not_selected"] = np.flatnonzero(~taken)
        return cls(np.flatnonzero(keep), dropped, info or {})

    def counts(self) -> dict[str, int]:
        """Rows dropped per reason."""
        return {reason: int(len(idx)) for reason, idx in self.dropped.items()}


# -- reading columns ------------------------------------------------------------------------------------------------


def _require_column(dataset: Any, column: str, step: str, hint: str = "") -> None:
    if column not in dataset.column_names:
        raise HFSelectError(
            f"{step}: the dataset has no column {column!r} (columns: {dataset.column_names}). "
            + (hint or "Add it first (e.g. `hf-select score ...`) or name another column with column=...")
        )


LEGACY_COLUMNS = {"judge_score": "quality"}
"""Score columns that were renamed: old name -> new name (the LLM judge's ``judge_score`` is ``quality`` since both
quality backends write one column). A step that names the old column reads the new one, with a ``FutureWarning``;
a dataset scored before the rename (it holds only the old column) is read under the new name."""


def resolve_column(dataset: Any, column: str) -> str:
    """The column to read for ``column``: itself, or its renamed counterpart (:data:`LEGACY_COLUMNS`) when only
    that one is in the dataset.

    Example:
        >>> from datasets import Dataset
        >>> resolve_column(Dataset.from_dict({"judge_score": [3.0]}), "quality")
        'judge_score'
    """
    names = dataset.column_names
    if column in names:
        return column
    new = LEGACY_COLUMNS.get(column)
    if new is not None and new in names:
        warnings.warn(f"the column {column!r} is now called {new!r}; reading {new!r} (name it in the step)",
                      FutureWarning, stacklevel=3)
        return new
    return next((old for old, renamed in LEGACY_COLUMNS.items() if renamed == column and old in names), column)


def column_values(dataset: Any, column: str, step: str = "select") -> np.ndarray:
    """A numeric column as float64, with null as NaN (a renamed score column is read by either name:
    :func:`resolve_column`).

    Raises:
        HFSelectError: when the column is missing or not numeric (the message names the column).

    Example:
        >>> from datasets import Dataset
        >>> column_values(Dataset.from_dict({"q": [1, None, 3]}), "q").tolist()
        [1.0, nan, 3.0]
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    column = resolve_column(dataset, column)
    _require_column(dataset, column, step)
    arr = dataset.with_format("arrow", columns=[column])[column]
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)
            or pa.types.is_null(arr.type) or pa.types.is_decimal(arr.type)):
        raise HFSelectError(f"{step}: column {column!r} holds {arr.type}, not numbers; name a score column.")
    values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


def string_values(dataset: Any, column: str, step: str = "select") -> list[str | None]:
    """A column as a list of strings (None stays None)."""
    _require_column(dataset, column, step)
    return [None if v is None else str(v) for v in dataset.with_format(None)[column]]


def embedding_matrix(dataset: Any, column: str = "embedding", step: str = "select") -> tuple[np.ndarray, np.ndarray]:
    """The embedding column as an M x d float32 matrix plus the positions of the M rows that have a vector.

    Rows with a null or NaN vector (``embedding_status`` not ok) are left out (the caller gives them a reason).
    A column of vectors of different sizes is an error.

    Raises:
        HFSelectError: missing column, not a list column, or vectors of different sizes.

    Example:
        >>> from datasets import Dataset
        >>> x, rows = embedding_matrix(Dataset.from_dict({"embedding": [[1.0, 0.0], None, [0.0, 1.0]]}))
        >>> x.shape, rows.tolist()
        ((2, 2), [0, 2])
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    _require_column(dataset, column, step, hint="Compute embeddings first: `hf-select score embed` or "
                    "dataset.map(hf_select.embed, batched=True).")
    arr = dataset.with_format("arrow", columns=[column])[column]
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_null(arr.type):
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type)):
        raise HFSelectError(f"{step}: column {column!r} holds {arr.type}, not vectors (lists of numbers).")
    valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = np.asarray(pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    sizes = np.unique(lengths[valid])
    if len(sizes) > 1:
        raise HFSelectError(
            f"{step}: column {column!r} holds vectors of different sizes {sizes[:5].tolist()}; embed every row with "
            "the same model (recompute the column)."
        )
    rows = np.flatnonzero(valid & (lengths > 0))
    if len(rows) == 0:
        return np.zeros((0, int(sizes[0]) if len(sizes) else 0), dtype=np.float32), rows
    flat = pc.list_flatten(arr.filter(pa.array(valid & (lengths > 0))))
    x = np.array(pc.cast(flat, pa.float32()).to_numpy(zero_copy_only=False), dtype=np.float32)  # writable
    x = x.reshape(len(rows), int(sizes[0]))
    finite = np.isfinite(x).all(1)
    if not finite.all():
        x, rows = x[finite], rows[finite]
    return x, rows


def iter_texts(
    dataset: Any,
    text: str = "row",
    *,
    column: str | None = None,
    template: str = "plain",
    column_mapping: Mapping[str, str] | None = None,
    tokenizer: Any = None,
    batch_size: int = _TEXT_BATCH,
) -> Iterator[tuple[list[str | None], list[str]]]:
    """Texts of the rows, a batch at a time: ``(texts, statuses)``, None and a status for rows without one.

    ``column`` reads a text column as is; otherwise ``text`` is ``instruction``, ``prompt``, ``row`` or
    ``response`` from the row's conversation (see :func:`hf_select.scoring.embed.row_text`).
    """
    from ..scoring.embed import batch_texts

    if column is not None:
        values = string_values(dataset, column)
        for lo in range(0, len(values), batch_size):
            chunk = values[lo : lo + batch_size]
            yield chunk, ["ok" if v is not None and v.strip() else "empty_text" for v in chunk]
        return
    if text not in TEXT_CHOICES:
        raise ValueError(f"text must be one of {TEXT_CHOICES}, got {text!r}")
    plain = dataset.with_format(None)
    for lo in range(0, len(plain), batch_size):
        yield batch_texts(plain[lo : lo + batch_size], text, template, column_mapping, tokenizer)


def resolve_count(
    n_rows: int,
    n_eligible: int,
    *,
    fraction: float | None = None,
    count: int | None = None,
    of: str = "all",
    step: str = "select",
    n_scored: int | None = None,
    count_name: str = "count",
) -> int:
    """How many rows a ``fraction`` (of all rows or of the scored rows, rounded down) or a ``count`` means.

    ``n_scored`` (default ``n_eligible``) is the number of rows with a score, the base of ``of="scored"``; asking
    for more than the ``n_eligible`` rows that may be kept gives those rows, with a warning.

    Example:
        >>> resolve_count(100, 80, fraction=0.1), resolve_count(100, 80, fraction=0.1, of="scored")
        (10, 8)
    """
    if (fraction is None) == (count is None):
        raise ValueError(f"{step}: give exactly one of fraction (0 < fraction <= 1) or {count_name} (rows)")
    if of not in OF_CHOICES:
        raise ValueError(f"{step}: of must be one of {OF_CHOICES}, got {of!r}")
    if fraction is not None:
        if isinstance(fraction, bool) or not 0 < float(fraction) <= 1:
            raise ValueError(
                f"{step}: fraction must be in (0, 1], got {fraction!r}; use {count_name}= for a number of rows"
            )
        base = n_rows if of == "all" else (n_eligible if n_scored is None else n_scored)
        want = int(math.floor(float(fraction) * base + 1e-9))
    else:
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"{step}: {count_name} must be a non-negative integer, got {count!r}")
        want = int(count)
    if want > n_eligible:
        warnings.warn(
            f"{step}: asked for {want} rows but only {n_eligible} qualify; keeping all {n_eligible}.",
            UserWarning,
            stacklevel=3,
        )
        want = n_eligible
    return want


def _ranked(values: np.ndarray, candidates: np.ndarray, descending: bool) -> np.ndarray:
    """``candidates`` ordered by value (descending or ascending), ties by position: deterministic."""
    v = values[candidates]
    return candidates[np.lexsort((candidates, -v if descending else v))]


# -- filters ----------------------------------------------------------------------------------------------------------


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
    ranked = _ranked(v, scored, descending)
    keep = np.zeros(len(v), bool)
    keep[ranked[:n]] = True
    info = {"cutoff": float(v[ranked[n - 1]])} if n else {}
    return StepResult.from_mask(keep, {"nan_score": np.isnan(v), "not_top": ~keep}, info)


def ifd_rule(
    dataset: Any,
    *,
    fraction: float | None = None,
    count: int | None = None,
    top: float | None = None,
    column: str = "ifd",
    status_column: str | None = "ifd_status",
    max_ifd: float = 1.0,
    of: str = "all",
) -> StepResult:
    """The IFD rule of both seeds: only rows with ``ifd_status == "ok"``, drop ``IFD >= max_ifd``, keep the highest.

    ``top`` is another name for ``fraction``. What a fraction counts (``of``) is where the seeds differ:

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
    if top is not None:
        if fraction is not None:
            raise ValueError("ifd_rule: give fraction or top (the same thing), not both")
        fraction = top
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
    ranked = _ranked(v, eligible, True)
    keep = np.zeros(len(v), bool)
    keep[ranked[:n]] = True
    reasons["not_top"] = ~keep
    info = {"eligible": int(len(eligible)), "cutoff": float(v[ranked[n - 1]]) if n else None}
    return StepResult.from_mask(keep, reasons, info)


def _token_counts(dataset: Any, tokens_column: str | None, tokenizer: Any, text: str, template: str,
                  column_mapping: Mapping[str, str] | None) -> np.ndarray:
    if tokens_column is not None and tokens_column in dataset.column_names:
        return column_values(dataset, tokens_column, "token_budget")
    if tokenizer is None:
        raise HFSelectError(
            f"token_budget: the dataset has no {tokens_column!r} column and no tokenizer was given; pass "
            "tokens_column=<a column of token counts> or tokenizer=<name or folder>."
        )
    if isinstance(tokenizer, str):
        from ..models import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    counts: list[float] = []
    for texts, _ in iter_texts(dataset, text, template=template, column_mapping=column_mapping, tokenizer=tokenizer):
        present = [t for t in texts if t is not None]
        ids = tokenizer(present, add_special_tokens=False)["input_ids"] if present else []
        it = iter(ids)
        counts.extend(math.nan if t is None else float(len(next(it))) for t in texts)
    return np.asarray(counts, dtype=np.float64)


def token_budget(
    dataset: Any,
    budget: int,
    *,
    tokens_column: str | None = "response_tokens",
    tokenizer: Any = None,
    text: str = "row",
    template: str = "plain",
    order_by: str | None = None,
    descending: bool = True,
    fill: bool = False,
    column_mapping: Mapping[str, str] | None = None,
) -> StepResult:
    """Keep rows, in order, until ``budget`` training tokens.

    Token counts come from ``tokens_column`` (default ``response_tokens``, what IFD scoring writes: the tokens a
    completion-only SFT trains on) or, when the dataset has no such column, from ``tokenizer`` applied to
    ``text`` (``row`` = prompt + response, or ``response``). Rows go by ``order_by`` (highest first; NaN rows are
    dropped as ``nan_score``) or in dataset order. Without ``fill`` the first row that does not fit ends the
    selection; with ``fill`` later, smaller rows may still fill the budget. Reasons: ``nan_score``,
    ``no_token_count``, ``over_budget``.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"response_tokens": [5, 5, 5], "ifd": [0.2, 0.9, 0.5]})
        >>> token_budget(ds, 10, order_by="ifd").keep.tolist()
        [1, 2]
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer, float)) or budget < 0:
        raise ValueError(f"token_budget: budget must be a non-negative number of tokens, got {budget!r}")
    counts = _token_counts(dataset, tokens_column, tokenizer, text, template, column_mapping)
    n = len(counts)
    no_count = ~np.isfinite(counts) | (counts < 0)
    if order_by is not None:
        v = column_values(dataset, order_by, "token_budget")
        nan = np.isnan(v)
        order = _ranked(v, np.flatnonzero(~nan & ~no_count), descending)
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
    info = {"tokens": int(used), "budget": budget}
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
