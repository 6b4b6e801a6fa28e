"""Conversion of rows: any supported row format to TRL's conversational prompt-completion rows, and the eval sets.

Rows in any supported format (:mod:`hf_select.formats`) become TRL's *conversational prompt-completion* rows
(:func:`to_prompt_completion`): ``prompt`` is the list of messages before an assistant turn and ``completion`` is
``[that assistant message]``; TRL renders both with the model's chat template and computes the loss on the completion
tokens only. :func:`load_eval_dataset` reads a held-out eval set: any file :func:`hf_select.io.load_rows` reads,
MT-Bench references joined with their questions, or rows of the built-in demo dataset.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..columns import ROW_ID
from ..errors import HFSelectError
from ..formats import RowError, assistant_turns, detect_format, row_to_messages
from .config import TURN_MODES

logger = logging.getLogger(__name__)

_FORMAT_COLUMNS = ("instruction", "input", "output", "system", "history", "conversations", "chosen", "messages",
                   "prompt", "completion", "question", "query", "response", "answer", "_raw", ROW_ID)
DEMO_EVAL_SEED = 10_007  # held-out demo rows: another seed than any demo training set


def _clean(message: Mapping[str, Any]) -> dict[str, str]:
    return {"role": message["role"], "content": message["content"]}


def to_prompt_completion(
    dataset: Any,
    *,
    column_mapping: Mapping[str, str] | None = None,
    turns: str = "last",
    drop_empty: bool = True,
) -> Any:
    """Convert rows of any supported format into TRL's conversational prompt-completion rows.

    Output columns: ``prompt`` (messages before the assistant turn), ``completion`` (``[assistant message]``) and
    ``_row_id`` (kept from the input when present, else the row's index). With ``turns="all"`` a multi-turn row gives
    one output row per assistant turn. Rows that cannot be converted are dropped and counted per reason in a
    warning (``dataset.info.description`` is left alone); ``drop_empty`` also drops empty responses.

    Raises:
        HFSelectError: when no row can be converted.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_list([{"messages": [{"role": "user", "content": "Hi"},
        ...                                      {"role": "assistant", "content": "Hello"}]}])
        >>> to_prompt_completion(ds)[0]["completion"]
        [{'role': 'assistant', 'content': 'Hello'}]
    """
    from datasets import Dataset

    if turns not in TURN_MODES:
        raise ValueError(f"turns must be one of {TURN_MODES}, got {turns!r}")
    fmt = detect_format(dataset.column_names, column_mapping)
    has_ids = ROW_ID in dataset.column_names
    wanted = set(_FORMAT_COLUMNS) | set(column_mapping or {})
    keep = [c for c in dataset.column_names if c in wanted]
    if len(keep) < len(dataset.column_names):
        dataset = dataset.select_columns(keep)  # scores and embeddings are not read
    rows: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    for i, row in enumerate(dataset):
        rid = int(row[ROW_ID]) if has_ids else i
        try:
            messages = row_to_messages(row, fmt, column_mapping)
        except RowError as err:
            dropped[err.status] = dropped.get(err.status, 0) + 1
            continue
        for t in assistant_turns(messages, turns):
            if drop_empty and not messages[t]["content"].strip():
                dropped["empty_response"] = dropped.get("empty_response", 0) + 1
                continue
            rows.append({"prompt": [_clean(m) for m in messages[:t]], "completion": [_clean(messages[t])],
                         ROW_ID: rid})
    if dropped:
        logger.warning("prompt-completion conversion dropped %d rows: %s", sum(dropped.values()),
                       ", ".join(f"{k}={v}" for k, v in sorted(dropped.items())))
    if not rows:
        raise HFSelectError(f"no row could be turned into a prompt and a completion (dropped: {dropped}).")
    return Dataset.from_list(rows)


def load_eval_dataset(source: str | os.PathLike, *, questions: str | os.PathLike | None = None,
                      limit: int | None = None) -> Any:
    """Load a held-out eval set: any file :func:`hf_select.io.load_rows` reads (e.g. AlpacaEval's
    ``alpaca_eval_gpt4_805.json`` with instruction/output), MT-Bench references (``question_id`` + ``choices``)
    joined with their questions (``questions``, default ``mt_bench_questions.jsonl`` beside the file) into one
    ``messages`` conversation per question, or ``demo:N``: N clean rows of the built-in demo dataset generated with
    another seed than the demo training rows (:data:`DEMO_EVAL_SEED`).

    Example:
        >>> ds = load_eval_dataset("../shared/data/eval/mt_bench_reference_gpt4.jsonl")  # doctest: +SKIP
        >>> ds.column_names  # doctest: +SKIP
        ['question_id', 'messages']
    """
    from datasets import Dataset

    from ..io import load_rows

    spec = str(source)
    if spec == "demo" or spec.startswith("demo:"):
        from ..demo import make_demo_dataset

        n = int(spec.split(":", 1)[1]) if ":" in spec else 200
        ds = make_demo_dataset(n=n, seed=DEMO_EVAL_SEED, corrupt_fraction=0.0)
        return ds.select(range(min(limit, len(ds)))) if limit is not None else ds
    ds = load_rows(source)
    if {"question_id", "choices"} <= set(ds.column_names):
        qpath = Path(questions) if questions else Path(source).with_name("mt_bench_questions.jsonl")
        if not qpath.is_file():
            raise HFSelectError(f"{source} holds MT-Bench answers; their questions file {qpath} is missing "
                                "(pass questions=...).")
        qs = {int(r["question_id"]): r["turns"] for r in load_rows(qpath)}
        rows = []
        for r in ds:
            q = qs.get(int(r["question_id"]))
            answers = (r["choices"] or [{}])[0].get("turns") or []
            if not q or len(answers) < len(q):
                continue
            messages = []
            for user, assistant in zip(q, answers, strict=False):
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
            rows.append({"question_id": int(r["question_id"]), "messages": messages})
        if not rows:
            raise HFSelectError(f"{source}: no MT-Bench answer matched a question in {qpath}.")
        ds = Dataset.from_list(rows)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds
