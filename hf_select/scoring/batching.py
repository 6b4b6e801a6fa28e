"""Token-budget batching and CUDA out-of-memory recovery, shared by every model-backed scorer.

Example:
    >>> token_budget_batches([5, 3, 9, 1], max_tokens=12, max_rows=8)  # 9 alone; 5 and 3 pad to 2 x 5 = 10
    [[2], [0, 1], [3]]
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Called with the number of items of every batch a model has just run (the progress bars of BaseScorer.score and
# the dry run's pass counts); empty outside :func:`on_each_batch`.
_BATCH_HOOK: list[Callable[[int], None]] = []


@contextlib.contextmanager
def on_each_batch(callback: Callable[[int], None]) -> Iterator[None]:
    """Within the block, ``callback(items)`` runs after every batch :func:`run_with_oom_retry` finishes (items: the
    sequences, or packed rows, that batch held), so that a progress bar moves per forward pass, not per shard.

    Example:
        >>> seen = []
        >>> with on_each_batch(seen.append):
        ...     _ = run_with_oom_retry([0, 1, 2], lambda idx: sum(idx))
        >>> seen
        [3]
    """
    _BATCH_HOOK.append(callback)
    try:
        yield
    finally:
        _BATCH_HOOK.remove(callback)


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Group item indices, longest first, so that ``rows * longest_length <= max_tokens`` in each group.

    An item longer than the budget gets a group of its own. The padded size of a group is what the budget
    bounds, so length sorting keeps the padding small.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        length = max(1, lengths[i])
        new_longest = max(longest, length)
        if current and (new_longest * (len(current) + 1) > max_tokens or len(current) >= max_rows):
            batches.append(current)
            current, longest = [], 0
            new_longest = length
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Pack items into rows of ``width`` tokens, first-fit decreasing: each item, longest first, goes to the first
    row with room. An item longer than ``width`` gets a row of its own (that row is then wider).

    Example:
        >>> pack_rows([5, 3, 2, 4, 1], width=6)
        [[0, 4], [3, 2], [1]]
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, left in enumerate(room):
            if lengths[i] <= left:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(width - lengths[i])
    return rows


def padded_share(lengths: Sequence[int], batches: Sequence[Sequence[Sequence[int]]]) -> float:
    """The share of computed positions that are padding: ``batches`` is a list of batches, each a list of rows,
    each a list of item indices; a batch computes ``rows x its widest row`` positions.

    Example:
        >>> round(padded_share([4, 2, 2], [[[0], [1]], [[2]]]), 6)  # (4 + 2 + 2) real of (2 x 4 + 2) computed
        0.2
    """
    computed = real = 0
    for batch in batches:
        widths = [sum(lengths[i] for i in row) for row in batch]
        computed += len(batch) * max(widths, default=0)
        real += sum(widths)
    return 1 - real / computed if computed else 0.0


CPU_TOKEN_BUDGET = 1024
GPU_TOKEN_BUDGET = 32768


def default_token_budget(requested: int | None, model: object, *, gpu: int = GPU_TOKEN_BUDGET,
                         cpu: int = CPU_TOKEN_BUDGET) -> int:
    """The token budget to use: the requested one, else the default for the device type the model is on (``gpu``
    on CUDA, else ``cpu``; ``cpu`` when ``model`` has no parameters, e.g. None).

    Example:
        >>> default_token_budget(None, None), default_token_budget(4096, None)
        (1024, 4096)
    """
    if requested is not None:
        return requested
    try:
        device = next(model.parameters()).device  # type: ignore[attr-defined]
    except (AttributeError, StopIteration):
        return cpu
    return gpu if device.type == "cuda" else cpu


def is_oom(err: BaseException) -> bool:
    """True for a CUDA (or other accelerator) out-of-memory error."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def clear_device_cache(garbage_collection: bool = False) -> None:
    """Collect garbage (optionally) and return the accelerator's cached blocks (accelerate's helper when present)."""
    try:
        from accelerate.utils.memory import clear_device_cache as accelerate_clear
    except ImportError:  # pragma: no cover - accelerate is a dependency; the same by hand
        if garbage_collection:
            gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return
    accelerate_clear(garbage_collection=garbage_collection)


def run_with_oom_retry(
    items: list[int], run: Callable[[list[int]], T], on_oom: Callable[[list[int]], T] | None = None
) -> list[tuple[list[int], T]]:
    """Run ``run(items)``; on out-of-memory split the items in halves and retry each half.

    Returns ``(items, result)`` pairs covering every item, in order. A single item that still does not fit goes to
    ``on_oom`` (which records a status) or re-raises when there is none.

    The retry starts only after the ``except`` block is left: while an exception is being handled its traceback
    keeps the failed batch's frames, and so its activations, alive, and the retry could not get that memory back.
    Between the two, garbage is collected and the device cache is cleared.

    Example:
        >>> run_with_oom_retry([0, 1, 2], lambda idx: sum(idx))
        [([0, 1, 2], 3)]
    """
    out: list[tuple[list[int], T]] = []
    pending = [list(items)]
    while pending:
        part = pending.pop(0)
        try:
            out.append((part, run(part)))
            for hook in _BATCH_HOOK:
                hook(len(part))
            continue
        except Exception as err:
            if not is_oom(err):
                raise
            if len(part) == 1 and on_oom is None:
                raise
        # Out of the handler: the error, its traceback and the failed batch's tensors are gone now.
        clear_device_cache(garbage_collection=True)
        if len(part) == 1:
            logger.warning("One item does not fit in memory even alone; it gets status 'oom'.")
            out.append((part, on_oom(part)))  # type: ignore[misc]
            continue
        half = len(part) // 2
        logger.warning("Out of memory on a batch of %d items: retrying in halves.", len(part))
        pending[:0] = [part[:half], part[half:]]
    return out
