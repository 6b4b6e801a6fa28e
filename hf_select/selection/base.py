"""What every selection step builds on: :class:`StepResult`, reading score and embedding columns, the row budget
(``count`` / ``fraction``) and parameters renamed with a deprecation warning.

One size vocabulary runs through the steps: ``count`` (rows) or ``fraction`` (a share, see each step's ``of``);
:func:`resolve_count` turns either into a number of rows. Only ``kcenter`` also says ``k``, the name the k-center
literature (and MoDS) uses. Old names (``ifd_rule``'s ``top``, ``facility_location``'s ``k``) still work through
:func:`renamed_params`, with a ``FutureWarning`` naming the new one.

Example:
    >>> from datasets import Dataset
    >>> column_values(Dataset.from_dict({"q": [1, None, 3]}), "q").tolist()
    [1.0, nan, 3.0]
    >>> resolve_count(100, 80, fraction=0.1)
    10
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..errors import HFSelectError

OF_CHOICES = ("all", "scored")
TEXT_CHOICES = ("instruction", "prompt", "row", "response")
_TEXT_BATCH = 1000
F = TypeVar("F", bound=Callable[..., Any])


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


def dense_rows(values: Any, name: str = "embeddings") -> np.ndarray:
    """``values`` (nested lists, an array) as one numpy array; rows of different lengths are an error naming ``name``.

    Example:
        >>> dense_rows([[1, 2], [3, 4]]).shape
        (2, 2)
    """
    try:
        arr = np.asarray(values)
    except ValueError as err:  # numpy refuses ragged nested lists
        raise ValueError(f"{name}: rows of different lengths; every row needs the same size") from err
    if arr.dtype == object:
        raise ValueError(f"{name}: rows of different lengths (or missing rows); every row needs the same size")
    return arr


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


def rank_positions(values: np.ndarray, candidates: np.ndarray, descending: bool) -> np.ndarray:
    """``candidates`` ordered by value (descending or ascending), ties by position: deterministic."""
    v = values[candidates]
    return candidates[np.lexsort((candidates, -v if descending else v))]


def renamed_params(step: str, **renames: str) -> Callable[[F], F]:
    """Let a step function still take old parameter names (``old="new"``), with a ``FutureWarning`` that names the
    new one; the old name and the new one together are an error. :func:`hf_select.selection.register_step` reads
    the renames (``function.renamed_params``), so a YAML config with an old name runs too, with the same warning.

    Example:
        >>> import warnings
        >>> @renamed_params("demo", top="fraction")
        ... def demo(dataset, *, fraction=None):
        ...     return fraction
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     demo(None, top=0.2), str(caught[0].message)
        (0.2, "demo: 'top' is deprecated; use 'fraction' (the same value).")
    """

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **rename_params(step, kwargs, renames, stacklevel=2))

        inner.renamed_params = dict(renames)  # type: ignore[attr-defined]
        return inner  # type: ignore[return-value]

    return wrap


def rename_params(step: str, params: Mapping[str, Any], renames: Mapping[str, str], *, stacklevel: int = 2
                  ) -> dict[str, Any]:
    """``params`` with every old name in ``renames`` replaced by its new name, warning once per old name used
    (``stacklevel`` as in :func:`warnings.warn`, counted from the caller).

    Raises:
        HFSelectError: both an old name and its new name were given.
    """
    out = dict(params)
    for old, new in renames.items():
        if old not in out:
            continue
        if new in out:
            raise HFSelectError(f"{step}: give {new!r} only; {old!r} is its old name and both were given.")
        warnings.warn(f"{step}: {old!r} is deprecated; use {new!r} (the same value).", FutureWarning,
                      stacklevel=stacklevel + 1)
        out[new] = out.pop(old)
    return out
