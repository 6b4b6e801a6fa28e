"""The pattern every scorer follows, and the sharded, resumable, multi-process whole-dataset run.

A scorer is built from a config dataclass and is

- a batched ``Dataset.map`` transform: ``dataset.map(scorer, batched=True)`` adds its columns;
- a whole-dataset runner: ``scorer.score(dataset)`` cuts the dataset into shards of ``shard_size`` rows,
  scores the shards (split across processes under ``accelerate launch``), writes each finished shard
  atomically under a run folder named by an explicit fingerprint (dataset fingerprint + config + model id),
  and returns the dataset with the new columns in the original row order. A second identical call, or a
  restarted run, reuses the finished shards.

Subclasses set ``name`` and ``config_class``, declare the Arrow types of their columns as a ``datasets.Features``
(``features``; ``output_columns`` are its keys) and implement ``_score_batch``.

Column names follow one rule. Each pass a scorer makes over a row has one status column, ``<column>_status``,
named after that pass's score column; the pass's other columns share it. So ``ifd_status`` (for ``ifd``,
``ifd_ppl``, ``loss_conditioned``, ``loss_direct``, ``response_tokens``), ``ifd_reverse_status``,
``quality_status``, ``necessity_status`` (``generated_response``, ``generated_tokens``, ``necessity``) and
``embedding_status``; the InstructMining indicators, one pass of several ``ind_*`` columns, share ``ind_status``
after their prefix. A status is ``ok`` or the reason the row has no score (then NaN, never 0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from ..errors import HFSelectError
from ..models import cache_home
from .config import config_to_dict
from .runs import (
    _OWN_FILE,
    RUN_FILE,
    ScoreRun,
    _distributed_state,
    clear_run_folder,
    stable_hash,
    write_table_atomic,
)

logger = logging.getLogger(__name__)

SCORER_FORMAT_VERSION = "1"


def dataset_fingerprint(dataset: Any) -> str:
    """The dataset's own fingerprint, or a content hash for objects that have none (for a streamed
    ``IterableDataset``: its features and first 64 rows; every reused shard of a streamed pool is checked against
    its own rows too, :mod:`~hf_select.scoring.streaming`)."""
    fp = getattr(dataset, "_fingerprint", None)
    if fp:
        return str(fp)
    if is_streamed(dataset):
        return stable_hash("stream", str(dataset.features), list(dataset.take(64)))
    return stable_hash(len(dataset), dataset[: min(len(dataset), 64)])


def is_streamed(dataset: Any) -> bool:
    """Whether ``dataset`` is a ``datasets.IterableDataset`` (a streamed pool: no ``len()``, no slicing).

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_list([{"a": 1}])
        >>> is_streamed(ds), is_streamed(ds.to_iterable_dataset())
        (False, True)
    """
    from datasets import IterableDataset

    return isinstance(dataset, IterableDataset)


def weights_identity(model: Any, tokenizer: Any = None) -> str:
    """A digest of an in-memory model's weights: name, dtype, shape and bytes of every tensor of its state dict
    (and the tokenizer's name, size and chat template). It changes with any change of any weight, e.g. one
    fine-tuning step, and is equal for two models with equal weights.

    Example:
        >>> import torch
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> b.load_state_dict(a.state_dict())
        <All keys matched successfully>
        >>> weights_identity(a) == weights_identity(b)
        True
        >>> with torch.no_grad():
        ...     b.bias[0] += 1e-6
        >>> weights_identity(a) == weights_identity(b)
        False
    """
    import torch

    digest = hashlib.blake2b(digest_size=16)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not isinstance(tensor, torch.Tensor):
                continue
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            if tensor.device.type == "meta":
                continue
            flat = tensor.detach().reshape(-1).contiguous().cpu()
            digest.update(flat.view(torch.uint8).numpy())
    if tokenizer is not None:
        tok = (getattr(tokenizer, "name_or_path", ""), len(tokenizer), str(getattr(tokenizer, "chat_template", "")))
        digest.update(json.dumps(tok).encode())
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    return f"{name}|in-memory|{digest.hexdigest()}"


class BaseScorer:
    """Common machinery of the scorers. See the module docstring."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type] = object

    @property
    def features(self) -> Any:
        """The ``datasets.Features`` of the columns this scorer adds (declared by each scorer)."""
        raise NotImplementedError

    @property
    def output_columns(self) -> tuple[str, ...]:
        """The names of the columns this scorer adds, in order (the keys of :attr:`features`)."""
        return tuple(self.features)

    def __init__(self, config: Any = None, **overrides: Any):
        rename = getattr(self.config_class, "rename_kwargs", None)
        if overrides and rename is not None:
            overrides = rename(overrides)  # a deprecated field name, with its warning
        if config is None:
            config = self.config_class(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self._loaded: dict[str, Any] = {}
        self.last_run: ScoreRun | None = None  # set by every .score() call

    # -- pickling / hashing: the model never travels; datasets hash the transform from its config and model ids ----
    def __getstate__(self) -> dict[str, Any]:
        # ``Dataset.map`` names its cache after this state: the model ids make a model given with ``set_model``
        # (another model, or the same one after training) a different transform from the configured model.
        return {"config": self.config, "model_ids": self.model_ids()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config = state["config"]
        self._loaded = {}
        self.last_run = None

    def given_model_identity(self) -> str | None:
        """For a model given with ``set_model`` (flag ``given`` in ``_loaded``): a digest of its weights now
        (:func:`weights_identity`), so that training it in place changes it too; None for the configured model."""
        if not self._loaded.get("given") or self._loaded.get("model") is None:
            return None
        return weights_identity(self._loaded["model"], self._loaded.get("tokenizer"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # -- to implement ----------------------------------------------------------------------------------------
    def _score_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Score a batch of rows (columns of equal length); return the new columns. Never raise for a bad row."""
        raise NotImplementedError

    def passes_per_row(self) -> int:
        """Forward passes (sequences through a model) this scorer makes per row: the dry run's count and the unit of
        the per-batch progress bar. One unless a scorer says otherwise (IFD: 2, 4 with ``reverse``)."""
        return 1

    def model_ids(self) -> list[str]:
        """Model ids (with revision) whose weights determine the scores: part of the fingerprint. A model given
        with ``set_model`` counts by the digest of its weights (:meth:`given_model_identity`)."""
        given = self.given_model_identity()
        return [given] if given is not None else []

    # -- public --------------------------------------------------------------------------------------------
    def __call__(self, batch: dict[str, list[Any]], *args: Any, **kwargs: Any) -> dict[str, list[Any]]:
        """The batched ``Dataset.map`` transform: returns the score columns for the batch."""
        return self._score_batch(batch)

    def fingerprint(self, dataset: Any) -> str:
        """Dataset fingerprint + scorer name + config + model ids: names the run folder and the cached result."""
        return stable_hash(
            SCORER_FORMAT_VERSION,
            self.name,
            dataset_fingerprint(dataset),
            config_to_dict(self.config),
            self.model_ids(),
        )

    def score(
        self,
        dataset: Any,
        *,
        shard_size: int = 2048,
        run_dir: str | os.PathLike | None = None,
        cache: bool = True,
        progress: bool = True,
        cpu: bool = False,
    ) -> Any:
        """Score a whole ``datasets.Dataset`` and return it with the score columns added.

        A streamed pool (``datasets.IterableDataset``, e.g. ``load_dataset(..., streaming=True)``) is read in shards
        of ``shard_size`` rows, each written (its rows and their scores) as soon as it is scored; a stopped run
        continues after its last finished shard, and the result (a dataset on disk) equals the in-memory pool's
        (:func:`~hf_select.scoring.streaming.score_stream`).

        Args:
            shard_size: rows per shard; each finished shard is written at once (the unit of resumption).
            run_dir: where the shards go; default ``~/.cache/hf_select/scores/<name>-<fingerprint>``.
            cache: reuse finished shards of an identical earlier call (and keep them for the next one); False
                removes them and scores every row again (the new shards are kept, so a stopped run still resumes).
            progress: show a progress bar (main process only), and one line on stderr when earlier shards are
                reused (:meth:`ScoreRun.message`; logged at INFO level instead when False). ``self.last_run`` says
                what was reused either way.
            cpu: under a distributed launch on a machine without GPUs, use gloo processes on the CPU.

        Example:
            >>> from datasets import Dataset
            >>> from hf_select import IFDScorer, IFDConfig
            >>> ds = Dataset.from_list([{"instruction": "Say hi", "input": "", "output": "hi"}])
            >>> IFDScorer(IFDConfig()).score(ds).column_names  # doctest: +SKIP
            ['instruction', 'input', 'output', 'ifd', 'ifd_ppl', ...]
        """
        from datasets import Dataset, concatenate_datasets

        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        if is_streamed(dataset):
            from .streaming import score_stream

            return score_stream(self, dataset, shard_size=shard_size, run_dir=run_dir, cache=cache,
                                progress=progress, cpu=cpu)
        n = len(dataset)
        if n == 0:
            logger.warning("%s: the dataset is empty; nothing to score.", self.name)
            features = self._empty_features()
            for column in self.output_columns:
                if column not in dataset.column_names:
                    dataset = dataset.add_column(column, [], feature=features[column])
            return dataset
        fp = self.fingerprint(dataset)
        folder = self.run_folder(fp, run_dir)
        rank, world, state = _distributed_state(cpu)
        num_shards = math.ceil(n / shard_size)
        info = {"scorer": self.name, "fingerprint": fp, "rows": n, "shard_size": shard_size,
                "config": config_to_dict(self.config)}
        reuse = self._check_run_folder(folder, info, cache)  # on every process: all refuse together
        if rank == 0:
            clear_run_folder(folder, only_half_written=reuse)
        shard_path = [folder / f"shard-{i:06d}.parquet" for i in range(num_shards)]
        # Counted before any process starts scoring: the finished shards of an earlier run (none unless reused).
        done = [i for i in range(num_shards) if reuse and shard_path[i].exists()]
        if state is not None:
            state.wait_for_everyone()
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / RUN_FILE
        if rank == 0 and not meta.exists():
            meta.write_text(json.dumps(info, indent=2))
        mine = [i for i in range(num_shards) if i % world == rank and not shard_path[i].exists()]
        done_rows = sum(min(shard_size, n - i * shard_size) for i in done)
        self.last_run = ScoreRun(folder=folder, shards=num_shards, rows=n, reused_shards=len(done),
                                 reused_rows=done_rows)
        self._announce_reuse(rank, progress)
        bar = self._progress_bar(n, done_rows) if progress and rank == 0 and mine else None
        try:
            for i in mine:
                lo, hi = i * shard_size, min(n, (i + 1) * shard_size)
                out, shown = self._score_shard(dataset[lo:hi], hi - lo, bar, world)
                table = pa.table(out, schema=self._schema())
                if table.num_rows != hi - lo:
                    raise RuntimeError(f"{self.name}: shard {i} produced {table.num_rows} rows for {hi - lo} inputs")
                write_table_atomic(table, shard_path[i])
                if bar is not None:
                    bar.update((hi - lo) * world - shown)
        finally:
            if bar is not None:
                bar.close()  # ends the bar's line even on an error, so an error message starts on a line of its own
        if state is not None:
            state.wait_for_everyone()
        missing = [str(p) for p in shard_path if not p.exists()]
        if missing:
            raise RuntimeError(f"{self.name}: {len(missing)} shards are missing after scoring, e.g. {missing[0]}")
        scores = Dataset.from_parquet([str(p) for p in shard_path], features=self._empty_features())
        keep = [c for c in dataset.column_names if c not in self.output_columns]
        base = dataset.select_columns(keep) if len(keep) != len(dataset.column_names) else dataset
        out = concatenate_datasets([base, scores], axis=1)
        # Name the result after the input and the scorer, not after the shard files' paths and times: the same
        # inputs and config then give the same fingerprint on every run and under any number of processes.
        out._fingerprint = stable_hash(fp, "scored")
        return out

    def run_folder(self, fingerprint: str, run_dir: str | os.PathLike | None = None) -> Path:
        """``run_dir``, or the scores cache's folder of this run: ``$HF_SELECT_SCORES_DIR/<name>-<fingerprint>``."""
        if run_dir is not None:
            return Path(run_dir)
        scores_home = Path(os.environ.get("HF_SELECT_SCORES_DIR", cache_home() / "scores"))
        return scores_home / f"{self.name}-{fingerprint}"

    def _announce_reuse(self, rank: int, progress: bool) -> None:
        """Say once (main process) which shards ``self.last_run`` took from an earlier run."""
        note = self.last_run.message(self.name) if self.last_run is not None else None
        if note and rank == 0:
            if progress:
                print(note, file=sys.stderr, flush=True)
            else:
                logger.info(note)

    def _progress_bar(self, total: int | None, initial: int) -> Any:
        """A bar in rows, with rows/s and (when the total is known) an ETA; it moves after every model batch."""
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=f"hf-select {self.name}", unit="row", dynamic_ncols=True)

    def _score_shard(self, batch: dict[str, list[Any]], rows: int, bar: Any, world: int = 1,
                     ) -> tuple[dict[str, list[Any]], int]:
        """Score one shard, moving ``bar`` after every model batch by the share of the shard's expected passes
        (:meth:`passes_per_row`) done; returns the columns and the rows already shown (the caller adds the rest
        once the shard is written)."""
        if bar is None:
            return self._score_batch(batch), 0
        from .batching import on_each_batch

        expected = max(1, rows * self.passes_per_row())
        seen, shown = 0, 0

        def advance(items: int) -> None:
            nonlocal seen, shown
            seen += items
            target = min(rows - 1, rows * seen // expected) * world  # the last row shows once the shard is written
            if target > shown:
                bar.update(target - shown)
                shown = target

        with on_each_batch(advance):
            out = self._score_batch(batch)
        return out, shown

    def _check_run_folder(self, folder: Path, info: dict[str, Any], cache: bool) -> bool:
        """Whether the finished shards in ``folder`` may be reused; refuses a folder that holds anything else.

        Shards are reused only with ``cache`` and when the folder's ``run.json`` records the same fingerprint
        (dataset, scorer, config, model weights), rows and shard size; otherwise they are scored again.
        """
        if not folder.exists():
            return False
        if not folder.is_dir():
            raise HFSelectError(f"{self.name}: run_dir {folder} is a file, not a folder; pass a new or empty folder.")
        others = sorted(p.name for p in folder.iterdir() if not _OWN_FILE.match(p.name))
        if others:
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            raise HFSelectError(
                f"{self.name}: run_dir {folder} holds files that are not this scorer's shards ({shown}); nothing was "
                "removed. Pass a new or empty folder as run_dir (it holds only shard-*.parquet and run.json)."
            )
        if not cache:
            return False
        stored = None
        with contextlib.suppress(OSError, ValueError):
            stored = json.loads((folder / RUN_FILE).read_text())
        keys = ("scorer", "fingerprint", "rows", "shard_size")
        if not isinstance(stored, dict) or any(stored.get(k) != info[k] for k in keys):
            if any(folder.glob("shard-*.parquet")):
                logger.warning("%s: %s holds the shards of another run (other rows, config, model or shard size); "
                               "scoring again.", self.name, folder)
            return False
        return True

    # -- schema ------------------------------------------------------------------------------------------------
    def _schema(self) -> pa.Schema:
        """Arrow schema of the output columns, from the scorer's declared :attr:`features`."""
        return self.features.arrow_schema

    def _empty_features(self) -> Any:
        return self.features
