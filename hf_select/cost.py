"""The cost preview (``--dry-run``): what a scoring run or a recipe would do and about how long it would take here,
from timing a short sample on this machine; nothing is written.

A scoring stage counts its rows, their tokens (with the scorer's own tokenizer: every row, or an evenly spaced
sample of :data:`TOKEN_SAMPLE` rows of a larger pool, scaled up) and its forward passes (rows x
:meth:`~hf_select.scoring.base.BaseScorer.passes_per_row`: IFD 2, 4 with ``reverse``), then times the model's load
and :data:`TIME_SAMPLE` evenly spaced rows scored as the run scores them (after one warm-up row), and scales the
time per row to the pool. A fine-tune counts its rows and tokens and times a few optimizer steps (forward,
backward, AdamW) on rows of the pool at its batch size and length.

Example:
    >>> plan = CostPlan(rows=200, stages=[StageCost("ifd", "tiny", rows=200, tokens=9000, passes=400,
    ...                                             load_seconds=1.0, seconds=20.0, sampled_rows=32)])
    >>> print(plan.text())  # doctest: +NORMALIZE_WHITESPACE
    dry run: 200 rows; nothing was written
      score ifd  (tiny): 200 rows, 9,000 tokens, 400 forward passes, ~20 s (load 1.0 s; timed on 32 rows)
    estimated time here: ~20 s (from timing samples on this machine)
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

TOKEN_SAMPLE = 1000  # rows whose tokens are counted exactly; a larger pool is counted on an even sample, scaled up
TIME_SAMPLE = 32  # rows timed per scoring stage (a few batches)
TRAIN_STEPS = 2  # optimizer steps timed per fine-tune, after one warm-up step


@dataclass
class StageCost:
    """One stage of the plan: a scoring pass over ``rows`` or a fine-tune (``epochs`` set) on ``rows``."""

    name: str
    model: str
    rows: int
    tokens: int
    passes: int = 0
    load_seconds: float = 0.0
    seconds: float | None = None  # estimated, load included; None when it could not be timed
    sampled_rows: int = 0
    epochs: float | None = None  # a fine-tune
    note: str = ""

    def line(self) -> str:
        """One printable line."""
        when = f"~{_duration(self.seconds)}" if self.seconds is not None else "not timed"
        if self.epochs is not None:
            what = (f"  fine-tune {self.name}  ({self.model}): {self.rows:,} rows, {self.tokens:,} tokens x "
                    f"{self.epochs:g} epochs, {when}")
        else:
            what = (f"  score {self.name}  ({self.model}): {self.rows:,} rows, {self.tokens:,} tokens, "
                    f"{self.passes:,} forward passes, {when}")
        detail = [f"load {self.load_seconds:.1f} s"] if self.seconds is not None else []
        detail += [f"timed on {self.sampled_rows} rows"] if self.sampled_rows else []
        detail += [self.note] if self.note else []
        return what + (f" ({'; '.join(detail)})" if detail else "")


@dataclass
class CostPlan:
    """A dry run's result: the pool's rows and every stage's cost."""

    rows: int
    stages: list[StageCost] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """The estimated time of every timed stage together."""
        return sum(s.seconds or 0.0 for s in self.stages)

    def text(self) -> str:
        """The plan as printable lines."""
        lines = [f"dry run: {self.rows:,} rows; nothing was written", *(s.line() for s in self.stages)]
        lines.append(f"estimated time here: ~{_duration(self.seconds)} (from timing samples on this machine)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "seconds": self.seconds, "stages": [dataclasses.asdict(s) for s in self.stages]}


def _duration(seconds: float | None) -> str:
    """``_duration(75)`` -> ``'1.2 min'``; seconds under 2 min, minutes under 2 h, then hours."""
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def even_sample(n: int, k: int) -> list[int]:
    """``k`` row indices spread evenly over ``n`` rows (all of them when ``n <= k``).

    Example:
        >>> even_sample(10, 3), even_sample(2, 5)
        ([0, 3, 6], [0, 1])
    """
    if n <= k:
        return list(range(n))
    return [i * n // k for i in range(k)]


def row_texts(dataset: Any, indices: Sequence[int], column_mapping: Any = None) -> list[str]:
    """The text of each row's messages (any row format), joined; an unreadable row is an empty text."""
    from .formats import detect_format, row_to_messages

    try:
        fmt = detect_format(dataset.column_names, column_mapping)
    except Exception:
        return ["" for _ in indices]
    rows = dataset.select(indices) if indices else dataset.select([])
    out = []
    for row in rows:
        try:
            out.append("\n".join(str(m.get("content") or "") for m in row_to_messages(row, fmt, column_mapping)))
        except Exception:
            out.append("")
    return out


def count_tokens(tokenizer: Any, dataset: Any, *, max_length: int | None = None, column_mapping: Any = None,
                 sample: int = TOKEN_SAMPLE) -> tuple[int, float]:
    """Tokens of the pool's rows with ``tokenizer`` (every row, or an even sample scaled up), each capped at
    ``max_length``; returns the total and the mean per row."""
    n = len(dataset)
    idx = even_sample(n, sample)
    if not idx:
        return 0, 0.0
    ids = tokenizer(row_texts(dataset, idx, column_mapping), add_special_tokens=False)["input_ids"]
    lengths = [min(len(x), max_length) if max_length else len(x) for x in ids]
    mean = sum(lengths) / len(lengths)
    return (sum(lengths) if len(idx) == n else round(mean * n)), mean


def score_cost(scorer: Any, dataset: Any, *, name: str | None = None, rows: int | None = None,
               sample: int = TIME_SAMPLE, note: str = "") -> StageCost:
    """The cost of ``scorer.score(dataset)`` (or of scoring ``rows`` rows like them): tokens, passes, and the time
    of the model's load plus :data:`TIME_SAMPLE` rows scored, scaled to the pool. Nothing is written."""
    from .scoring.batching import on_each_batch

    n = len(dataset) if rows is None else rows
    cfg = scorer.config
    start = time.perf_counter()
    loaded = scorer.load() if hasattr(scorer, "load") else None
    load_seconds = time.perf_counter() - start
    tokenizer = loaded[1] if isinstance(loaded, tuple) and len(loaded) > 1 else None
    tokens = 0
    if tokenizer is not None and len(dataset):
        total, mean = count_tokens(tokenizer, dataset, max_length=getattr(cfg, "max_length", None),
                                   column_mapping=getattr(cfg, "column_mapping", None))
        tokens = total if rows is None else round(mean * n)
    seconds = None
    idx = even_sample(len(dataset), sample)
    if idx:
        scorer._score_batch(dataset.select(idx[:1])[:])  # warm-up: first-call costs are not per row
        passes = [0]
        start = time.perf_counter()
        with on_each_batch(lambda items: passes.__setitem__(0, passes[0] + items)):
            scorer._score_batch(dataset.select(idx)[:])
        per_row = (time.perf_counter() - start) / len(idx)
        seconds = load_seconds + per_row * n
    model = str(getattr(cfg, "model_name_or_path", None) or type(scorer).__name__)
    return StageCost(name or scorer.name, model, rows=n, tokens=tokens, passes=n * scorer.passes_per_row(),
                     load_seconds=load_seconds, seconds=seconds, sampled_rows=len(idx), note=note)


def finetune_cost(name: str, model_name_or_path: str, train: Any, pool: Any, rows: int, *,
                  steps: int = TRAIN_STEPS, column_mapping: Any = None, note: str = "") -> StageCost:
    """The cost of fine-tuning ``model_name_or_path`` with the :class:`~hf_select.training.TrainConfig` ``train``
    on ``rows`` rows like the pool's: their tokens (capped at ``max_length``) and the time of ``steps`` optimizer
    steps (after a warm-up step) at the batch size, scaled to every step of every epoch, plus the load."""
    import torch

    from .training import load_model_for_training

    start = time.perf_counter()
    model, tokenizer = load_model_for_training(model_name_or_path, config=train)
    load_seconds = time.perf_counter() - start
    _, mean = count_tokens(tokenizer, pool, max_length=train.max_length, column_mapping=column_mapping)
    batch = max(1, train.per_device_train_batch_size)
    texts = row_texts(pool, even_sample(len(pool), batch * (steps + 1)), column_mapping)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    timed = 0.0
    for step in range(steps + 1):
        chunk = texts[step * batch:(step + 1) * batch] or texts[:batch]
        enc = tokenizer(chunk, truncation=True, max_length=train.max_length, padding=True, return_tensors="pt")
        enc = {k: v.to(model.device) for k, v in enc.items()}
        began = time.perf_counter()
        loss = model(**enc, labels=enc["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:  # the first step is a warm-up
            timed += time.perf_counter() - began
    del model, optimizer
    total_steps = math.ceil(rows / batch) * float(train.num_train_epochs)
    seconds = load_seconds + timed / steps * total_steps
    return StageCost(name, model_name_or_path, rows=rows, tokens=round(mean * rows), load_seconds=load_seconds,
                     seconds=seconds, sampled_rows=batch * steps, epochs=float(train.num_train_epochs), note=note)


@dataclass
class PlannedStage:
    """A stage a recipe would run, for its dry run: a ``scorer`` over ``rows`` rows, or (``train`` set) a
    fine-tune of ``model`` on ``rows`` rows."""

    name: str
    rows: int
    scorer: Any = None
    train: Any = None
    model: str = ""
    note: str = ""


def preview(rows: int, stages: Sequence[PlannedStage], pool: Any, *, column_mapping: Any = None,
            release: Callable[[Any], None] | None = None) -> CostPlan:
    """Time every planned stage on samples of ``pool`` (each scorer's models released after it, through
    ``release``) and return the plan."""
    plan = CostPlan(rows=rows)
    for stage in stages:
        if stage.train is not None:
            plan.stages.append(finetune_cost(stage.name, stage.model, stage.train, pool, stage.rows,
                                             column_mapping=column_mapping, note=stage.note))
            continue
        try:
            plan.stages.append(score_cost(stage.scorer, pool, name=stage.name, rows=stage.rows, note=stage.note))
        finally:
            if release is not None:
                release(stage.scorer)
    return plan
