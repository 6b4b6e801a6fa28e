"""Does selection beat random on *your* data? Train the same model on the rows each method picks, with the same TRL
SFT settings, and compare held-out losses against random subsets of the same size and against the whole pool.

:func:`run_compare` builds one pool from several files (a ``source`` column says which file each row came from),
then for every method: picks ``budget`` rows, fine-tunes ``model_name_or_path`` on them (the same
:class:`~hf_select.training.TrainConfig` for every method, fixed seed) and measures the mean completion loss on each
held-out eval set. Methods:

- ``random``: a uniform sample (``random_seeds`` different samples; their spread is the noise floor);
- ``longest``: the rows with the longest responses (a strong baseline: IFD correlates with response length);
- ``ifd``: Superfiltering (IFD scored by a small model, drop IFD >= 1, keep the highest), ``recipes/superfilter.py``;
- ``cherry``: Cherry LLM (IFD scored by a pre-experienced model), ``recipes/cherry.py``;
- ``mods``: MoDS (quality, k-center coverage, necessity), ``recipes/mods.py``;
- ``instructmining``: the InstructMining rule, ``recipes/instruct_mining.py``;
- ``full``: the whole pool;
- the selection presets of :mod:`hf_select.selection.presets` (``superfiltering``, ``ifd_gated``, ``ifd_length``,
  ``ifd_quota``, ``fusion``, ``longest_gated``, ``target``) and any custom step list given in ``step_methods``: these
  read one shared scoring of the pool (``scores/``, see :mod:`hf_select.compare_steps`), so they differ by their
  steps alone.

The recipe methods run through the recipes' own ``run_*`` functions, so the comparison measures exactly what the
recipes ship. Everything is written under ``output_dir``: ``pool/`` (the pool), ``base/`` (the base model's losses),
one folder per method (``random/seed<N>/`` per random seed), each made of stage folders that are reused when the
comparison is started again, and ``compare.json``, ``compare.md`` (the table) and ``compare.png`` (the chart). A
method that fails is recorded with its error; the others still run.

Example:
    >>> from hf_select.compare import CompareConfig, run_compare
    >>> config = CompareConfig(pool=["alpaca_9k.json", "dolly_3k.json"], eval=["alpaca_eval_gpt4_805.json"],
    ...                        budget=0.1, methods=["random", "longest", "ifd"], output_dir="cmp/")
    >>> config.budget_rows(14_000)
    1400
    >>> result = run_compare(config)  # doctest: +SKIP
    >>> print(result.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HFSelectError
from .models import DEFAULT_EMBEDDER, DEFAULT_LM
from .training import TrainConfig

logger = logging.getLogger(__name__)

BASE_METHODS = ("random", "longest", "ifd", "cherry", "mods", "instructmining", "full")
METHODS = BASE_METHODS + ("superfiltering", "ifd_gated", "ifd_length", "ifd_quota", "fusion", "longest_gated",
                          "target")
DEFAULT_METHODS = tuple(m for m in METHODS if m != "target")  # 'target' needs a target set
CORRUPTION_COLUMN = "corruption"  # the demo pool's label of rows corrupted on purpose ("none" = clean)
SIMPLE_METHODS = ("random", "longest", "full")
# method -> its recipe module in hf_select.recipes
RECIPES = {"ifd": "superfilter", "cherry": "cherry", "mods": "mods", "instructmining": "instruct_mining"}


def recipe_entry(method: str) -> tuple[type, Callable[[Any], dict[str, Any]]]:
    """The recipe behind a method: its arguments class and its ``run_*`` function (imported when first needed: a
    recipe pulls in trl).

    Example:
        >>> recipe_entry("mods")[1].__name__  # doctest: +SKIP
        'run_mods'
    """
    if method == "ifd":
        from .recipes.superfilter import SuperfilterArguments, run_superfilter

        return SuperfilterArguments, run_superfilter
    if method == "cherry":
        from .recipes.cherry import CherryArguments, run_cherry

        return CherryArguments, run_cherry
    if method == "mods":
        from .recipes.mods import MoDSArguments, run_mods

        return MoDSArguments, run_mods
    if method == "instructmining":
        from .recipes.instruct_mining import InstructMiningArguments, run_instruct_mining

        return InstructMiningArguments, run_instruct_mining
    raise HFSelectError(f"{method!r} is not a recipe method; one of {sorted(RECIPES)}")
SOURCE_COLUMN = "source"
POOL_MARKER = "compare_pool.json"
# Recipe fields that the comparison sets itself: the same for every method, so not per-method options.
_OWNED_RECIPE_FIELDS = (
    "dataset", "split", "limit", "output_dir", "model_name_or_path", "eval_dataset", "eval_questions", "eval_limit",
    "eval_base_model", "resume", "push_to_hub", "hub_dataset_id", "hub_model_id",
)
# Where each recipe leaves the score it ranks by (stage folder, column, higher is chosen first).
_SCORE_STAGES = {
    "ifd": ("ifd", "ifd", True),
    "cherry": ("ifd", "ifd", True),
    "mods": ("quality", None, True),
    "instructmining": ("rule", "instructmining_pred", False),
}


# -- configuration ----------------------------------------------------------------------------------------------------
@dataclass
class CompareConfig(TrainConfig):
    """What to compare and how. The training fields (learning rate, epochs, batch size, ``max_length``, seed, ...)
    come from :class:`~hf_select.training.TrainConfig` and are the same for every method; their defaults here
    differ in two places (``learning_rate=1e-4``, ``num_train_epochs=2``), see the fields' help.

    Example:
        >>> cfg = CompareConfig(pool=["a.json", "b.json"], eval=["e.json"], budget=0.1, methods="random,ifd",
        ...                     output_dir="/tmp/cmp")
        >>> cfg.methods, cfg.budget_rows(600)
        (['random', 'ifd'], 60)
    """

    pool: list[str] = field(
        default_factory=list,
        metadata={"help": "Files (or save_to_disk folders) pooled into the rows to select from; each row keeps a "
                          "'source' column (its own, or the file's stem)."},
    )
    eval: list[str] = field(
        default_factory=list,
        metadata={"help": "Held-out eval sets nobody selects from (e.g. alpaca_eval_gpt4_805.json, "
                          "mt_bench_reference_gpt4.jsonl with mt_bench_questions.jsonl beside it)."},
    )
    budget: float = field(
        default=0.1, metadata={"help": "Rows each method keeps: a share of the pool (< 1) or a number of rows (>= 1)."}
    )
    methods: list[str] = field(
        default_factory=lambda: list(DEFAULT_METHODS),
        metadata={"help": f"Methods to compare, any of {METHODS} or a step_methods name (a list or a "
                          "comma-separated string); default: all but 'target', which needs a target set."},
    )
    random_seeds: int = field(
        default=3, metadata={"help": "Random subsets drawn (seeds seed, seed+1, ...); their spread is the noise."}
    )
    model_name_or_path: str = field(
        default=DEFAULT_LM, metadata={"help": "Base model fine-tuned on every subset (and scoring IFD by default)."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder of the comparison; finished methods in it are reused on restart."}
    )
    pool_limit: int | None = field(
        default=None,
        metadata={"help": "Use N pool rows, sampled per source in proportion to its size (seed pool_seed)."},
    )
    pool_seed: int = field(default=0, metadata={"help": "Seed of the pool_limit sample."})
    eval_limit: int | None = field(default=None, metadata={"help": "Use only the first N rows of each eval set."})
    eval_questions: str | None = field(
        default=None, metadata={"help": "MT-Bench questions file, when not beside the references."}
    )
    template: str = field(
        default="auto",
        metadata={"help": "Prompt template of the recipes' scorers: auto, chat, alpaca, vicuna, plain."},
    )
    score_max_length: int = field(default=1024, metadata={"help": "Most tokens per row when a recipe scores rows."})
    report: bool = field(default=True, metadata={"help": "Let the recipes write their selection reports."})
    resume: bool = field(default=True, metadata={"help": "Reuse finished stages and methods in output_dir."})
    method_args: dict[str, dict[str, Any]] | None = field(
        default=None,
        metadata={"help": "Options per recipe method, e.g. {'mods': {'necessity_max_new_tokens': 64}, "
                          "'cherry': {'n_clusters': 20}} (fields of the recipe's Arguments class)."},
    )
    # Two training defaults differ from TrainConfig's (redefined here; the field order stays TrainConfig's).
    learning_rate: float = field(
        default=1e-4,
        metadata={"help": "Peak learning rate of AdamW. Default 1e-4, not 2e-5: at 2e-5 a few hundred steps hardly "
                          "move a small instruct model, so every subset ends within a few thousandths of the base "
                          "loss and the methods cannot be told apart."},
    )
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs over each method's rows."})
    step_methods: dict[str, list[dict[str, Any]]] | str | None = field(
        default=None,
        metadata={"help": "Extra methods as selection step lists over the shared scores, e.g. {'judge_top': [{'step': "
                          "'top', 'column': 'judge_score', 'count': 'budget'}]} ('budget' = the row budget); a "
                          "YAML/JSON string or file path works too."},
    )
    preset_options: dict[str, dict[str, Any]] | str | None = field(
        default=None,
        metadata={"help": "Options per preset method, e.g. {'fusion': {'min_distance': 0.2}} (see "
                          "hf_select.selection.presets.preset_steps)."},
    )
    target: str | None = field(
        default=None,
        metadata={"help": "Target rows for target-aware methods ('target'): examples of the data you want a model "
                          "for, never the eval set itself."},
    )
    target_limit: int | None = field(default=None, metadata={"help": "Use only the first N target rows."})
    score_dtype: str = field(
        default="auto", metadata={"help": "dtype of the shared scoring passes: auto | bfloat16 | float32."}
    )
    quality_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Reward model of the shared quality score (default: the offline LLM judge, judge_score)."},
    )
    embed_model_name_or_path: str = field(
        default=DEFAULT_EMBEDDER, metadata={"help": "Sentence embedder of the shared embeddings and the target set."}
    )
    train: bool = field(
        default=True,
        metadata={"help": "Fine-tune and evaluate each subset. False: only select and describe each subset "
                          "(composition, length, corrupted share): minutes instead of hours; step methods, random, "
                          "longest and full only."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        self.pool = _as_list(self.pool)
        self.eval = _as_list(self.eval)
        if not self.pool:
            raise ValueError(f"{name}.pool is required: one or more files of rows to select from")
        if not self.eval:
            raise ValueError(f"{name}.eval is required: one or more held-out eval files (a comparison needs one)")
        if isinstance(self.step_methods, str):
            self.step_methods = _load_mapping(self.step_methods, f"{name}.step_methods")
        if isinstance(self.preset_options, str):
            self.preset_options = _load_mapping(self.preset_options, f"{name}.preset_options")
        for method, steps in (self.step_methods or {}).items():
            if method in METHODS:
                raise ValueError(f"{name}.step_methods: {method!r} is a built-in method; give the list another name")
            if not isinstance(steps, list) or not all(isinstance(s, Mapping) and "step" in s for s in steps):
                raise ValueError(f"{name}.step_methods[{method!r}] must be a list of step mappings ({{'step': ...}})")
        methods = _as_list(self.methods)
        unknown = [m for m in methods if m not in METHODS and m not in (self.step_methods or {})]
        if unknown or not methods:
            raise ValueError(f"{name}.methods must be a non-empty list of {METHODS} or step_methods names, got "
                             f"{unknown or methods}")
        self.methods = list(dict.fromkeys(methods))
        if not self.train:
            recipes = [m for m in self.methods if m in RECIPES]
            if recipes:
                raise ValueError(f"{name}.train=False selects without training, which {recipes} need (their seed "
                                 "and pre-experienced models); leave them out or train")
        if "target" in self.methods and not self.target:
            raise ValueError(f"{name}.target is required by the 'target' method: a file of example rows of the kind "
                             "you want (never the eval set itself)")
        if self.target_limit is not None and self.target_limit < 1:
            raise ValueError(f"{name}.target_limit must be >= 1, got {self.target_limit}")
        if isinstance(self.budget, bool) or not self.budget > 0:
            raise ValueError(f"{name}.budget must be a share in (0, 1) or a row count >= 1, got {self.budget!r}")
        if self.budget >= 1:
            if float(self.budget) != int(self.budget):
                raise ValueError(f"{name}.budget >= 1 is a row count and must be a whole number, got {self.budget}")
            self.budget = int(self.budget)
        if self.random_seeds < 1:
            raise ValueError(f"{name}.random_seeds must be >= 1, got {self.random_seeds}")
        if not self.output_dir:
            raise ValueError(f"{name}.output_dir is required: the folder the comparison writes to")
        for fname in ("pool_limit", "eval_limit"):
            value = getattr(self, fname)
            if value is not None and value < 1:
                raise ValueError(f"{name}.{fname} must be >= 1, got {value}")
        if self.score_max_length < 8:
            raise ValueError(f"{name}.score_max_length must be >= 8, got {self.score_max_length}")
        if isinstance(self.method_args, str):
            try:
                self.method_args = json.loads(self.method_args) if self.method_args.strip() else None
            except json.JSONDecodeError as err:
                raise ValueError(f"{name}.method_args is not valid JSON: {err}") from err
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        for method, options in (self.method_args or {}).items():
            if method not in RECIPES:
                raise ValueError(f"{name}.method_args: {method!r} is not a recipe method; options go to one of "
                                 f"{sorted(RECIPES)}")
            if not isinstance(options, Mapping):
                raise ValueError(f"{name}.method_args[{method!r}] must be a mapping of field -> value")
            owned = sorted((set(options) & train_fields) | (set(options) & set(_OWNED_RECIPE_FIELDS)))
            if owned:
                raise ValueError(f"{name}.method_args[{method!r}] sets {owned}: every method shares these; set "
                                 f"the {name} field instead")

    def budget_rows(self, pool_rows: int) -> int:
        """Rows each method keeps out of ``pool_rows`` (a share is rounded down, at least 1 row).

        Example:
            >>> CompareConfig(pool=["a"], eval=["e"], budget=50, output_dir="/tmp/c").budget_rows(40)
            40
        """
        if isinstance(self.budget, int):
            return min(self.budget, pool_rows)
        return max(1, min(pool_rows, int(math.floor(self.budget * pool_rows + 1e-9))))

    def train_config(self) -> TrainConfig:
        """The training settings every method shares."""
        return TrainConfig.from_object(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _load_mapping(value: str, name: str) -> dict[str, Any] | None:
    """A mapping from a YAML/JSON string or a path to a YAML/JSON file."""
    import yaml

    text = value
    if value.strip() and Path(value).is_file():
        text = Path(value).read_text(encoding="utf-8")
    try:
        loaded = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ValueError(f"{name} is not valid YAML/JSON: {err}") from err
    if loaded is not None and not isinstance(loaded, Mapping):
        raise ValueError(f"{name} must be a mapping, got {type(loaded).__name__}")
    return dict(loaded) if loaded else None


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [v.strip() for v in str(value).split(",") if v.strip()]
    return [str(v) for v in value]


# -- the pool ---------------------------------------------------------------------------------------------------------
def _source_names(files: Sequence[str]) -> list[str]:
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


def build_pool(files: Sequence[str], *, limit: int | None = None, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """One dataset from several files, with a ``source`` column (the row's own, else the file's stem).

    When every row is a single instruction -> response (Alpaca-like), the pool has ``instruction``, ``input``,
    ``output`` and ``source``; otherwise every row becomes ``messages`` + ``source``. Rows that cannot be read as a
    conversation are dropped and counted per reason. ``limit`` samples rows per source in proportion to its size.

    Raises:
        HFSelectError: a file that is missing, empty or has no known row format, or an empty pool.

    Example:
        >>> pool, info = build_pool(["alpaca_9k.json", "dolly_3k.json"], limit=600)  # doctest: +SKIP
        >>> info["composition"]  # doctest: +SKIP
        {'alpaca_9k': 451, 'dolly_3k': 149}
    """
    from datasets import Dataset

    from .formats import DatasetFormatError, RowError, detect_format, row_to_messages
    from .io import load_rows

    records: list[tuple[str, list[dict[str, str]], str | None]] = []
    dropped: dict[str, int] = {}
    any_labelled = False
    for path, stem in zip(files, _source_names(files), strict=True):
        if str(path) == "demo" or str(path).startswith("demo:"):
            from .demo import make_demo_dataset

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
    composition: dict[str, int] = {}
    for s in pool[SOURCE_COLUMN]:
        composition[s] = composition.get(s, 0) + 1
    return pool, {"format": "alpaca" if alpaca else "messages", "composition": composition, "dropped": dropped}


def response_texts(dataset: Any) -> list[str]:
    """The response of every row (``output``, or the last assistant message)."""
    if "output" in dataset.column_names:
        return [str(v or "") for v in dataset["output"]]
    out = []
    for messages in dataset["messages"]:
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        out.append(answers[-1] if answers else "")
    return out


def _file_fingerprint(path: str) -> Any:
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


# -- results ----------------------------------------------------------------------------------------------------------
@dataclass
class MethodResult:
    """One trained subset: what was chosen and how the model did."""

    method: str
    label: str
    seed: int | None = None
    status: str = "ok"
    error: str | None = None
    rows: int | None = None
    composition: dict[str, int] = field(default_factory=dict)
    mean_response_chars: float | None = None
    mean_response_tokens: float | None = None
    eval_loss: dict[str, float] = field(default_factory=dict)
    delta_vs_base: dict[str, float] = field(default_factory=dict)
    train_loss: float | None = None
    seconds: float = 0.0
    compute_seconds: float = 0.0
    reused: bool = False
    output_dir: str | None = None
    model_dir: str | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    corrupted: dict[str, int] = field(default_factory=dict)
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CompareResult:
    """Everything :func:`run_compare` measured, plus where it wrote ``compare.json``/``.md``/``.png``."""

    output_dir: str
    config: dict[str, Any]
    pool_rows: int
    pool_composition: dict[str, int]
    pool_mean_response_chars: float
    pool_mean_response_tokens: float | None
    budget_rows: int
    eval_sets: list[dict[str, Any]]
    base_loss: dict[str, float]
    methods: list[MethodResult]
    seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)
    pool_corrupted: dict[str, int] = field(default_factory=dict)
    scores_seconds: float = 0.0

    def runs(self, method: str) -> list[MethodResult]:
        """The results of one method (several for ``random``)."""
        return [m for m in self.methods if m.method == method]

    def random_stats(self) -> dict[str, dict[str, float]]:
        """Per eval set: mean, sample standard deviation and count of the random subsets' losses."""
        out: dict[str, dict[str, float]] = {}
        ok = [m for m in self.runs("random") if m.status == "ok"]
        for spec in self.eval_sets:
            values = [m.eval_loss[spec["name"]] for m in ok if spec["name"] in m.eval_loss]
            if values:
                mean = sum(values) / len(values)
                sd = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1
                      else float("nan"))
                out[spec["name"]] = {"mean": mean, "sd": sd, "n": len(values)}
        return out

    def verdict(self, result: MethodResult, eval_name: str) -> str:
        """``beats random`` when the loss is below the random mean by more than 2 sd, ``worse than random`` when
        above by more than 2 sd, else ``within 2 sd``; with the distance in sd."""
        stats = self.random_stats().get(eval_name)
        loss = result.eval_loss.get(eval_name)
        if result.status != "ok" or loss is None:
            return "-"
        if not stats or stats["n"] < 2:
            return "n/a (needs >= 2 random seeds)"
        if not stats["sd"] > 0:
            return "n/a (the random losses do not vary)"
        z = (loss - stats["mean"]) / stats["sd"]
        if z < -2:
            return f"beats random ({z:+.1f} sd)"
        if z > 2:
            return f"worse than random ({z:+.1f} sd)"
        return f"within 2 sd ({z:+.1f} sd)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": self.output_dir, "config": self.config, "pool_rows": self.pool_rows,
            "pool_composition": self.pool_composition, "pool_mean_response_chars": self.pool_mean_response_chars,
            "pool_mean_response_tokens": self.pool_mean_response_tokens, "budget_rows": self.budget_rows,
            "eval_sets": self.eval_sets, "base_loss": self.base_loss, "random": self.random_stats(),
            "verdicts": {m.label: {e["name"]: self.verdict(m, e["name"]) for e in self.eval_sets}
                         for m in self.methods if m.method != "random"},
            "methods": [m.to_dict() for m in self.methods], "seconds": self.seconds, "files": self.files,
            "pool_corrupted": self.pool_corrupted, "scores_seconds": self.scores_seconds,
        }

    def markdown(self) -> str:
        """The comparison as markdown: settings, the table (random as mean ± sd) and the random seeds."""
        return render_markdown(self)


# -- the comparison ---------------------------------------------------------------------------------------------------
def run_compare(config: CompareConfig) -> CompareResult:
    """Run every method of ``config`` and write ``compare.json``, ``compare.md`` and ``compare.png`` to
    ``config.output_dir``. Finished methods are reused when it runs again with the same settings; a method folder
    made from another pool (other files, contents, ``pool_limit`` or ``pool_seed``) is removed and computed again.

    Raises:
        HFSelectError: when the pool or an eval set cannot be read (a method's own failure is recorded instead).

    Example:
        >>> result = run_compare(CompareConfig(pool=["a.json", "b.json"], eval=["e.json"], budget=0.1,
        ...                                    methods=["random", "ifd"], output_dir="cmp/"))  # doctest: +SKIP
        >>> result.verdict(result.runs("ifd")[0], "e")  # doctest: +SKIP
        'within 2 sd (-0.8 sd)'
    """
    from .recipes_common import StageRunner, load_stage_dataset

    start = time.time()
    out = Path(config.output_dir)
    runner = StageRunner(out, resume=config.resume)
    pool_params = {"files": [_file_fingerprint(f) for f in config.pool], "limit": config.pool_limit,
                   "seed": config.pool_seed}

    def make_pool(folder: Path) -> dict[str, Any]:
        pool, info = build_pool(config.pool, limit=config.pool_limit, seed=config.pool_seed)
        pool.save_to_disk(str(folder / "data"))
        return {"rows": len(pool), **info}

    pool_info = runner.run("pool", make_pool, params=pool_params)
    pool = load_stage_dataset(pool_info.path)
    pool_dir = str(pool_info.path / "data")
    k = config.budget_rows(len(pool))
    eval_specs = _eval_specs(config)
    for spec in eval_specs:  # fail early, once, on an unreadable eval set
        _eval_rows(spec["path"], config)
    lengths = _lengths(pool, config.model_name_or_path)
    logger.info("compare: pool of %d rows (%s), budget %d rows, methods %s", len(pool),
                pool_info.meta.get("composition"), k, config.methods)

    base_loss, eval_rows = _base_losses(config, out / "base", pool_dir, eval_specs) if config.train else ({}, {})
    for spec in eval_specs:
        spec["rows"] = eval_rows.get(spec["name"])
    results: list[MethodResult] = []
    partial = CompareResult(
        output_dir=str(out), config=_jsonable(config.to_dict()), pool_rows=len(pool),
        pool_composition=dict(pool_info.meta.get("composition") or {}),
        pool_mean_response_chars=_mean(lengths["chars"]), pool_mean_response_tokens=_mean(lengths["tokens"]),
        budget_rows=k, eval_sets=eval_specs, base_loss=base_loss, methods=results,
        pool_corrupted=_corrupted(pool, range(len(pool))), scores_seconds=_stage_seconds(out / "scores"),
    )
    step_methods = [m for m in config.methods if m not in BASE_METHODS]
    scored, scores_meta, scores_error = None, {}, None
    if step_methods:
        from .compare_steps import method_needs, score_pool

        needs = set().union(*(method_needs(m, config.step_methods) for m in step_methods))
        t0 = time.time()
        try:
            scored, scores_meta = score_pool(config, out / "scores", pool_dir, needs)
        except Exception as err:  # recorded against every step method; the others still run
            scores_error = f"scoring the pool failed: {type(err).__name__}: {' '.join(str(err).split())}"[:500]
            logger.warning("compare: %s", scores_error, exc_info=True)
        logger.info("compare: shared scores %s in %.0f s", sorted(needs), time.time() - t0)
    plan: list[tuple[str, int | None]] = []
    for method in config.methods:
        if method == "random":
            plan += [("random", config.seed + i) for i in range(config.random_seeds)]
        else:
            plan.append((method, None))
    for method, seed in plan:
        label = f"random (seed {seed})" if method == "random" else method
        folder = out / method / f"seed{seed}" if method == "random" else out / method
        logger.info("compare: %s ...", label)
        t0 = time.time()
        result = MethodResult(method=method, label=label, seed=seed, output_dir=str(folder))
        try:
            _check_pool_marker(folder, pool_info.key)
            if method in SIMPLE_METHODS:
                run = _run_simple(method, seed, folder, pool_dir, k, config, eval_specs)
            elif method in step_methods:
                if scored is None:
                    raise HFSelectError(scores_error or "the shared scores are missing")
                from .compare_steps import method_steps

                steps = method_steps(method, k, custom=config.step_methods, target=scores_meta.get("target"),
                                     options=(config.preset_options or {}).get(method))
                run = _run_selection(method, None, folder, scored, steps, config, eval_specs)
            else:
                run = _run_recipe(method, folder, pool_dir, len(pool), k, config, eval_specs)
            _fill(result, run, pool, lengths, base_loss)
            if method in _SCORE_STAGES:
                result.diagnostics = _diagnostics(method, folder, pool, lengths, run["selection"])
            elif method in step_methods:
                result.diagnostics = _step_diagnostics(method, scored, pool, lengths, run["selection"])
        except Exception as err:  # one method's failure must not stop the others
            result.status = "error"
            result.error = f"{type(err).__name__}: {' '.join(str(err).split())}"[:500]
            result.traceback = traceback.format_exc()
            logger.warning("compare: %s failed: %s", label, result.error, exc_info=True)
        result.seconds = round(time.time() - t0, 2)
        result.compute_seconds = _stage_seconds(folder)
        results.append(result)
        partial.seconds = round(time.time() - start, 2)
        _write_json(partial, out)
    partial.seconds = round(time.time() - start, 2)
    partial.files = {"json": str(out / "compare.json"), "markdown": str(out / "compare.md")}
    if config.train:
        partial.files["chart"] = str(out / "compare.png")
    _write_json(partial, out)
    (out / "compare.md").write_text(render_markdown(partial), encoding="utf-8")
    if config.train:
        plot_compare(partial, out / "compare.png")
    return partial


def _eval_specs(config: CompareConfig) -> list[dict[str, Any]]:
    names = _source_names(config.eval)
    return [{"name": n, "path": p} for n, p in zip(names, config.eval, strict=True)]


def _eval_rows(path: str, config: CompareConfig) -> int:
    from .training import load_eval_dataset

    return len(load_eval_dataset(path, questions=config.eval_questions, limit=config.eval_limit))


def _lengths(pool: Any, model_name_or_path: str) -> dict[str, list[float]]:
    texts = response_texts(pool)
    chars = [float(len(t)) for t in texts]
    try:
        from .models import load_tokenizer, resolve_model_path

        tok = load_tokenizer(resolve_model_path(model_name_or_path))
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        tokens = [float(len(x)) for x in ids]
    except Exception as err:  # token counts are a nicety; characters are always there
        logger.warning("compare: no token counts (%s)", err)
        tokens = []
    return {"chars": chars, "tokens": tokens}


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def _recipe_base_args(config: CompareConfig, folder: Path, pool_dir: str) -> dict[str, Any]:
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)}
    values.update(dataset=pool_dir, output_dir=str(folder), model_name_or_path=config.model_name_or_path,
                  eval_questions=config.eval_questions, eval_limit=config.eval_limit, template=config.template,
                  score_max_length=config.score_max_length, report=config.report, resume=config.resume)
    return values


def _base_losses(config: CompareConfig, folder: Path, pool_dir: str,
                 eval_specs: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, int]]:
    """The base model's loss and the completions scored, per eval set (stages ``eval_<name>`` under
    ``output_dir/base``)."""
    from .recipes_common import RecipeArguments, StageRunner, eval_stage

    args = RecipeArguments(**_recipe_base_args(config, folder, pool_dir))
    runner = StageRunner(folder, resume=config.resume)
    losses, rows = {}, {}
    for spec in eval_specs:
        meta = eval_stage(runner, args, config.model_name_or_path, name=f"eval_{spec['name']}",
                          dataset=spec["path"], limit=config.eval_limit, base_model=False)
        losses[spec["name"]] = float(meta["loss"])
        rows[spec["name"]] = int(meta["rows"])
    return losses, rows


def _check_pool_marker(folder: Path, pool_key: str) -> None:
    """A method folder made from another pool is stale: its stages would be reused by name. Remove it."""
    marker = folder / POOL_MARKER
    if folder.exists():
        stored = json.loads(marker.read_text()).get("pool_key") if marker.is_file() else None
        if stored != pool_key:
            logger.warning("compare: %s was made from another pool; computing it again", folder)
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"pool_key": pool_key}))


def _run_simple(method: str, seed: int | None, folder: Path, pool_dir: str, k: int, config: CompareConfig,
                eval_specs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """random / longest / full with the recipes' machinery: data -> selection -> train -> eval stages."""
    from .recipes_common import RecipeArguments, StageRunner, data_stage

    args = RecipeArguments(**_recipe_base_args(config, folder, pool_dir))
    runner = StageRunner(folder, resume=config.resume)
    data = data_stage(runner, args)
    steps: list[dict[str, Any]] = {
        "random": [{"step": "random", "count": k}],
        "longest": [{"step": "longest", "count": k}],
        "full": [],
    }[method]
    return _run_selection(method, seed, folder, data, steps, config, eval_specs, runner=runner, args=args)


def _run_selection(method: str, seed: int | None, folder: Path, data: Any, steps: Sequence[Mapping[str, Any]],
                   config: CompareConfig, eval_specs: Sequence[Mapping[str, Any]], *, runner: Any = None,
                   args: Any = None) -> dict[str, Any]:
    """selection -> train -> eval stages under ``folder`` for ``steps`` over ``data`` (the pool's rows, or the
    shared scored pool). With ``config.train`` off, only the selection stage runs."""
    from .recipes_common import RecipeArguments, StageRunner, eval_stage
    from .selection import select

    if args is None:
        args = RecipeArguments(**_recipe_base_args(config, folder, str(folder)))
    runner = runner or StageRunner(folder, resume=config.resume)
    steps = [dict(s) for s in steps]
    sel_seed = config.seed if seed is None else seed
    selection, _ = runner.selection_stage("selection", lambda: select(data, steps, seed=sel_seed),
                                          params={"steps": steps, "seed": sel_seed, "input": data._fingerprint})
    if not config.train:
        return {"selection": selection, "model_dir": None, "eval": {}, "train_loss": None,
                "reused": all(i.reused for i in runner.infos)}
    model_dir, train = runner.sft_stage("train", selection.dataset, args.train_config(),
                                        model_name_or_path=args.model_name_or_path)
    losses = {}
    for spec in eval_specs:
        meta = eval_stage(runner, args, model_dir, name=f"eval_{spec['name']}", dataset=spec["path"],
                          limit=config.eval_limit, base_model=False)
        losses[spec["name"]] = float(meta["loss"])
    return {"selection": selection, "model_dir": str(model_dir), "eval": losses,
            "train_loss": train.meta.get("train_loss"), "reused": all(i.reused for i in runner.infos)}


def recipe_arguments(method: str, config: CompareConfig, folder: str | os.PathLike, pool_dir: str, pool_rows: int,
                     eval_path: str) -> Any:
    """The recipe's Arguments for one method of a comparison: the shared training and eval settings, the budget
    as the recipe's own size fields, then ``config.method_args[method]``.

    Budget mapping: ``ifd``/``cherry``: ``ifd_count``; ``mods``: a quarter of it as the k-center seed set, the
    rest as the necessity budget (seed rows are not answered again); ``instructmining``: one subset size (no size
    search on the eval set). ``ifd`` scores with ``model_name_or_path`` unless told otherwise; ``cherry`` uses
    ``min(100, pool_rows // 100)`` k-means clusters (at least 2) of 10 rows for the pre-experienced model.

    Example:
        >>> cfg = CompareConfig(pool=["a"], eval=["e.json"], budget=0.1, output_dir="/tmp/c")
        >>> args = recipe_arguments("mods", cfg, "/tmp/c/mods", "/tmp/c/pool", 600, "e.json")  # doctest: +SKIP
        >>> args.seed_count, args.necessity_count  # doctest: +SKIP
        (15, 45)
    """
    cls, _ = recipe_entry(method)
    class_name = cls.__name__
    k = config.budget_rows(pool_rows)
    values = _recipe_base_args(config, Path(folder), pool_dir)
    values["eval_dataset"] = eval_path
    options = dict((config.method_args or {}).get(method) or {})
    if method == "ifd":
        values.update(ifd_count=k, ifd_fraction=None, ifd_model_name_or_path=config.model_name_or_path)
    elif method == "cherry":
        values.update(ifd_count=k, ifd_fraction=None, n_clusters=min(100, max(2, pool_rows // 100)), per_cluster=10)
    elif method == "mods":
        seed_rows = max(1, round(k / 4))
        values.update(seed_count=seed_rows, necessity_count=max(1, k - seed_rows), necessity_skip_seed=True)
    elif method == "instructmining":
        sizes = options.get("subset_sizes") or [k]
        values.update(subset_sizes=[k])
        if len(sizes) == 1 and "grid_eval_dataset" not in options:
            # one size: nothing is chosen on the grid; its eval is a one-row formality, not a peek at the eval set
            values.update(grid_eval_dataset=eval_path, grid_eval_limit=1)
        elif "grid_eval_dataset" not in options:
            logger.warning("compare: instructmining searches %s sizes on the eval set itself; pass "
                           "method_args['instructmining']['grid_eval_dataset'] (a separate dev set) to avoid it",
                           sizes)
    if method in ("ifd", "cherry") and "ifd_fraction" in options and "ifd_count" not in options:
        values["ifd_count"] = None
    values.update(options)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise HFSelectError(f"method_args[{method!r}] has fields {class_name} does not know: {unknown}")
    return cls(**values)


def _run_recipe(method: str, folder: Path, pool_dir: str, pool_rows: int, k: int, config: CompareConfig,
                eval_specs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A recipe method through the recipe's own ``run_*`` function; other eval sets as extra stages."""
    from .recipes_common import StageRunner, eval_stage
    from .selection import SelectionResult

    _, run = recipe_entry(method)
    args = recipe_arguments(method, config, folder, pool_dir, pool_rows, eval_specs[0]["path"])
    summary = run(args)
    stage = "selection"
    if method == "instructmining":
        best = json.loads((folder / "grid" / "stage.json").read_text())["meta"]["best_size"]
        stage = f"grid_{best}_selection"
    selection = SelectionResult.load(str(folder / stage / "selection"))
    model_dir = summary["model_dir"]
    losses = {eval_specs[0]["name"]: float(summary["eval"]["loss"])}
    post = StageRunner(folder, resume=config.resume)
    for spec in eval_specs[1:]:
        meta = eval_stage(post, args, model_dir, name=f"eval_{spec['name']}", dataset=spec["path"],
                          limit=config.eval_limit, base_model=False)
        losses[spec["name"]] = float(meta["loss"])
    reused = all(v == "reused" for v in summary.get("stages", {}).values()) and all(i.reused for i in post.infos)
    return {"selection": selection, "model_dir": str(model_dir), "eval": losses,
            "train_loss": (summary.get("train") or {}).get("train_loss"), "reused": reused}


def _fill(result: MethodResult, run: Mapping[str, Any], pool: Any, lengths: Mapping[str, list[float]],
          base_loss: Mapping[str, float]) -> None:
    ids = run["selection"].row_ids
    sources = pool[SOURCE_COLUMN]
    composition: dict[str, int] = {}
    for i in ids:
        composition[sources[i]] = composition.get(sources[i], 0) + 1
    result.rows = len(ids)
    result.composition = composition
    result.mean_response_chars = _mean([lengths["chars"][i] for i in ids])
    result.mean_response_tokens = _mean([lengths["tokens"][i] for i in ids]) if lengths["tokens"] else None
    result.eval_loss = {k: round(v, 6) for k, v in run["eval"].items()}
    result.delta_vs_base = {k: round(v - base_loss[k], 6) for k, v in run["eval"].items() if k in base_loss}
    result.train_loss = run.get("train_loss")
    result.model_dir = run["model_dir"]
    result.reused = bool(run["reused"])
    result.corrupted = _corrupted(pool, ids)


def _corrupted(pool: Any, ids: Sequence[int]) -> dict[str, int]:
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


def _step_diagnostics(method: str, scored: Any, pool: Any, lengths: Mapping[str, list[float]],
                      selection: Any) -> dict[str, Any]:
    """Diagnostics of a step method: its ranking score (a preset's ``rank_column``) against response length."""
    from .selection.presets import PRESETS

    column = PRESETS[method].rank_column if method in PRESETS else None
    if column is None or scored is None or column not in scored.column_names:
        return {}
    return _score_diagnostics(column, True, scored, pool, lengths, selection)


def _diagnostics(method: str, folder: Path, pool: Any, lengths: Mapping[str, list[float]],
                 selection: Any) -> dict[str, Any]:
    """Why a method chose what it chose: its score against response length, and per source."""
    from .recipes_common import load_stage_dataset

    stage, column, higher_first = _SCORE_STAGES[method]
    try:
        scored = load_stage_dataset(folder / stage)
    except Exception as err:  # diagnostics never fail a method
        return {"error": str(err)}
    if column is None:  # MoDS: the quality backend's column
        column = next((c for c in ("quality", "judge_score") if c in scored.column_names), None)
    if column is None:
        return {}
    return _score_diagnostics(column, higher_first, scored, pool, lengths, selection)


def _score_diagnostics(column: str, higher_first: bool, scored: Any, pool: Any, lengths: Mapping[str, list[float]],
                       selection: Any) -> dict[str, Any]:
    import numpy as np

    if column not in scored.column_names or len(scored) != len(pool):
        return {}
    values = np.asarray([np.nan if v is None else float(v) for v in scored[column]], dtype=np.float64)
    ok = np.isfinite(values)
    chars = np.asarray(lengths["chars"], dtype=np.float64)
    out: dict[str, Any] = {"column": column, "scored_rows": int(ok.sum()), "higher_chosen_first": higher_first}
    if ok.sum() > 2:
        from scipy.stats import spearmanr

        out["spearman_vs_response_chars"] = round(float(spearmanr(values[ok], chars[ok]).statistic), 3)
        if lengths["tokens"]:
            tokens = np.asarray(lengths["tokens"], dtype=np.float64)
            out["spearman_vs_response_tokens"] = round(float(spearmanr(values[ok], tokens[ok]).statistic), 3)
    if column.startswith("ifd"):
        out["share_ifd_ge_1"] = round(float(np.mean(values[ok] >= 1)), 3) if ok.any() else None
    sources = np.asarray(pool[SOURCE_COLUMN], dtype=object)
    out["median_by_source"] = {str(s): round(float(np.median(values[ok & (sources == s)])), 4)
                               for s in dict.fromkeys(sources) if (ok & (sources == s)).any()}
    chosen = np.zeros(len(pool), bool)
    chosen[selection.row_ids] = True
    out["median_chosen"] = round(float(np.median(values[ok & chosen])), 4) if (ok & chosen).any() else None
    out["median_pool"] = round(float(np.median(values[ok])), 4) if ok.any() else None
    return out


def _stage_seconds(folder: Path) -> float:
    total = 0.0
    if folder.is_dir():
        for marker in folder.glob("*/stage.json"):
            try:
                total += float(json.loads(marker.read_text()).get("seconds") or 0.0)
            except (OSError, ValueError):
                continue
    return round(total, 2)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _write_json(result: CompareResult, out: Path) -> None:
    tmp = out / ".compare.json.tmp"
    tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str, allow_nan=True), encoding="utf-8")
    os.replace(tmp, out / "compare.json")


# -- the table and the chart ------------------------------------------------------------------------------------------
def _composition_text(composition: Mapping[str, float], order: Sequence[str]) -> str:
    keys = list(order) + [k for k in composition if k not in order]
    return ", ".join(f"{k} {composition.get(k, 0):g}" for k in keys)


def _corrupted_text(corrupted: Mapping[str, int]) -> str:
    share = corrupted_share(corrupted)
    if share is None:
        return "-"
    kinds = "/".join(str(corrupted.get(k, 0)) for k in ("swapped", "truncated", "emptied", "wrong"))
    return f"{100 * share:.1f}% ({kinds})"


def _g(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value or "?")


def _lengths_text(chars: float | None, tokens: float | None) -> str:
    if chars is None:
        return "-"
    return f"{chars:.0f}" + (f" / {tokens:.0f}" if tokens is not None else "")


def render_markdown(result: CompareResult, *, heading_level: int = 3) -> str:
    """The comparison table in markdown (random as mean ± sd over its seeds, with a verdict per method).

    Example:
        >>> print(render_markdown(result))  # doctest: +SKIP
    """
    h = "#" * heading_level
    trained = bool(result.base_loss) or any(m.eval_loss for m in result.methods)
    names = [e["name"] for e in result.eval_sets] if trained else []
    labelled = bool(result.pool_corrupted)
    order = list(result.pool_composition)
    stats = result.random_stats()
    cfg = result.config
    lines = [
        f"{h} Selection quality: {result.budget_rows} of {result.pool_rows} pool rows per method",
        "",
        f"Base model `{cfg.get('model_name_or_path', '?')}`; TRL SFT with the same settings for every method: "
        f"learning rate {_g(cfg.get('learning_rate'))} ({cfg.get('lr_scheduler_type', '?')}, warmup "
        f"{_g(cfg.get('warmup_steps'))}), {_g(cfg.get('num_train_epochs'))} epochs, batch "
        f"{_g(cfg.get('per_device_train_batch_size'))} x {_g(cfg.get('gradient_accumulation_steps'))} accumulation, "
        f"max_length {_g(cfg.get('max_length'))}, seed {_g(cfg.get('seed'))}, completion-only loss, the model's chat "
        "template. Metric: mean completion-token loss (lower is better) on "
        + ", ".join(f"`{e['name']}` ({e.get('rows', '?')} completions)" for e in result.eval_sets)
        + ". Verdict: the method's loss against the random subsets' mean, in their standard deviations "
          "(beats random = more than 2 sd lower).",
        "",
    ]
    if not trained:
        lines[2] = ("Selection only (train=False): what each method chose, without fine-tuning; no losses.")
    corrupt_cell = (lambda c: _corrupted_text(c)) if labelled else None
    header = ["method", "rows"]
    for n in names:
        header += [f"loss {n}", "Δ base"]
    header += [f"vs random ({n})" for n in names]
    header += ["composition (" + ", ".join(order) + ")", "mean response chars / tokens"]
    header += ["corrupted (swapped/truncated/emptied/wrong)"] if labelled else []
    header += ["time (s)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base_cells = ["base model (no training)", "0"]
    for n in names:
        base_cells += [f"{result.base_loss[n]:.4f}" if n in result.base_loss else "-", "0"]
    base_cells += ["-"] * len(names) + ["-", "-", "-"] + (["-"] if labelled else [])
    if trained:
        lines.append("| " + " | ".join(base_cells) + " |")
    pool_cells = [f"(pool: {result.pool_rows} rows)", "-"] + ["-", "-"] * len(names) + ["-"] * len(names)
    pool_cells += [_composition_text(result.pool_composition, order),
                   _lengths_text(result.pool_mean_response_chars, result.pool_mean_response_tokens)]
    pool_cells += [corrupt_cell(result.pool_corrupted)] if corrupt_cell else []
    pool_cells += ["-"]
    lines.append("| " + " | ".join(pool_cells) + " |")
    seen_random = False
    for m in result.methods:
        if m.method == "random":
            if seen_random:
                continue
            seen_random = True
            runs = [r for r in result.runs("random") if r.status == "ok"]
            if not runs:
                errors = "; ".join(r.error or "" for r in result.runs("random"))
                lines.append(f"| random | - | error: {errors} |")
                continue
            cells = [f"random (mean ± sd of {len(runs)} seeds)", f"{runs[0].rows}"]
            for n in names:
                s = stats.get(n)
                if s is None:
                    cells += ["-", "-"]
                    continue
                sd = f" ± {s['sd']:.4f}" if s["n"] > 1 else ""
                cells += [f"{s['mean']:.4f}{sd}", f"{s['mean'] - result.base_loss.get(n, float('nan')):+.4f}"]
            cells += ["(reference)"] * len(names)
            comp = {k: round(sum(r.composition.get(k, 0) for r in runs) / len(runs), 1)
                    for k in dict.fromkeys(k for r in runs for k in r.composition)}
            chars = [r.mean_response_chars for r in runs if r.mean_response_chars is not None]
            toks = [r.mean_response_tokens for r in runs if r.mean_response_tokens is not None]
            cells += [_composition_text(comp, order), _lengths_text(_mean(chars), _mean(toks) if toks else None)]
            if corrupt_cell:
                shares = [corrupted_share(r.corrupted) or 0.0 for r in runs]
                cells.append(f"{100 * sum(shares) / len(shares):.1f}% (mean)")
            cells += [f"{sum(r.compute_seconds for r in runs):.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        if m.status != "ok":
            cells = [m.label, "-"] + ["-", "-"] * len(names) + ["-"] * len(names)
            cells += [f"error: {m.error}".replace("|", "/"), "-"] + (["-"] if labelled else [])
            cells += [f"{m.compute_seconds:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells = [m.label, f"{m.rows}"]
        for n in names:
            loss = m.eval_loss.get(n)
            cells += [f"{loss:.4f}" if loss is not None else "-",
                      f"{m.delta_vs_base[n]:+.4f}" if n in m.delta_vs_base else "-"]
        cells += [result.verdict(m, n) for n in names]
        cells += [_composition_text(m.composition, order),
                  _lengths_text(m.mean_response_chars, m.mean_response_tokens)]
        cells += [corrupt_cell(m.corrupted)] if corrupt_cell else []
        cells += [f"{m.compute_seconds:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    randoms = [r for r in result.runs("random") if r.status == "ok"]
    if randoms and trained:
        lines += ["", "Random seeds: " + "; ".join(
            f"seed {r.seed}: " + ", ".join(f"{n} {r.eval_loss[n]:.4f}" for n in names if n in r.eval_loss)
            for r in randoms) + "."]
    diag = [m for m in result.methods if m.diagnostics and m.status == "ok"]
    if diag:
        lines += ["", "What the scores track (over the pool; Spearman correlation with response length, the "
                      "score's median per source, over the chosen rows and over the pool):", ""]
        for m in diag:
            d = m.diagnostics
            if "column" not in d:
                continue
            parts = [f"`{d['column']}` vs response chars ρ = {d.get('spearman_vs_response_chars', float('nan')):+.2f}"]
            if "spearman_vs_response_tokens" in d:
                parts.append(f"vs tokens ρ = {d['spearman_vs_response_tokens']:+.2f}")
            if d.get("share_ifd_ge_1") is not None:
                parts.append(f"IFD >= 1 in {100 * d['share_ifd_ge_1']:.0f}% of rows")
            parts.append("median by source " + ", ".join(f"{k} {v:.3g}" for k, v in d["median_by_source"].items()))
            if d.get("median_chosen") is not None:
                parts.append(f"chosen {d['median_chosen']:.3g} vs pool {d['median_pool']:.3g}")
            lines.append(f"- {m.label}: " + "; ".join(parts) + ".")
    total = sum(m.compute_seconds for m in result.methods)
    shared = f", {result.scores_seconds:.0f} s in the shared scoring of the pool" if result.scores_seconds else ""
    lines += ["", f"Compute: {total:.0f} s in method stages (time column: the method's stages, including scoring "
                  f"and any seed model){shared}, this run's wall time {result.seconds:.0f} s."]
    return "\n".join(lines) + "\n"


def plot_compare(result: CompareResult, path: str | os.PathLike) -> Path:
    """Bar chart of each method's eval loss per eval set, with the random mean ± sd band and the base model line.

    Example:
        >>> plot_compare(result, "compare.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [e["name"] for e in result.eval_sets]
    stats = result.random_stats()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names) + 1, 3.6), squeeze=False)
    for ax, n in zip(axes[0], names, strict=True):
        labels, values, errors, colors = [], [], [], []
        s = stats.get(n)
        if s:
            labels.append(f"random\n(n={s['n']})")
            values.append(s["mean"])
            errors.append(s["sd"] if s["n"] > 1 else 0.0)
            colors.append("#9e9e9e")
        for m in result.methods:
            if m.method == "random" or m.status != "ok" or n not in m.eval_loss:
                continue
            labels.append(m.label)
            values.append(m.eval_loss[n])
            errors.append(0.0)
            colors.append("#1f77b4" if m.method != "full" else "#2ca02c")
        x = list(range(len(values)))
        ax.bar(x, values, color=colors)
        if s and s["n"] > 1:
            ax.errorbar([0], [s["mean"]], yerr=[s["sd"]], color="black", capsize=4, lw=1.2)
        if s and s["n"] > 1:
            ax.axhspan(s["mean"] - s["sd"], s["mean"] + s["sd"], color="#9e9e9e", alpha=0.25,
                       label="random mean ± sd")
            ax.axhline(s["mean"] - 2 * s["sd"], color="#616161", ls=":", lw=1, label="random mean - 2 sd")
        if n in result.base_loss:
            ax.axhline(result.base_loss[n], color="#d62728", ls="--", lw=1, label="base model")
        shown = values + ([result.base_loss[n]] if n in result.base_loss else [])
        if shown:
            lo, hi = min(shown), max(shown)
            pad = max(1e-3, 0.15 * (hi - lo))
            ax.set_ylim(lo - pad - (max(errors) if errors else 0), hi + pad + (max(errors) if errors else 0))
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(n, fontsize=9)
        ax.set_ylabel("eval loss (lower is better)", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{result.budget_rows} of {result.pool_rows} rows per method", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def load_compare(output_dir: str | os.PathLike) -> CompareResult:
    """Read ``compare.json`` back into a :class:`CompareResult` (e.g. to re-render the table).

    Example:
        >>> print(load_compare("cmp/").markdown())  # doctest: +SKIP
    """
    path = Path(output_dir) / "compare.json"
    if not path.is_file():
        raise HFSelectError(f"{path}: no comparison there (run `hf-select compare` first).")
    data = json.loads(path.read_text(encoding="utf-8"))
    methods = [MethodResult(**m) for m in data["methods"]]
    return CompareResult(
        output_dir=data["output_dir"], config=data["config"], pool_rows=data["pool_rows"],
        pool_composition=data["pool_composition"], pool_mean_response_chars=data["pool_mean_response_chars"],
        pool_mean_response_tokens=data["pool_mean_response_tokens"], budget_rows=data["budget_rows"],
        eval_sets=data["eval_sets"], base_loss=data["base_loss"], methods=methods, seconds=data.get("seconds", 0.0),
        files=data.get("files", {}), pool_corrupted=data.get("pool_corrupted", {}),
        scores_seconds=data.get("scores_seconds", 0.0),
    )
