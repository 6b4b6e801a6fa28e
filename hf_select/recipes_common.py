"""Shared machinery of the recipes in ``recipes/``: arguments read from YAML with TRL's parser (unknown keys fail),
stage folders written atomically and reused on restart, and the common ending (held-out eval, report, cards,
optional push). Recipes only wire library functions together; everything they share lives here.

A stage is one folder ``<output_dir>/<stage>/`` holding its outputs and ``stage.json`` (its parameters, a key
derived from them and from the stages before it, counts, timing). It is computed in ``.<stage>.tmp`` and renamed
into place when finished, so a killed run never leaves half a stage. When the recipe is started again, a stage
whose folder exists with the same key is reused, not recomputed; a changed parameter recomputes that stage and
the ones after it. Every computation and reuse is appended to ``<output_dir>/stages.jsonl``.

Example:
    >>> from hf_select.recipes_common import StageRunner
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> info = StageRunner(folder).run("hello", lambda tmp: (tmp / "x.txt").write_text("hi") and {"chars": 2})
    >>> info.meta, info.reused
    ({'chars': 2}, False)
    >>> StageRunner(folder).run("hello", lambda tmp: {"chars": 2}).reused  # started again: reused
    True
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HFSelectError, redact, scrub
from .models import DEFAULT_LM
from .scoring.base import stable_hash
from .training import ROW_ID, TrainConfig

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
STAGES_LOG = "stages.jsonl"
PARTIAL_FILE = "partial.json"  # in the temporary folder of a resumable stage: the key it was started with


# -- arguments --------------------------------------------------------------------------------------------------------
@dataclass
class RecipeArguments(TrainConfig):
    """Arguments every recipe shares (the training fields come from :class:`hf_select.training.TrainConfig`).

    Example:
        >>> RecipeArguments(dataset="demo:50", output_dir="/tmp/x").dataset
        'demo:50'
    """

    dataset: str | None = field(
        default=None,
        metadata={"help": "Rows to select from: json/jsonl/parquet/csv file, save_to_disk folder, Hub id, or "
                          "'demo' / 'demo:N' (the built-in demo dataset of N rows)."},
    )
    split: str = field(default="train", metadata={"help": "Split to read from a Hub id or a DatasetDict folder."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N rows of the dataset."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder of the run: one sub-folder per stage, reused on restart."}
    )
    model_name_or_path: str = field(
        default=DEFAULT_LM, metadata={"help": "Base model fine-tuned into the final model (and any seed model)."}
    )
    eval_dataset: str | None = field(
        default=None,
        metadata={"help": "Held-out eval set for the final model's loss (e.g. alpaca_eval_gpt4_805.json, or "
                          "mt_bench_reference_gpt4.jsonl with mt_bench_questions.jsonl beside it)."},
    )
    eval_questions: str | None = field(
        default=None, metadata={"help": "MT-Bench questions file, when not beside the references."}
    )
    eval_limit: int | None = field(default=None, metadata={"help": "Use only the first N rows of the eval set."})
    eval_base_model: bool = field(
        default=False, metadata={"help": "Also report the base model's held-out loss (for comparison)."}
    )
    template: str = field(
        default="auto", metadata={"help": "Prompt template of the scorers: auto, chat, alpaca, vicuna, plain."}
    )
    score_max_length: int = field(default=1024, metadata={"help": "Most tokens per row when scoring."})
    shard_size: int = field(default=2048, metadata={"help": "Rows per resumable scoring shard."})
    cpu: bool = field(
        default=False, metadata={"help": "Several processes without GPUs (torchrun): use gloo CPU processes."}
    )
    report: bool = field(default=True, metadata={"help": "Write the selection report (plots + report.md)."})
    resume: bool = field(default=True, metadata={"help": "Reuse finished stages of an earlier run in output_dir."})
    license: str | None = field(default=None, metadata={"help": "Licence of the source data, for the dataset card."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the subset and the model at the end."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Hub dataset repository for the subset."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub model repository for the final model."})
    allow_public: bool = field(
        default=False, metadata={"help": "Create public repositories (default: private; the data may be private)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.dataset:
            raise ValueError(f"{type(self).__name__}.dataset is required: pass --dataset FILE|HUB_ID|demo:N")
        if not self.output_dir:
            raise ValueError(f"{type(self).__name__}.output_dir is required: pass --output_dir FOLDER")
        if self.push_to_hub and not (self.hub_dataset_id or self.hub_model_id):
            raise ValueError(f"{type(self).__name__}.push_to_hub needs hub_dataset_id and/or hub_model_id")
        for name in ("limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 1, got {value}")
        if self.score_max_length < 8:
            raise ValueError(f"{type(self).__name__}.score_max_length must be >= 8, got {self.score_max_length}")

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The :class:`TrainConfig` part of these arguments, with overrides (e.g. ``num_train_epochs=1``)."""
        return TrainConfig.from_object(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return scrub(dataclasses.asdict(self))


def parse_recipe_args(args_class: type, argv: Sequence[str] | None = None) -> Any:
    """Parse ``--config FILE.yaml`` plus command-line overrides into ``args_class`` with ``trl.TrlParser``;
    unknown keys in the YAML or on the command line fail.

    Example:
        >>> args = parse_recipe_args(RecipeArguments, ["--dataset", "demo:40", "--output_dir", "/tmp/r"])
        >>> args.dataset
        'demo:40'
    """
    from trl import TrlParser

    from .recipes import config_path

    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):  # a shipped config may be named by its stem (``--config mods_smollm2``)
        if arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = str(config_path(argv[i + 1]))
        elif arg.startswith("--config="):
            argv[i] = f"--config={config_path(arg.split('=', 1)[1])}"
    parser = TrlParser((args_class,))
    (args,) = parser.parse_args_and_config(argv)
    return args


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

    def selection_stage(self, name: str, make: Callable[[], Any], *,
                        params: Mapping[str, Any] | None = None) -> tuple[Any, StageInfo]:
        """A stage whose output is a ``SelectionResult`` (``SelectionResult.save``); returns it loaded."""
        from .selection import SelectionResult

        def compute(folder: Path) -> dict[str, Any]:
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
                    "rows_out": len(result.dataset), **{f"dropped_{k}": v for k, v in dropped.items()}}

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


def _ids_digest(dataset: Any) -> str:
    if ROW_ID in dataset.column_names:
        return stable_hash(list(dataset[ROW_ID]))
    return str(getattr(dataset, "_fingerprint", len(dataset)))


def load_stage_dataset(folder: str | os.PathLike) -> Any:
    """Load the dataset a :meth:`StageRunner.dataset_stage` saved."""
    import datasets

    return datasets.load_from_disk(str(Path(folder) / "data"))


# -- the common beginning and end of every recipe ---------------------------------------------------------------------
def load_source(args: RecipeArguments) -> Any:
    """The rows to select from: ``demo`` / ``demo:N`` or anything :func:`hf_select.io.load_rows` reads."""
    from .io import load_rows

    spec = args.dataset or ""
    if spec == "demo" or spec.startswith("demo:"):
        from .demo import make_demo_dataset

        n = int(spec.split(":", 1)[1]) if ":" in spec else 1000
        ds = make_demo_dataset(n=n, seed=args.seed)
    else:
        ds = load_rows(spec, split=args.split)
    if args.limit is not None:
        ds = ds.select(range(min(args.limit, len(ds))))
    if len(ds) == 0:
        raise HFSelectError(f"{spec}: no rows to select from.")
    return ds


def data_stage(runner: StageRunner, args: RecipeArguments) -> Any:
    """Stage ``data``: the source rows as read (row ids in every later stage are indices into these)."""
    ds, _ = runner.dataset_stage("data", lambda: load_source(args),
                                 params={"dataset": args.dataset, "split": args.split, "limit": args.limit,
                                         "seed": args.seed if (args.dataset or "").startswith("demo") else None})
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


def eval_stage(runner: StageRunner, args: RecipeArguments, model_dir: str | os.PathLike, *, name: str = "eval",
               dataset: str | None = None, limit: int | None = None,
               base_model: bool | None = None) -> dict[str, Any] | None:
    """Stage ``eval``: held-out loss of a model (and optionally the base model) on ``--eval_dataset`` (or
    ``dataset``), through :func:`hf_select.training.evaluate_loss`."""
    source = dataset or args.eval_dataset
    limit = limit if limit is not None else args.eval_limit
    base_model = args.eval_base_model if base_model is None else base_model
    if not source:
        logger.warning("no --eval_dataset: the final model's held-out loss is not computed")
        return None
    from .training import evaluate_loss, load_eval_dataset

    def compute(folder: Path) -> dict[str, Any]:
        rows = load_eval_dataset(source, questions=args.eval_questions, limit=limit)
        kw = {"max_length": args.max_length, "batch_size": args.per_device_eval_batch_size,
              "precision": args.precision, "chat_template_path": args.chat_template_path, "seed": args.seed}
        result = evaluate_loss(str(model_dir), rows, **kw)
        out = {"dataset": source, "loss": result.loss, "rows": result.rows}
        if base_model:
            out["loss_base"] = evaluate_loss(args.model_name_or_path, rows, **kw).loss
        if runner.is_main:
            (folder / "eval.json").write_text(json.dumps(out, indent=2))
        return out

    params = {"model_dir": str(model_dir), "eval_dataset": source, "eval_limit": limit,
              "max_length": args.max_length, "base": base_model}
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


def args_to_cli(args: Any) -> list[str]:
    """The command-line flags that reproduce ``args``: every field that differs from its default.

    Example:
        >>> args_to_cli(RecipeArguments(dataset="demo:40", output_dir="/tmp/r", limit=10))
        ['--dataset', 'demo:40', '--limit', '10', '--output_dir', '/tmp/r']
    """
    out: list[str] = []
    inactive = set(getattr(args, "inactive_fields", lambda: ())())  # settings that did not apply (e.g. a threshold)
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if value == default or f.name in inactive:
            continue
        if isinstance(value, (dict, list)):
            text = json.dumps(scrub(value))
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
        out += [f"--{f.name}", redact(text)]
    return out


def reproduce_command(recipe: str, args: Any) -> str:
    """The command that reproduces this run (for the dataset card)."""
    return f"accelerate launch recipes/{recipe}.py " + " ".join(shlex.quote(a) for a in args_to_cli(args))


def finish_recipe(
    runner: StageRunner,
    args: RecipeArguments,
    *,
    method: str,
    scored: Any,
    selection: Any,
    model_dir: str | os.PathLike,
    train_meta: Mapping[str, Any] | None = None,
    score_columns: Sequence[str] = (),
    extra_models: Sequence[Mapping[str, str]] = (),
    recipe: str | None = None,
) -> dict[str, Any]:
    """The common ending: eval, report, cards (``hub`` stage: ``hub/dataset`` and ``hub/model``) and, with
    ``--push_to_hub``, the push. Returns a summary dict (also written to ``<output_dir>/summary.json``)."""
    from .hub import build_card_context, push_outputs, write_hub_folders

    eval_meta = eval_stage(runner, args, model_dir)
    report_dir = report_stage(runner, args, scored, selection, score_columns=score_columns,
                              title=f"{method} on {args.dataset}")
    stages = [{"name": i.name, "params": _short_params(i.params), "meta": i.meta} for i in runner.infos]
    subset = selection.dataset

    def compute(folder: Path) -> dict[str, Any]:
        ctx = build_card_context(
            selection=selection, source=args.dataset, method=method, rows_in=len(scored),
            base_model=args.model_name_or_path, training=args.train_config().to_dict(),
            train_loss=(train_meta or {}).get("train_loss"), eval_result=eval_meta, stages=stages, scored=scored,
            score_columns=score_columns, source_split=args.split if not args.dataset.startswith("demo") else None,
            license=args.license or ("apache-2.0" if args.dataset.startswith("demo") else None),
            reproduce=reproduce_command(recipe or method, args), extra_models=extra_models,
        )
        if runner.is_main:
            write_hub_folders(folder, subset=subset, context=ctx, model_dir=str(model_dir),
                              report_dir=str(report_dir) if report_dir else None, selection=selection,
                              dataset_id=args.hub_dataset_id, model_id=args.hub_model_id)
        return {"rows_out": len(subset), "eval_loss": (eval_meta or {}).get("loss")}

    hub_info = runner.run("hub", compute, params={"eval": eval_meta, "rows": len(subset),
                                                  "dataset_id": args.hub_dataset_id, "model_id": args.hub_model_id,
                                                  "stages": [i.key for i in runner.infos]})
    summary = {
        "method": method, "output_dir": str(runner.output_dir), "rows_in": len(scored), "rows_out": len(subset),
        "model_dir": str(model_dir), "hub_folder": str(hub_info.path), "report_dir": str(report_dir) if report_dir
        else None, "eval": eval_meta, "train": dict(train_meta or {}),
        "stages": {i.name: ("reused" if i.reused else "computed") for i in runner.infos},
    }
    if args.push_to_hub and runner.is_main:
        summary["pushed"] = push_outputs(hub_info.path, dataset_id=args.hub_dataset_id, model_id=args.hub_model_id,
                                         allow_public=args.allow_public)
    if runner.is_main:
        (runner.output_dir / "summary.json").write_text(json.dumps(scrub(summary), indent=2, default=str))
        logger.info("done: subset, report, cards and model under %s", runner.output_dir)
    return summary


def _short_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Stage parameters for the card, without bulky entries (digests, the training config: on the model card)."""
    out = {k: v for k, v in params.items() if k not in ("row_ids", "train", "stages")}
    if isinstance(out.get("config"), Mapping):
        out["config"] = {k: v for k, v in out["config"].items() if v is not None}
    return _shorten(out)


def _shorten(value: Any, limit: int = 120) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 3] + "..."
    if isinstance(value, Mapping):
        return {k: _shorten(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v, limit) for v in value]
    return value


def setup_logging() -> None:
    """Progress of the stages on stderr (main process only), for the recipe scripts."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    log = logging.getLogger("hf_select")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[hf-select] %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


# -- small helpers the recipes share ----------------------------------------------------------------------------------
def check_count_or_fraction(args: Any, count_field: str, fraction_field: str) -> None:
    """Exactly one of ``args.<count_field>`` (>= 1) and ``args.<fraction_field>`` (in (0, 1]) must be set.

    Example:
        >>> from types import SimpleNamespace
        >>> check_count_or_fraction(SimpleNamespace(k=None, f=0.5), "k", "f")
    """
    count, fraction = getattr(args, count_field), getattr(args, fraction_field)
    name = type(args).__name__
    if (count is None) == (fraction is None):
        raise ValueError(f"{name}: set exactly one of {count_field} (rows) and {fraction_field} (a share)")
    if count is not None and count < 1:
        raise ValueError(f"{name}.{count_field} must be >= 1, got {count}")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"{name}.{fraction_field} must be in (0, 1], got {fraction}")


def print_summary(summary: Mapping[str, Any]) -> None:
    """Print where a recipe left its outputs and the headline numbers."""
    ev = summary.get("eval") or {}
    print(f"{summary['method']}: {summary['rows_out']} of {summary['rows_in']} rows selected")
    if ev.get("loss") is not None:
        print(f"held-out loss on {ev.get('dataset')}: {ev['loss']:.4f} ({ev.get('rows')} rows)")
    print(f"model:  {summary['model_dir']}")
    print(f"cards:  {summary['hub_folder']}  (push with: hf-select push {summary['output_dir']} "
          "--hub_dataset_id ... --hub_model_id ...)")
    if summary.get("report_dir"):
        print(f"report: {summary['report_dir']}")


def merge_columns(base: Any, part: Any, columns: Sequence[str]) -> Any:
    """``base`` with ``columns`` of ``part`` added, matched by ``_row_id`` (``part``'s ids index ``base``'s rows, or
    ``base``'s own ``_row_id``); rows ``part`` lacks get null (NaN for float columns).

    Example:
        >>> from datasets import Dataset
        >>> base = Dataset.from_dict({"x": ["a", "b", "c"]})
        >>> part = Dataset.from_dict({"_row_id": [2, 0], "s": [0.5, 1.5]})
        >>> list(merge_columns(base, part, ["s"])["s"])
        [1.5, nan, 0.5]
    """
    ids = list(base[ROW_ID]) if ROW_ID in base.column_names else list(range(len(base)))
    where = {int(r): i for i, r in enumerate(part[ROW_ID])}
    for col in columns:
        if col not in part.column_names:
            continue
        feature = part.features[col]
        values = part[col]
        is_float = getattr(feature, "dtype", "") in ("float16", "float32", "float64")
        fill = float("nan") if is_float else None
        full = [values[where[int(r)]] if int(r) in where else fill for r in ids]
        if col in base.column_names:
            base = base.remove_columns(col)
        base = base.add_column(col, full, feature=feature)
    return base


def union_selection(source: Any, parts: Mapping[str, Any], *, before: Sequence[tuple[str, Any]] = (),
                    seed: int = 0) -> Any:
    """One ``SelectionResult`` for the union of several selections of the same ``source`` rows (by ``_row_id``),
    deduplicated; e.g. MoDS's seed + necessary rows.

    The provenance lists the steps of ``before`` (earlier selections the parts were made from, e.g. the quality
    filter), then of each part, each entry tagged with its ``stage``, then a ``union`` step whose ``duplicate``
    count is the rows two parts share. Rows of ``source`` not in the union are in ``dropped`` with the reason of the
    last selection that dropped them.
    """
    import numpy as np
    from datasets import Value

    from .selection import SelectionResult

    chosen: list[int] = []
    total = 0
    for result in parts.values():
        chosen += result.row_ids
        total += len(result.row_ids)
    ids = sorted(set(chosen))
    src_ids = list(source[ROW_ID]) if ROW_ID in source.column_names else list(range(len(source)))
    pos = {int(r): i for i, r in enumerate(src_ids)}
    base = source if ROW_ID in source.column_names else source.add_column(ROW_ID, np.arange(len(source)))
    subset = base.select([pos[i] for i in ids])
    reasons: dict[int, tuple[str, str]] = {}
    for _, result in [*before, *parts.items()]:
        d = result.dropped
        if len(d):
            for rid, step, reason in zip(d[ROW_ID], d["drop_step"], d["drop_reason"], strict=True):
                reasons[int(rid)] = (step, reason)
    keep = set(ids)
    gone = [r for r in src_ids if int(r) not in keep]
    dropped = base.select([pos[int(r)] for r in gone])
    dropped = dropped.add_column("drop_step", [reasons.get(int(r), ("union", "not_selected"))[0] for r in gone],
                                 feature=Value("string"))
    dropped = dropped.add_column("drop_step_index", [-1] * len(gone), feature=Value("int64"))
    dropped = dropped.add_column("drop_reason", [reasons.get(int(r), ("union", "not_selected"))[1] for r in gone],
                                 feature=Value("string"))
    provenance = []
    for stage, result in [*before, *parts.items()]:
        for entry in result.provenance:
            provenance.append({**entry, "stage": stage})
    provenance.append({"step": "union", "stage": "+".join(parts), "params": {"of": list(parts)}, "seed": None,
                       "rows_in": total, "rows_out": len(ids), "dropped": {"duplicate": total - len(ids)},
                       "info": {}, "seconds": 0.0})
    return SelectionResult(dataset=subset, dropped=dropped, provenance=provenance, seed=seed,
                           input_rows=len(source), input_fingerprint=getattr(source, "_fingerprint", None))


def recipe_main(args_class: type, run: Callable[[Any], dict[str, Any]], argv: Sequence[str] | None = None) -> int:
    """The command-line entry of a recipe script: parse (YAML + flags), run, print where everything is.

    A problem the user can fix (a missing file, a bad value, no token for the push) is printed as one line starting
    with ``hf-select: error:`` (exit code 2), never with a traceback; a token is never printed.
    """
    from .errors import redact, user_error_message

    setup_logging()
    try:
        args = parse_recipe_args(args_class, argv)
    except (ValueError, TypeError, OSError) as err:  # the YAML or a flag: the message names the field
        print(f"hf-select: error: {redact(' '.join(str(err).split()))}", file=sys.stderr)
        return 2
    try:
        summary = run(args)
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        print(f"hf-select: error: {message}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print_summary(summary)
    return 0
