"""A recipe's ``dry_run``: read the pool, print every scoring stage and fine-tune it would run with its rows,
tokens, forward passes and an estimated time (from timing samples here, :mod:`hf_select.cost`), then stop; nothing
is written (no ``output_dir`` is created).

Each recipe gives :func:`recipe_dry_run` a plan: a function of its arguments and the pool's row count returning
the :class:`~hf_select.cost.PlannedStage` list. Row counts decided by a selection the dry run cannot make (rows above
a quality threshold) are the most the stage can get, and say so.

Example:
    >>> from hf_select.cost import PlannedStage
    >>> PlannedStage("train", rows=20, train=object(), model="m").rows
    20
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..cost import PlannedStage, preview
from ..errors import HFSelectError


def pool_rows(args: Any) -> tuple[Any, int]:
    """The recipe's pool (:func:`hf_select.stages.load_source`) and its row count; a streamed pool is counted by
    reading it once, and its first rows (up to the token sample) stand in for it."""
    from datasets import Dataset

    from ..cost import TOKEN_SAMPLE
    from ..scoring.base import is_streamed
    from ..stages import load_source

    pool = load_source(args)
    if not is_streamed(pool):
        return pool, len(pool)
    head = list(pool.take(TOKEN_SAMPLE))
    if not head:
        raise HFSelectError(f"{args.dataset_name}: the streamed pool has no rows; check dataset_name, "
                            "dataset_config and dataset_train_split.")
    count = sum(1 for _ in pool)
    return Dataset.from_list(head), count


def recipe_dry_run(args: Any, plan: Callable[[Any, int], list[PlannedStage]]) -> dict[str, Any]:
    """Print the recipe's cost preview and return it as the recipe's summary (``{"dry_run": ...}``)."""
    from ..stages import release_models

    pool, rows = pool_rows(args)
    cost = preview(rows, plan(args, rows), pool, column_mapping=args.column_mapping, release=release_models)
    print(cost.text())
    return {"dry_run": cost.to_dict()}


def kept_rows(count: int | None, fraction: float | None, n: int) -> int:
    """The rows a count-or-share rule keeps of ``n``.

    Example:
        >>> kept_rows(None, 0.1, 205), kept_rows(30, None, 10)
        (20, 10)
    """
    if count is not None:
        return min(count, n)
    return max(1, int(float(fraction or 1.0) * n + 1e-9))
