"""The rows of a comparison: the pool built from several files (a ``source`` column says which file each row came
from, sampled per source with ``pool_limit``), the eval sets' names, and what is measured of any subset of the pool
(response lengths, composition by source, corrupted rows of a labelled pool).

Example:
    >>> source_names(["data/a.json", "other/a.json", "b.jsonl"])
    ['a', 'a_2', 'b']
    >>> count_by(["a", "b", "a"])
    {'a': 2, 'b': 1}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import HFSelectError

logger = logging.getLogger(__name__)

SOURCE_COLUMN = "source"
CORRUPTION_COLUMN = "corruption"  # the demo pool's label of rows corrupted on purpose ("none" = clean)


def source_names(files: Sequence[str]) -> list[str]:
    """One name per file: its stem, numbered where two stems are the same (``a``, ``a_2``)."""
    names: list[str] = []
    for f in files:
        stem = Path(str(f).rstrip("/")).stem or str(f)
        name, i = stem, 2
        while name in names:
            name, i = f"{stem}_{i}", i + 1
        names.append(name)
    return names


def stratified_indices(sources: Sequence[str], limit: int, seed: int = 0) -> list[int]:
    """``limit`` row positions sampled per source in proportion to its size (largest remainders), sorted.

    Example:
        >>> idx = stratified_indices(["a"] * 80 + ["b"] * 20, 10, seed=0)
        >>> len(idx), sum(i >= 80 for i in idx)
        (10, 2)
    """
    import numpy as np

    n = len(sources)
    if limit >= n:
        return list(range(n))
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        groups.setdefault(s, []).append(i)
    exact = {s: limit * len(idx) / n for s, idx in groups.items()}
    quota = {s: int(math.floor(v)) for s, v in exact.items()}
    order = sorted(groups, key=lambda s: -(exact[s] - quota[s]))
    for s in order[: limit - sum(quota.values())]:
        quota[s] += 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for s, idx in groups.items():
        chosen += [int(i) for i in rng.choice(np.asarray(idx), size=quota[s], replace=False)]
    return sorted(chosen)


def prompt_key(messages: Sequence[Mapping[str, Any]]) -> str:
    """What makes two rows "the same question": the text of every turn before the last assistant turn, lower-cased,
    whitespace collapsed.

    Example:
        >>> prompt_key([{"role": "user", "content": "Name  a Colour."}, {"role": "assistant", "content": "Red"}])
        'user: name a colour.'
    """
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    return "\n".join(f"{m['role']}: {' '.join(str(m['content']).lower().split())}" for m in messages[:last])


def eval_prompt_keys(path: str, *, questions: str | None = None) -> set[str]:
    """The :func:`prompt_key` of every row of an eval set (as the eval stages read it)."""
    from ..training import load_eval_dataset

    return set(dataset_prompt_keys(load_eval_dataset(path, questions=questions)))


def dataset_prompt_keys(dataset: Any) -> list[str]:
    """The :func:`prompt_key` of every readable row of a dataset (unreadable rows are skipped).

    Example:
        >>> from datasets import Dataset
        >>> dataset_prompt_keys(Dataset.from_list([{"instruction": "Hi", "input": "", "output": "Hello"}]))
        ['user: hi']
    """
    from ..formats import RowError, detect_format, row_to_messages

    fmt = detect_format(dataset.column_names)
    keys: list[str] = []
    for row in dataset:
        try:
            keys.append(prompt_key(row_to_messages(row, fmt)))
        except RowError:
            continue
    return keys


def build_pool(files: Sequence[str], *, limit: int | None = None, seed: int = 0,
               exclude: Mapping[str, set[str]] | None = None) -> tuple[Any, dict[str, Any]]:
    """One dataset from several files, with a ``source`` column (the row's own, else the file's stem).

    When every row is a single instruction -> response (Alpaca-like), the pool has ``instruction``, ``input``,
    ``output`` and ``source``; otherwise every row becomes ``messages`` + ``source``. Rows that cannot be read as a
    conversation are dropped and counted per reason. ``exclude`` maps an eval set's name to its
    :func:`prompt_key` set: pool rows asking an eval question are removed before sampling and counted per eval set
    (``info["eval_overlap"]``). ``limit`` samples rows per source in proportion to its size.

    Raises:
        HFSelectError: a file that is missing, empty or has no known row format, or an empty pool.

    Example:
        >>> pool, info = build_pool(["demo:50", "demo:30"], limit=20)  # two built-in demo pools
        >>> len(pool), info["format"], info["composition"]
        (20, 'alpaca', {'demo:50': 13, 'demo:30': 7})
    """
    from datasets import Dataset

    from ..formats import DatasetFormatError, RowError, detect_format, row_to_messages
    from ..io import load_rows

    records: list[tuple[str, list[dict[str, str]], str | None]] = []
    dropped: dict[str, int] = {}
    any_labelled = False
    for path, stem in zip(files, source_names(files), strict=True):
        if str(path) == "demo" or str(path).startswith("demo:"):
            from ..demo import make_demo_dataset

            ds = make_demo_dataset(n=int(str(path).split(":", 1)[1]) if ":" in str(path) else 1000, seed=seed)
        else:
            ds = load_rows(path)
        try:
            fmt = detect_format(ds.column_names)
        except DatasetFormatError as err:
            raise HFSelectError(f"{path}: {err}") from err
        has_source = SOURCE_COLUMN in ds.column_names
        labelled = CORRUPTION_COLUMN in ds.column_names
        any_labelled = any_labelled or labelled
        for row in ds:
            try:
                messages = row_to_messages(row, fmt)
            except RowError as err:
                dropped[err.status] = dropped.get(err.status, 0) + 1
                continue
            source = str(row[SOURCE_COLUMN]) if has_source and row[SOURCE_COLUMN] is not None else stem
            records.append((source, messages, row.get(CORRUPTION_COLUMN) if labelled else None))
    overlap = {name: 0 for name in exclude or {}}
    if exclude:
        kept = []
        for record in records:
            key = prompt_key(record[1])
            hits = [name for name, keys in exclude.items() if key in keys]
            for name in hits:
                overlap[name] += 1
            if not hits:
                kept.append(record)
        records = kept
    if not records:
        raise HFSelectError(f"the pool {list(files)} has no usable rows (dropped: {dropped}).")
    sources = [s for s, _, _ in records]
    if limit is not None:
        records = [records[i] for i in stratified_indices(sources, limit, seed)]
    alpaca = all(len(m) == 2 and m[0]["role"] == "user" and "instruction" in m[0] and m[1]["role"] == "assistant"
                 for _, m, _ in records)
    if alpaca:
        rows = [{"instruction": m[0]["instruction"], "input": m[0].get("input") or "", "output": m[1]["content"],
                 SOURCE_COLUMN: s} for s, m, _ in records]
    else:
        rows = [{"messages": [{"role": x["role"], "content": x["content"]} for x in m], SOURCE_COLUMN: s}
                for s, m, _ in records]
    if any_labelled:  # the demo pool: keep which rows were corrupted on purpose
        for row, (_, _, label) in zip(rows, records, strict=True):
            row[CORRUPTION_COLUMN] = label or "none"
    pool = Dataset.from_list(rows)
    return pool, {"format": "alpaca" if alpaca else "messages", "composition": count_by(pool[SOURCE_COLUMN]),
                  "dropped": dropped, "eval_overlap": overlap}


def response_texts(dataset: Any) -> list[str]:
    """The response of every row (``output``, or the last assistant message)."""
    if "output" in dataset.column_names:
        return [str(v or "") for v in dataset["output"]]
    out = []
    for messages in dataset["messages"]:
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        out.append(answers[-1] if answers else "")
    return out


def file_fingerprint(path: str) -> Any:
    """A file's path and content hash (a rewritten but identical file keeps its pool); else the path itself."""
    import hashlib

    p = Path(path)
    if p.is_file():
        digest = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return [str(p.resolve()), digest.hexdigest()]
    return str(p)



def eval_specs(files: Sequence[str]) -> list[dict[str, Any]]:
    """``{"name", "path"}`` per eval file (names as :func:`source_names`).

    Example:
        >>> eval_specs(["data/heldout.json", "other/heldout.json"])
        [{'name': 'heldout', 'path': 'data/heldout.json'}, {'name': 'heldout_2', 'path': 'other/heldout.json'}]
    """
    return [{"name": n, "path": p} for n, p in zip(source_names(files), files, strict=True)]


def eval_rows(path: str, *, questions: str | None, limit: int | None) -> int:
    """Rows of one eval set as the eval stages read it (fails on an unreadable file)."""
    from ..training import load_eval_dataset

    return len(load_eval_dataset(path, questions=questions, limit=limit))


def response_lengths(pool: Any, model_name_or_path: str) -> dict[str, list[float]]:
    """Per row: the response's characters (``chars``) and its tokens by the model's tokenizer (``tokens``; empty
    when the tokenizer cannot be loaded)."""
    texts = response_texts(pool)
    chars = [float(len(t)) for t in texts]
    try:
        from ..models import load_tokenizer, resolve_model_path

        tok = load_tokenizer(resolve_model_path(model_name_or_path))
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        tokens = [float(len(x)) for x in ids]
    except Exception as err:  # token counts are a nicety; characters are always there
        logger.warning("compare: no token counts (%s)", err)
        tokens = []
    return {"chars": chars, "tokens": tokens}


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean rounded to 0.1, None for no values.

    Example:
        >>> mean_or_none([1, 2, 4]), mean_or_none([])
        (2.3, None)
    """
    return round(sum(values) / len(values), 1) if values else None


def count_by(values: Iterable[Any]) -> dict[Any, int]:
    """How often each value occurs, in order of first occurrence."""
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def corrupted_counts(pool: Any, ids: Sequence[int]) -> dict[str, int]:
    """Rows per corruption kind among ``ids`` (and ``"rows"``), when the pool is labelled (the demo pool)."""
    if CORRUPTION_COLUMN not in pool.column_names:
        return {}
    labels = pool[CORRUPTION_COLUMN]
    out: dict[str, int] = {}
    for i in ids:
        kind = labels[i] or "none"
        if kind != "none":
            out[kind] = out.get(kind, 0) + 1
    out["rows"] = len(ids)
    return out


def corrupted_share(corrupted: Mapping[str, int]) -> float | None:
    """Share of corrupted rows in a :attr:`MethodResult.corrupted` count (None when the pool is unlabelled).

    Example:
        >>> corrupted_share({"swapped": 2, "wrong": 1, "rows": 30})
        0.1
    """
    rows = corrupted.get("rows")
    if not rows:
        return None
    return sum(v for k, v in corrupted.items() if k != "rows") / rows
