"""The configuration of a comparison: :class:`CompareConfig` (what to compare and how, validated when built), the
method names, and the recipe arguments every method shares (:func:`recipe_args`).

Example:
    >>> from hf_select.compare import CompareConfig
    >>> cfg = CompareConfig(pool=["a.json"], eval=["e.json"], budget=0.1, methods="random,ifd", output_dir="/tmp/c")
    >>> cfg.methods, cfg.budget_rows(14_000)
    (['random', 'ifd'], 1400)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_EMBEDDER, DEFAULT_LM
from ..training import TrainConfig
from .fitted import FITTED_METHODS

BASE_METHODS = ("random", "longest", "random_per_source", "longest_per_source", "ifd", "cherry", "mods",
                "instructmining", "full")
METHODS = BASE_METHODS + ("superfiltering", "ifd_gated", "ifd_length", "ifd_quota", "fusion", "longest_gated",
                          "longest_diverse", "kcenter_length", "target", "target_lm", "loss_reduction",
                          *FITTED_METHODS)
# methods that read CompareConfig.target (marked apart from blind methods in the table)
TARGET_METHODS = ("target", "target_lm", "loss_reduction")
# they need a target set, or a dev set and the other methods' fine-tunes
DEFAULT_METHODS = tuple(m for m in METHODS if m not in TARGET_METHODS and m not in FITTED_METHODS)
# baselines without scores: selection -> train -> eval over the pool's rows
SIMPLE_METHODS = ("random", "longest", "random_per_source", "longest_per_source", "full")
EVAL_OVERLAP_CHOICES = ("drop", "error")
# method -> its recipe module in hf_select.recipes
RECIPES = {"ifd": "superfilter", "cherry": "cherry", "mods": "mods", "instructmining": "instruct_mining"}
# Recipe fields that the comparison sets itself: the same for every method, so not per-method options.
OWNED_RECIPE_FIELDS = (
    "dataset_name", "dataset_train_split", "dataset", "split", "limit", "output_dir", "model_name_or_path",
    "eval_dataset", "eval_questions", "eval_limit", "eval_base_model", "resume", "push_to_hub",
    "hub_dataset_id", "hub_model_id",
)


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
        default=0.1,
        metadata={"help": "Rows each method keeps: a share of the pool (< 1) or a number of rows (>= 1); unused when "
                          "budget_tokens is set."},
    )
    budget_tokens: int | None = field(
        default=None,
        metadata={"help": "Supervised completion tokens each method keeps (counted as the trainer sees them: chat "
                          "template applied, cut at max_length): rows are kept in the method's own order until "
                          "their tokens reach it. Replaces the row budget; recipe methods take rows only."},
    )
    methods: list[str] = field(
        default_factory=lambda: list(DEFAULT_METHODS),
        metadata={"help": f"Methods to compare, any of {METHODS} or a step_methods name (a list or a "
                          "comma-separated string); default: all but 'target', which needs a target set."},
    )
    random_seeds: int = field(
        default=5,
        metadata={"help": "Random draws (seeds seed, seed+1, ...): each draws its rows and trains with its own seed, "
                          "so their spread holds both; verdicts need >= 3."},
    )
    repeat_methods: list[str] = field(
        default_factory=list,
        metadata={"help": "Methods trained again with repeat_seeds training seeds (seed, seed+1, ...), judged by "
                          "their mean and shown with their own spread (e.g. the recommended preset)."},
    )
    repeat_seeds: int = field(default=3, metadata={"help": "Training seeds of each repeat_methods method."})
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
    eval_max_length: int = field(
        default=2048,
        metadata={"help": "Tokens per eval row (prompt + answer), separate from training's max_length and capped at "
                          "the model's limit: the held-out loss reads whole answers."},
    )
    eval_overlap: str = field(
        default="drop",
        metadata={"help": "Pool rows whose prompt is an eval row's prompt: 'drop' them from the pool (counted per "
                          "eval set in the table) or stop with an 'error'."},
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
                          "'top', 'column': 'quality', 'count': 'budget'}]} ('budget' = the row budget); a "
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
    dev: str | None = field(
        default=None,
        metadata={"help": "A dev set (rows with responses) that methods may be tuned on, apart from the eval sets: "
                          "every trained model is also scored on it (shown apart, never in a verdict); "
                          "'instructmining_fit' fits its rule to the dev losses and the instructmining recipe's size "
                          "search picks on it. It must ask none of the eval sets' or the pool's questions."},
    )
    score_dtype: str = field(
        default="auto", metadata={"help": "dtype of the shared scoring passes: auto | bfloat16 | float32."}
    )
    quality_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Reward model of the shared quality score (column quality; default: the LLM judge)."},
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

    dry_run: bool = field(
        default=False,
        metadata={"help": "Print the plan (fine-tunes, tokens, estimated minutes from a short timing) and stop "
                          "before any scoring or training."},
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
        targeted = [m for m in self.methods if m in TARGET_METHODS]
        if targeted and not self.target:
            raise ValueError(f"{name}.target is required by {targeted}: a file of example rows of the kind you want "
                             "(never the eval set itself)")
        fitted = [m for m in self.methods if m in FITTED_METHODS]
        if fitted and not self.dev:
            raise ValueError(f"{name}.dev is required by {fitted}: a file of rows with responses, apart from the eval "
                             "sets and the pool, whose losses the rule is fitted to")
        if fitted and not self.train:
            raise ValueError(f"{name}.train=False: {fitted} fits its rule on the other methods' fine-tunes; leave it "
                             "out or train")
        if isinstance(self.budget, bool) or not self.budget > 0:
            raise ValueError(f"{name}.budget must be a share in (0, 1) or a row count >= 1, got {self.budget!r}")
        if self.budget_tokens is not None:
            if isinstance(self.budget_tokens, bool) or int(self.budget_tokens) != self.budget_tokens \
                    or self.budget_tokens < 1:
                raise ValueError(f"{name}.budget_tokens must be a whole number of tokens >= 1, got "
                                 f"{self.budget_tokens!r}")
            self.budget_tokens = int(self.budget_tokens)
            recipes = [m for m in self.methods if m in RECIPES]
            if recipes:
                raise ValueError(f"{name}.budget_tokens applies to the baselines and the step methods; {recipes} "
                                 "take a row budget (their recipes train inside): leave them out, or compare their "
                                 "presets (ifd -> superfiltering) or a row budget")
        if self.eval_overlap not in EVAL_OVERLAP_CHOICES:
            raise ValueError(f"{name}.eval_overlap must be one of {EVAL_OVERLAP_CHOICES}, got {self.eval_overlap!r}")
        if self.eval_max_length < 8:
            raise ValueError(f"{name}.eval_max_length must be >= 8, got {self.eval_max_length}")
        self.repeat_methods = _as_list(self.repeat_methods)
        bad = [m for m in self.repeat_methods if m not in self.methods or m in ("random", "full")]
        if bad:
            raise ValueError(f"{name}.repeat_methods {bad}: each must be one of the compared methods other than "
                             "random (drawn random_seeds times already) and full")
        if self.repeat_seeds < 1:
            raise ValueError(f"{name}.repeat_seeds must be >= 1, got {self.repeat_seeds}")
        if self.budget >= 1:
            if float(self.budget) != int(self.budget):
                raise ValueError(f"{name}.budget >= 1 is a row count and must be a whole number, got {self.budget}")
            self.budget = int(self.budget)
        if not self.output_dir:
            raise ValueError(f"{name}.output_dir is required: the folder the comparison writes to")
        for fname in ("random_seeds", "pool_limit", "eval_limit", "target_limit"):
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
            owned = sorted((set(options) & train_fields) | (set(options) & set(OWNED_RECIPE_FIELDS)))
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


def run_seeds(config: CompareConfig, method: str) -> list[int | None]:
    """The runs of one method: a seed per random draw (rows and training), the training seeds of a repeated
    method (its first run keeps the comparison's seed and folder: None), else one run (None).

    Example:
        >>> cfg = CompareConfig(pool=["a"], eval=["e"], output_dir="/tmp/c", methods="random,longest,fusion",
        ...                     random_seeds=3, repeat_methods=["longest"], seed=7)
        >>> run_seeds(cfg, "random"), run_seeds(cfg, "longest"), run_seeds(cfg, "fusion")
        ([7, 8, 9], [None, 8, 9], [None])
    """
    if method == "random":
        return [config.seed + i for i in range(config.random_seeds)]
    if method in config.repeat_methods:
        return [None] + [config.seed + i for i in range(1, config.repeat_seeds)]
    return [None]


def recipe_base_args(config: CompareConfig, folder: str | os.PathLike, pool_dir: str) -> dict[str, Any]:
    """The recipe argument values every method of ``config`` shares: the training fields, the pool folder as the
    dataset, ``folder`` as the output, and the comparison's model, eval, scoring and resume settings.

    Example:
        >>> cfg = CompareConfig(pool=["a"], eval=["e"], output_dir="/tmp/c", score_max_length=256)
        >>> values = recipe_base_args(cfg, "/tmp/c/longest", "/tmp/c/pool/data")
        >>> values["dataset_name"], values["output_dir"], values["score_max_length"], values["learning_rate"]
        ('/tmp/c/pool/data', '/tmp/c/longest', 256, 0.0001)
    """
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)}
    values.update(dataset_name=pool_dir, output_dir=str(Path(folder)), model_name_or_path=config.model_name_or_path,
                  eval_questions=config.eval_questions, eval_limit=config.eval_limit,
                  eval_max_length=config.eval_max_length, template=config.template,
                  score_max_length=config.score_max_length, report=config.report, resume=config.resume)
    return values


def recipe_args(config: CompareConfig, folder: str | os.PathLike, pool_dir: str) -> Any:
    """:class:`~hf_select.recipes.arguments.RecipeArguments` of :func:`recipe_base_args` (for the comparison's own
    stages: the pool's data, the shared scores, the simple methods, the base model's evals)."""
    from ..recipes.arguments import RecipeArguments

    return RecipeArguments(**recipe_base_args(config, folder, pool_dir))


def _load_mapping(value: str, name: str) -> dict[str, Any] | None:
    """A mapping from a YAML/JSON string or a path to a YAML/JSON file."""
    import yaml

    from ..commands.field_values import load_yaml

    text = value
    if value.strip() and Path(value).is_file():
        text = Path(value).read_text(encoding="utf-8")
    try:
        loaded = load_yaml(text) if text.strip() else None
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

