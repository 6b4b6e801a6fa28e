"""Scoring a streamed pool (``datasets.IterableDataset``): shards of a fixed row count, written as they finish,
resumable by shard.

A streamed pool has no ``len()`` and no slicing, so :meth:`~hf_select.scoring.base.BaseScorer.score` hands it to
:func:`score_stream`, which reads it ``shard_size`` rows at a time. Each shard is written, atomically, as a parquet
file holding its rows *and* their scores, with a digest of its input rows in the file's metadata. A stopped run,
started again, reads the stream from the start, keeps every finished shard whose digest matches the rows now read
there (a shard whose rows changed is scored again) and scores from the first unfinished one. The result is a
dataset on disk (memory-mapped, read from the shards), with the same columns and scores as the in-memory pool
would get.

Example:
    >>> from datasets import Dataset
    >>> from hf_select.scoring.base import is_streamed
    >>> pool = Dataset.from_list([{"instruction": "Say hi", "output": "hi"}]).to_iterable_dataset()
    >>> is_streamed(pool)
    True
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import HFSelectError
from .runs import (
    RUN_FILE,
    ScoreRun,
    _distributed_state,
    clear_run_folder,
    stable_hash,
    write_table_atomic,
)

logger = logging.getLogger(__name__)

DIGEST_KEY = b"hf_select_rows"  # parquet metadata of a streamed shard: the digest of its input rows


def shard_digest(batch: dict[str, list[Any]]) -> str:
    """A digest of a shard's input rows (columns of equal length), stored with the shard and checked on resume.

    Example:
        >>> shard_digest({"a": [1, 2]}) == shard_digest({"a": [1, 2]}) != shard_digest({"a": [2, 1]})
        True
    """
    return stable_hash(sorted(batch), [batch[k] for k in sorted(batch)])


def _stored_digest(path: Path) -> str | None:
    """The input-row digest a finished streamed shard holds (None when unreadable or not a streamed shard)."""
    with contextlib.suppress(OSError, pa.ArrowInvalid):
        meta = pq.read_schema(path).metadata or {}
        value = meta.get(DIGEST_KEY)
        return value.decode() if value else None
    return None


def _input_features(dataset: Any, first: dict[str, list[Any]], drop: tuple[str, ...]) -> Any:
    """The input columns' ``datasets.Features``: the stream's own, else inferred from its first shard (a stream of
    json files declares none); the columns the scorer writes are left out."""
    from datasets import Features

    features = dataset.features
    if features is None:
        features = Features.from_arrow_schema(pa.Table.from_pydict(first).schema)
    return Features({k: v for k, v in features.items() if k not in drop})


def score_stream(scorer: Any, dataset: Any, *, shard_size: int, run_dir: str | os.PathLike | None, cache: bool,
                 progress: bool, cpu: bool) -> Any:
    """Score a streamed pool with ``scorer`` (see the module docstring); returns a ``datasets.Dataset`` on disk.

    Raises:
        HFSelectError: the stream holds no rows, or a later shard's columns cannot take the first shard's types.
    """
    from datasets import Dataset, Features

    batches = iter(dataset.iter(batch_size=shard_size))
    first = next(batches, None)
    if first is None or not first or not len(next(iter(first.values()))):
        raise HFSelectError(f"{scorer.name}: the streamed pool has no rows; check its name, config "
                            "(dataset_config), split and data files, or read it without streaming to see why.")
    fp = scorer.fingerprint(dataset)
    folder = scorer.run_folder(fp, run_dir)
    rank, world, state = _distributed_state(cpu)
    info = {"scorer": scorer.name, "fingerprint": fp, "rows": "stream", "shard_size": shard_size,
            "config": scorer_config(scorer)}
    reuse = scorer._check_run_folder(folder, info, cache)
    if rank == 0:
        clear_run_folder(folder, only_half_written=reuse)
    if state is not None:
        state.wait_for_everyone()
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / RUN_FILE
    if rank == 0 and not meta.exists():
        import json

        meta.write_text(json.dumps(info, indent=2))

    inputs = _input_features(dataset, first, tuple(scorer.output_columns))
    features = Features({**inputs, **scorer.features})
    schema = features.arrow_schema
    bar = scorer._progress_bar(_known_rows(dataset), 0) if progress and rank == 0 else None
    paths: list[Path] = []
    rows = reused_rows = reused_shards = 0
    try:
        for i, batch in enumerate(_chain(first, batches)):
            path = folder / f"shard-{i:06d}.parquet"
            paths.append(path)
            n = len(next(iter(batch.values())))
            rows += n
            digest = shard_digest(batch)
            if reuse and path.exists() and _stored_digest(path) == digest:
                reused_shards, reused_rows = reused_shards + 1, reused_rows + n
                if bar is not None:
                    bar.update(n)
                continue
            if i % world != rank:
                continue
            out, shown = scorer._score_shard(batch, n, bar, world)
            table = _shard_table(scorer, batch, out, inputs, schema, i)
            if table.num_rows != n:
                raise RuntimeError(f"{scorer.name}: shard {i} produced {table.num_rows} rows for {n} inputs")
            write_table_atomic(table.replace_schema_metadata({**(schema.metadata or {}), DIGEST_KEY: digest}), path)
            if bar is not None:
                bar.update(n * world - shown)
    finally:
        if bar is not None:
            bar.close()
    if state is not None:
        state.wait_for_everyone()
    if rank == 0:
        for stale in folder.glob("shard-*.parquet"):  # shards past the end of a stream that got shorter
            if stale not in paths:
                stale.unlink(missing_ok=True)
    scorer.last_run = ScoreRun(folder=folder, shards=len(paths), rows=rows, reused_shards=reused_shards,
                               reused_rows=reused_rows)
    scorer._announce_reuse(rank, progress)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise RuntimeError(f"{scorer.name}: {len(missing)} shards are missing after scoring, e.g. {missing[0]}")
    out_ds = Dataset.from_parquet([str(p) for p in paths], features=features)
    out_ds._fingerprint = stable_hash(fp, rows, "scored")
    return out_ds


def scorer_config(scorer: Any) -> dict[str, Any]:
    """The scorer's config as a dict (recorded in the run folder's ``run.json``)."""
    from .config import config_to_dict

    return config_to_dict(scorer.config)


def _chain(first: dict[str, list[Any]], rest: Any) -> Any:
    """The first shard (read to check the stream is not empty), then the rest of the stream."""
    yield first
    yield from rest


def _known_rows(dataset: Any) -> int | None:
    """The stream's row count when its metadata says it (a Hub dataset's split info), for the bar's ETA."""
    splits = getattr(getattr(dataset, "info", None), "splits", None) or {}
    split = str(getattr(dataset, "split", "") or "")
    info = splits.get(split) if split else None
    return getattr(info, "num_examples", None) or None


def _shard_table(scorer: Any, batch: dict[str, list[Any]], out: dict[str, list[Any]], inputs: Any,
                 schema: pa.Schema, index: int) -> pa.Table:
    """The shard's rows (the input columns, typed as the first shard's) beside their scores."""
    columns = {k: batch.get(k, [None] * len(next(iter(batch.values())))) for k in inputs}
    try:
        return pa.Table.from_pydict({**columns, **out}, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise HFSelectError(
            f"{scorer.name}: shard {index} of the streamed pool has values of other types than its first shard "
            f"({' '.join(str(err).split())[:200]}); give the stream its features (load_dataset(..., features=...)) "
            "or cast it first (IterableDataset.cast)."
        ) from err
