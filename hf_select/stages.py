"""The stage runner of the recipes and of ``hf-select compare``: stage folders written atomically, reused on restart,
and the standard stages every pipeline shares (source rows, a scorer's columns, held-out loss, the report).

A stage is one folder ``<output_dir>/<stage>/`` holding its outputs and ``stage.json`` (its parameters, a key
derived from them and from the stages before it, counts, timing). It is computed in ``.<stage>.tmp`` and renamed
into place when finished, so a killed run never leaves half a stage. When the pipeline is started again, a stage
whose folder exists with the same key is reused, not recomputed; a changed parameter recomputes that stage and
the ones after it. Every computation and reuse is appended to ``<output_dir>/stages.jsonl``. Under ``torchrun`` /
``accelerate launch`` every process runs every stage (scoring and training are collective) and the main process
writes the folders.

Example:
    >>> from hf_select.stages import StageRunner
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> info = StageRunner(folder).run("hello", lambda tmp: (tmp / "x.txt").write_text("hi") and {"chars": 2})
    >>> info.meta, info.reused
    ({'chars': 2}, False)
    >>> StageRunner(folder).run("hello", lambda tmp: {"chars": 2}).reused  # started again: reused
    True
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .columns import ROW_ID
from .errors import HFSelectError, scrub
from .scoring.base import is_streamed, stable_hash
from .training import TrainConfig

if TYPE_CHECKING:
    from .recipes.arguments import RecipeArguments

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
STAGES_LOG = "stages.jsonl"
PARTIAL_FILE = "partial.json"  # in the temporary folder of a resumable stage: the key it was started with


# -- distributed helpers ----------------------------------------------------------------------------------------------
class _Dist:
    """Process index, count and barrier; nothing is started in a single process.

    The rank is read once: the Trainer resets accelerate's shared state when it builds its own, so the state object
    cannot be asked again later; the barrier goes to ``torch.distributed`` directly.
    """

    def __init__(self, cpu: bool = False):
        self.state = None
        self.rank, self.world = 0, 1
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            self.state = PartialState(cpu=cpu) if cpu else PartialState()
            self.rank, self.world = self.state.process_index, self.state.num_processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()


# -- stages -----------------------------------------------------------------------------------------------------------
@dataclass
class StageInfo:
    """A finished stage: its folder, parameters, key, what ``compute`` returned, and whether it was reused."""

    name: str
    path: Path
    params: dict[str, Any]
    key: str
    meta: dict[str, Any]
    reused: bool
    seconds: float
    stamp: int = 0  # when the stage's output was made (ns): a recomputed stage invalidates every later one


class StageRunner:
    """Runs the stages of one recipe run under ``output_dir`` (see the module docstring).

    ``compute(folder)`` is called on every process (scoring and training are collective); it writes its outputs
    into ``folder`` on the main process only and returns a small JSON-friendly dict (counts, losses).
    """

    def __init__(self, output_dir: str | os.PathLike, *, resume: bool = True, cpu: bool = False):
        self.output_dir = Path(output_dir)
        self.resume = resume
        self.dist = _Dist(cpu)
        self.infos: list[StageInfo] = []
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def path(self, name: str) -> Path:
        return self.output_dir / name

    def run(self, name: str, compute: Callable[[Path], Mapping[str, Any] | None], *,
            params: Mapping[str, Any] | None = None, resumable: bool = False) -> StageInfo:
        """Reuse the finished stage ``name`` when its key matches, else compute it into a temporary folder and
        rename it into place.

        With ``resumable`` the temporary folder of a run that was killed (or failed) part way is kept, and handed to
        ``compute`` again when the key is the same, so that ``compute`` can continue from what it left there (e.g.
        Trainer checkpoints); with another key it is emptied first."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"stage name must be a plain folder name, got {name!r}")
        params = scrub(json.loads(json.dumps(dict(params or {}), default=str)))
        key = stable_hash(name, params, [(i.key, i.stamp) for i in self.infos])
        final = self.path(name)
        marker = final / STAGE_FILE
        if self.resume and marker.is_file():
            stored = json.loads(marker.read_text())
            if stored.get("key") == key:
                info = StageInfo(name, final, params, key, stored.get("meta", {}), True, 0.0,
                                 int(stored.get("stamp", 0)))
                self._record(info, "reused")
                logger.info("stage %s: finished earlier, reused (%s)", name, final)
                return info
            logger.warning("stage %s: its parameters or an earlier stage changed; computing it again", name)
        tmp = self.output_dir / f".{name}.tmp"
        partial = tmp / PARTIAL_FILE
        if self.is_main:
            kept = False
            if resumable and self.resume and partial.is_file():
                try:
                    kept = json.loads(partial.read_text()).get("key") == key
                except (OSError, ValueError):
                    kept = False
            if kept:
                logger.warning("stage %s: continuing the part of it an interrupted run left in %s", name, tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            if resumable:
                partial.write_text(json.dumps({"name": name, "key": key}))
        self.dist.barrier()
        logger.info("stage %s: computing ...", name)
        start = time.time()
        try:
            meta = dict(compute(tmp) or {})
        except BaseException:
            if self.is_main and not resumable:
                shutil.rmtree(tmp, ignore_errors=True)  # a failed stage leaves nothing behind
            raise  # a resumable stage keeps its partial folder (never under the final name) for the next run
        seconds = round(time.time() - start, 3)
        stamp = self._shared_stamp()
        self.dist.barrier()
        if self.is_main:
            partial.unlink(missing_ok=True)
            (tmp / STAGE_FILE).write_text(json.dumps(
                {"name": name, "key": key, "params": params, "meta": meta, "seconds": seconds, "stamp": stamp,
                 "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2, default=str))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        self.dist.barrier()
        info = StageInfo(name, final, params, key, json.loads(json.dumps(meta, default=str)), False, seconds, stamp)
        self._record(info, "computed")
        return info

    def _shared_stamp(self) -> int:
        """The main process's clock, the same on every process (the keys of later stages depend on it)."""
        stamp = time.time_ns()
        if self.dist.world > 1:
            import torch.distributed as dist

            box = [stamp]
            dist.broadcast_object_list(box, src=0)
            stamp = int(box[0])
        return stamp

    def _record(self, info: StageInfo, event: str) -> None:
        self.infos.append(info)
        if self.is_main:
            with open(self.output_dir / STAGES_LOG, "a") as fh:
                fh.write(json.dumps({"stage": info.name, "event": event, "seconds": info.seconds, "pid": os.getpid(),
                                     "time": time.time()}) + "\n")

    # -- typed helpers ---------------------------------------------------------------------------------------------
    def dataset_stage(self, name: str, make: Callable[[], Any], *, params: Mapping[str, Any] | None = None,
                      meta: Callable[[Any], Mapping[str, Any]] | None = None) -> tuple[Any, StageInfo]:
        """A stage whose output is one dataset (``<stage>/data``, ``save_to_disk``); returns it loaded from disk."""

        def compute(folder: Path) -> dict[str, Any]:
            ds = make()
            if self.is_main:
                ds.save_to_disk(str(folder / "data"))
            return {"rows": len(ds), **(dict(meta(ds)) if meta else {})}

        info = self.run(name, compute, params=params)
        return load_stage_dataset(info.path), info

    def selection_stage(self, name: str, make: Callable[[], Any], *, params: Mapping[str, Any] | None = None,
                        pool: Any = None) -> tuple[Any, StageInfo]:
        """A stage whose output is a ``SelectionResult`` (``SelectionResult.save``); returns it loaded.

        With the ``pool`` the steps (``params["steps"]``) read, the stage logs which of its columns they load into
        memory and how many bytes (:func:`pool_memory`), and records them in its meta (``in_memory_bytes``)."""
        from .selection.select import SelectionResult

        def compute(folder: Path) -> dict[str, Any]:
            loaded = pool_memory(pool, (params or {}).get("steps") or []) if pool is not None else {}
            if loaded:
                logger.info("stage %s: the selection loads the whole pool's %s into memory (%s rows)", name,
                            ", ".join(f"{c} ({_size(b)})" for c, b in loaded.items()), len(pool))
            result = make()
            dropped: dict[str, int] = {}
            for step in result.provenance:
                for reason, count in (step.get("dropped") or {}).items():
                    dropped[reason] = dropped.get(reason, 0) + int(count)
            if len(result.dataset) == 0:
                raise HFSelectError(f"stage {name}: the selection kept no rows (dropped: {dropped}); loosen its "
                                    "parameters or check the scores' status columns.")
            if self.is_main:
                result.save(str(folder / "selection"))
            return {"rows_in": result.provenance[0]["rows_in"] if result.provenance else None,
                    "rows_out": len(result.dataset), **{f"dropped_{k}": v for k, v in dropped.items()},
                    **({"in_memory_bytes": loaded} if loaded else {})}

        info = self.run(name, compute, params=params)
        return SelectionResult.load(str(info.path / "selection")), info

    def sft_stage(self, name: str, train_rows: Any, config: TrainConfig, *, model_name_or_path: str,
                  params: Mapping[str, Any] | None = None, **train_kwargs: Any) -> tuple[Path, StageInfo]:
        """A stage that fine-tunes ``model_name_or_path`` on ``train_rows``; returns the model folder.

        Training writes a Trainer checkpoint every ``config.save_steps`` steps into the stage's temporary folder; a
        recipe killed during training continues from the last checkpoint when started again (same parameters), and
        the stage's ``resumed_from_step`` says from which step."""
        from .training import train_sft

        def compute(folder: Path) -> dict[str, Any]:
            result = train_sft(train_rows, config, folder, model_name_or_path=model_name_or_path, resume=True,
                               **train_kwargs)
            return {"train_rows": result.train_rows, "train_loss": result.train_loss,
                    "global_step": result.global_step, "resumed_from_step": result.resumed_from_step}

        train = {k: v for k, v in config.to_dict().items() if k != "save_steps"}  # checkpoints change no result
        stage_params = {"model": model_name_or_path, "train": train, "rows": len(train_rows),
                        "row_ids": _ids_digest(train_rows), **dict(params or {})}
        info = self.run(name, compute, params=stage_params, resumable=True)
        return info.path, info


STEP_COLUMN_KEYS = ("column", "score_column", "columns")


def pool_memory(pool: Any, steps: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The columns of ``pool`` that selection ``steps`` read whole (each step's ``column``, ``score_column`` and
    ``columns``), with their size in bytes as Arrow holds them (what a step such as ``top`` or ``kcenter`` loads
    into memory, e.g. every row's embedding); columns the pool lacks are left out.

    Example:
        >>> from datasets import Dataset
        >>> pool = Dataset.from_dict({"ifd": [0.5, 0.7], "text": ["a", "b"]})
        >>> pool_memory(pool, [{"step": "top", "column": "ifd", "count": 1}])
        {'ifd': 16}
    """
    names: list[str] = []
    for step in steps:
        for key in STEP_COLUMN_KEYS:
            value = step.get(key) if isinstance(step, Mapping) else None
            for col in ([value] if isinstance(value, str) else list(value or [])):
                if isinstance(col, str) and col in pool.column_names and col not in names:
                    names.append(col)
    return {c: int(pool.data.column(c).nbytes) for c in names}


def _size(n: int) -> str:
    """Bytes as a short text: ``_size(2048)`` -> ``'2.0 kB'``."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _ids_digest(dataset: Any) -> str:
    if ROW_ID in dataset.column_names:
        return stable_hash(list(dataset[ROW_ID]))
    return str(getattr(dataset, "_fingerprint", len(dataset)))


def load_stage_dataset(folder: str | os.PathLike) -> Any:
    """Load the dataset a :meth:`StageRunner.dataset_stage` saved."""
    import datasets

    return datasets.load_from_disk(str(Path(folder) / "data"))


# -- the standard stages ----------------------------------------------------------------------------------------------
def load_source(args: RecipeArguments) -> Any:
    """The rows to select from: ``demo`` / ``demo:N`` or anything :func:`hf_select.io.load_rows` reads, with the
    Hub configuration ``dataset_config``; with ``dataset_streaming`` a ``datasets.IterableDataset`` (``limit``
    taken from its start), which :func:`data_stage` writes to disk as it arrives."""
    from .io import load_rows

    spec = args.dataset_name or ""
    streaming = bool(getattr(args, "dataset_streaming", False))
    if spec == "demo" or spec.startswith("demo:"):
        from .demo import make_demo_dataset

        n = int(spec.split(":", 1)[1]) if ":" in spec else 1000
        ds = make_demo_dataset(n=n, seed=args.seed)
        ds = ds.to_iterable_dataset() if streaming else ds
    else:
        ds = load_rows(spec, split=args.dataset_train_split, streaming=streaming,
                       config=getattr(args, "dataset_config", None))
    if streaming:
        return ds.take(args.limit) if args.limit is not None else ds
    if args.limit is not None:
        ds = ds.select(range(min(args.limit, len(ds))))
    if len(ds) == 0:
        raise HFSelectError(f"{spec}: no rows to select from.")
    return ds


def materialize_stream(stream: Any, source: str) -> Any:
    """A streamed pool as a ``datasets.Dataset`` written to disk as the rows arrive (datasets' generator builder
    writes Arrow in batches, never holding the pool in memory); one error when the stream holds no rows.

    Example:
        >>> from datasets import Dataset
        >>> len(materialize_stream(Dataset.from_list([{"a": 1}, {"a": 2}]).to_iterable_dataset(), "x"))
        2
    """
    import datasets

    def rows() -> Any:
        yield from stream

    try:
        ds = datasets.Dataset.from_generator(rows, features=stream.features)
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__ or err
        if isinstance(cause, HFSelectError):
            raise cause from None
        raise HFSelectError(f"{source}: the stream failed part way ({type(cause).__name__}: {cause}).") from err
    except ValueError as err:  # no rows: the builder cannot infer a schema, or writes an empty split
        raise HFSelectError(f"{source}: the streamed pool has no rows; check dataset_name, dataset_config and "
                            f"dataset_train_split ({err}).") from err
    if len(ds) == 0:
        raise HFSelectError(f"{source}: the streamed pool has no rows; check dataset_name, dataset_config and "
                            "dataset_train_split.")
    return ds


def data_stage(runner: StageRunner, args: RecipeArguments) -> Any:
    """Stage ``data``: the source rows as read (row ids in every later stage are indices into these). A streamed
    pool (``dataset_streaming``) is written to the stage's folder as it arrives."""

    def make() -> Any:
        ds = load_source(args)
        return materialize_stream(ds, args.dataset_name or "") if is_streamed(ds) else ds

    ds, _ = runner.dataset_stage("data", make,
                                 params={"dataset": args.dataset_name, "split": args.dataset_train_split,
                                         "limit": args.limit,
                                         "seed": args.seed if (args.dataset_name or "").startswith("demo") else None,
                                         **({"config": args.dataset_config} if getattr(args, "dataset_config", None)
                                            else {})})
    return ds


def score_stage(runner: StageRunner, name: str, scorer: Any, dataset: Any, args: RecipeArguments, *,
                params: Mapping[str, Any] | None = None) -> Any:
    """A stage that adds a scorer's columns to ``dataset`` (resumable shards under ``<output_dir>/shards/``)."""
    from .scoring.base import config_to_dict

    def make() -> Any:
        run_dir = runner.output_dir / "shards" / f"{name}-{scorer.fingerprint(dataset)}"
        return scorer.score(dataset, shard_size=args.shard_size, run_dir=run_dir, cpu=args.cpu)

    stage_params = {"scorer": type(scorer).__name__, "config": config_to_dict(scorer.config),
                    "rows": len(dataset), **dict(params or {})}
    try:
        ds, _ = runner.dataset_stage(name, make, params=stage_params, meta=lambda d: status_counts(d, scorer))
    finally:
        release_models(scorer)
    return ds


def release_models(scorer: Any) -> None:
    """Drop the models a scorer loaded (and those of the scorers it holds), so that the next stage (often a
    fine-tuning run) gets the accelerator's memory back."""
    from .scoring.base import BaseScorer
    from .training import _free_memory

    for obj in [scorer, *[v for v in vars(scorer).values() if isinstance(v, BaseScorer)]]:
        loaded = getattr(obj, "_loaded", None)
        if isinstance(loaded, dict):
            loaded.clear()
    _free_memory()


def status_counts(dataset: Any, scorer: Any) -> dict[str, int]:
    """Rows per value of each ``*_status`` column the scorer adds."""
    out: dict[str, int] = {}
    for col in getattr(scorer, "output_columns", ()):
        if col.endswith("_status") and col in dataset.column_names:
            for value in dataset[col]:
                out[f"{col}={value}"] = out.get(f"{col}={value}", 0) + 1
    return out


def _content_fingerprint(path: str | os.PathLike | None) -> Any:
    """A file's resolved path and the SHA-256 of its content (a rewritten eval file with other rows recomputes the
    stage; an identical copy does not); anything that is not a file (``demo:N``, a Hub id, None) as it is.

    Example:
        >>> _content_fingerprint("demo:50"), _content_fingerprint(None)
        ('demo:50', None)
    """
    import hashlib

    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        return str(path)
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return [str(p.resolve()), digest.hexdigest()]


def eval_stage(runner: StageRunner, args: RecipeArguments, model_dir: str | os.PathLike, *, name: str = "eval",
               dataset: str | None = None, limit: int | None = None,
               base_model: bool | None = None) -> dict[str, Any] | None:
    """Stage ``eval``: held-out completion loss of a model (and optionally the base model) on ``--eval_dataset`` (or
    ``dataset``), through :func:`hf_select.heldout.heldout_loss` at ``eval_max_length`` (not the training
    ``max_length``). The meta holds ``dataset``, ``loss``, ``rows`` (eval rows read) and every other
    :class:`~hf_select.heldout.HeldoutResult` field; with the base model, ``loss_base`` and ``heldout_base``.

    The key holds everything that changes the numbers: the model folder, the eval file and its content hash (and the
    MT-Bench questions file's), ``eval_limit``, ``eval_max_length``, the precision (and the dtype it resolves to
    here), the batch size and token budget, ``chat_template_path`` and whether (and which) base model is scored."""
    source = dataset or args.eval_dataset
    limit = limit if limit is not None else args.eval_limit
    base_model = args.eval_base_model if base_model is None else base_model
    if not source:
        logger.warning("no --eval_dataset: the final model's held-out loss is not computed")
        return None
    from .heldout import heldout_loss
    from .training import load_eval_dataset, resolve_precision

    kw: dict[str, Any] = {"max_length": args.eval_max_length, "precision": args.precision,
                          "max_batch_size": args.per_device_eval_batch_size, "max_tokens_per_batch": None,
                          "chat_template_path": args.chat_template_path, "name": str(source)}

    def compute(folder: Path) -> dict[str, Any]:
        rows = load_eval_dataset(source, questions=args.eval_questions, limit=limit)
        result = heldout_loss(str(model_dir), rows, **kw)
        out = {"dataset": source, **result.to_dict()}
        if base_model:
            base = heldout_loss(args.model_name_or_path, rows, **kw)
            out["loss_base"] = base.loss
            out["heldout_base"] = base.to_dict()
        if runner.is_main:
            (folder / "eval.json").write_text(json.dumps(out, indent=2))
        return out

    import torch

    from .scoring.batching import CPU_TOKEN_BUDGET, GPU_TOKEN_BUDGET

    questions = args.eval_questions
    if questions is None and Path(str(source)).is_file():
        beside = Path(str(source)).with_name("mt_bench_questions.jsonl")  # read when the file holds MT-Bench answers
        questions = str(beside) if beside.is_file() else None
    params = {"metric": "heldout_loss", "model_dir": str(model_dir), "eval_dataset": source,
              "eval_file": _content_fingerprint(source), "eval_questions": _content_fingerprint(questions),
              "eval_limit": limit, "eval_max_length": args.eval_max_length, "precision": args.precision,
              "dtype": resolve_precision(args.precision), "eval_batch_size": args.per_device_eval_batch_size,
              "eval_tokens_per_batch": GPU_TOKEN_BUDGET if torch.cuda.is_available() else CPU_TOKEN_BUDGET,
              "chat_template_path": _content_fingerprint(args.chat_template_path), "base": base_model,
              "base_model": args.model_name_or_path if base_model else None}
    return runner.run(name, compute, params=params).meta


def report_stage(runner: StageRunner, args: RecipeArguments, scored: Any, selection: Any, *,
                 score_columns: Sequence[str] | None = None, title: str | None = None) -> Path | None:
    """Stage ``report``: :func:`hf_select.report.make_report` (plots + report.md + report.json)."""
    if not args.report:
        return None
    from .report import make_report

    def compute(folder: Path) -> dict[str, Any]:
        if runner.is_main:
            make_report(scored, selection, folder, score_columns=list(score_columns) if score_columns else None,
                        title=title)
        return {"plots": len(list(folder.glob("*.png")))}

    info = runner.run("report", compute, params={"columns": list(score_columns or []), "title": title})
    return info.path

