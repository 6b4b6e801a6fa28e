"""The recipes' command line: the arguments every recipe shares (:class:`RecipeArguments`, read from YAML plus flags
with ``trl.TrlParser``; an unknown key fails), the flags that reproduce a run, and the entry point a recipe script
calls (:func:`recipe_main`: parse, run, print where everything is, one-line errors).

Example:
    >>> args = parse_recipe_args(RecipeArguments, ["--dataset_name", "demo:40", "--output_dir", "/tmp/r"])
    >>> args_to_cli(args)
    ['--dataset_name', 'demo:40', '--output_dir', '/tmp/r']
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import sys
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..defaults import DEFAULT_LM
from ..errors import redact, scrub
from ..training import TrainConfig

logger = logging.getLogger(__name__)

# Old recipe field names -> the names trl's scripts use; the old ones are still read, with a FutureWarning.
RENAMED_FIELDS = {"dataset": "dataset_name", "split": "dataset_train_split"}


@dataclass
class RecipeArguments(TrainConfig):
    """Arguments every recipe shares (the training fields come from :class:`hf_select.training.TrainConfig`).

    The rows are named as in trl's scripts: ``dataset_name`` and ``dataset_train_split``. The old names ``dataset``
    and ``split`` are still read, with a ``FutureWarning``; after ``__post_init__`` they hold the same values as the
    new names (for code that reads the old ones) and :func:`args_to_cli` leaves them out.

    Example:
        >>> RecipeArguments(dataset_name="demo:50", output_dir="/tmp/x").dataset_name
        'demo:50'
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     RecipeArguments(dataset="demo:50", output_dir="/tmp/x").dataset_name
        'demo:50'
        >>> caught[0].category.__name__, str(caught[0].message)
        ('FutureWarning', 'RecipeArguments.dataset is deprecated: use dataset_name (the name trl uses)')
    """

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Rows to select from: json/jsonl/parquet/csv file, save_to_disk folder, Hub id, or "
                          "'demo' / 'demo:N' (the built-in demo dataset of N rows). trl's name; formerly 'dataset'."},
    )
    dataset_train_split: str = field(
        default="train",
        metadata={"help": "Split to read from a Hub id or a DatasetDict folder. trl's name; formerly 'split'."},
    )
    dataset_config: str | None = field(
        default=None,
        metadata={"help": "Configuration name of a Hub dataset (load_dataset(dataset_name, dataset_config)). trl's "
                          "name."},
    )
    dataset_streaming: bool = field(
        default=False,
        metadata={"help": "Stream the rows (datasets' IterableDataset): nothing is downloaded up front; the data "
                          "stage writes the rows to disk as they arrive, and scoring reads them in shards of "
                          "shard_size rows. trl's name."},
    )
    dry_run: bool = field(
        default=False,
        metadata={"help": "Print what the run would cost (rows, tokens, forward passes, the fine-tunes and an "
                          "estimated time from timing a short sample here), then stop without writing anything."},
    )
    dataset: str | None = field(
        default=None, metadata={"help": "Deprecated: the old name of dataset_name (still read, with a warning)."}
    )
    split: str | None = field(
        default=None,
        metadata={"help": "Deprecated: the old name of dataset_train_split (still read, with a warning)."},
    )
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
    eval_max_length: int = field(
        default=2048,
        metadata={"help": "Most tokens per row of the held-out loss (prompt + completion; a longer completion is "
                          "scored on the tokens that fit), separate from the training max_length, capped at the "
                          "model's limit (max_position_embeddings)."},
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
        self._read_renamed_fields()
        if not self.dataset_name:
            raise ValueError(f"{type(self).__name__}.dataset_name is required: pass --dataset_name FILE|HUB_ID|demo:N")
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
        if self.eval_max_length < 8:
            raise ValueError(f"{type(self).__name__}.eval_max_length must be >= 8, got {self.eval_max_length}: it is "
                             "the held-out loss's length limit (default 2048)")

    def _read_renamed_fields(self) -> None:
        """An old name given (and differing from the new one) moves to the new name with a warning; both given
        with different values fail. Then the old name mirrors the new one."""
        name = type(self).__name__
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for old, new in RENAMED_FIELDS.items():
            value, current = getattr(self, old), getattr(self, new)
            if value is not None and value != current:
                if current != defaults[new]:
                    raise ValueError(f"{name}.{old} is the old name of {new}; set only {new} (got {old}={value!r} "
                                     f"and {new}={current!r})")
                warnings.warn(f"{name}.{old} is deprecated: use {new} (the name trl uses)", FutureWarning,
                              stacklevel=4)
                setattr(self, new, value)
            setattr(self, old, getattr(self, new))

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The :class:`TrainConfig` part of these arguments, with overrides (e.g. ``num_train_epochs=1``)."""
        return TrainConfig.from_object(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return scrub(dataclasses.asdict(self))


def parse_recipe_args(args_class: type, argv: Sequence[str] | None = None) -> Any:
    """Parse ``--config FILE.yaml`` plus command-line overrides into ``args_class`` with ``trl.TrlParser``.

    Two dataclasses are parsed: ``args_class`` (the recipe's script arguments with the training fields of
    :class:`~hf_select.training.TrainConfig`), then ``trl.SFTConfig`` for what is left: any other ``SFTConfig``
    field, at the top level of the YAML or as a flag (``--optim adamw_torch_fused``), is checked and typed by TRL's
    parser over ``SFTConfig`` and moved into ``sft_kwargs`` (where TrainConfig validates it). A key that neither
    dataclass knows fails with a ``ValueError`` naming it.

    Example:
        >>> args = parse_recipe_args(RecipeArguments, ["--dataset_name", "demo:40", "--output_dir", "/tmp/r"])
        >>> args.dataset_name
        'demo:40'
        >>> parse_recipe_args(RecipeArguments, ["--dataset_name", "demo:40", "--output_dir", "/tmp/r",
        ...                                     "--optim", "adamw_torch_fused"]).sft_kwargs
        {'optim': 'adamw_torch_fused'}
    """
    from . import config_path

    argv = list(sys.argv[1:] if argv is None else argv)
    config_file = None
    for i, arg in enumerate(argv):  # a shipped config may be named by its stem (``--config mods_smollm2``)
        if arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = config_file = str(config_path(argv[i + 1]))
        elif arg.startswith("--config="):
            argv[i] = f"--config={config_path(arg.split('=', 1)[1])}"
    argv = _renamed_flags(argv)
    parser = _recipe_parser((args_class,), epilog=configs_epilog(args_class))
    args, from_config, from_cli = parser.parse_args_and_config(argv, return_remaining_strings=True,
                                                               separate_remaining_strings=True)
    extra = _sft_options(args_class, from_config, from_cli, config_file)
    if extra:
        given = dict(args.sft_kwargs or {})
        both = sorted(k for k in set(given) & set(extra) if given[k] != extra[k])
        if both:
            raise ValueError(f"{args_class.__name__}: {both} given both at the top level and in sft_kwargs, with "
                             "different values; set each once")
        args = dataclasses.replace(args, sft_kwargs={**given, **extra})
    return args


def _renamed_flags(argv: Sequence[str]) -> list[str]:
    """``--dataset`` / ``--split`` (and ``--dataset=...``) as ``--dataset_name`` / ``--dataset_train_split``, with a
    FutureWarning, so that they override a YAML's new names like any flag."""
    out = []
    for arg in argv:
        flag, eq, value = str(arg).partition("=")
        if flag.startswith("--") and flag[2:] in RENAMED_FIELDS:
            new = RENAMED_FIELDS[flag[2:]]
            warnings.warn(f"--{flag[2:]} is deprecated: use --{new} (the name trl uses)", FutureWarning, stacklevel=3)
            arg = f"--{new}{eq}{value}"
        out.append(arg)
    return out


def _renamed_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """A YAML's old keys (``dataset``, ``split``) as the new ones, with a FutureWarning; both set differently fail."""
    out = dict(config)
    for old, new in RENAMED_FIELDS.items():
        if old not in out:
            continue
        if new in out and out[new] != out[old]:
            raise ValueError(f"the config sets both {old} (the old name) and {new}, to different values "
                             f"({out[old]!r}, {out[new]!r}); keep only {new}")
        warnings.warn(f"the config key {old!r} is deprecated: use {new!r} (the name trl uses)", FutureWarning,
                      stacklevel=4)
        out[new] = out.pop(old)
    return out


def _recipe_parser(dataclass_types: Sequence[type], epilog: str | None = None) -> Any:
    """``trl.TrlParser`` over ``dataclass_types`` that reads a YAML's old keys as the new ones, hands argparse every
    field's help with ``%`` escaped (a help text such as "the top 10%" is text, not a format: unescaped, ``--help``
    fails), and prints ``epilog`` (the shipped configs) as written."""
    from trl import TrlParser

    class RecipeParser(TrlParser):
        @staticmethod
        def _parse_dataclass_field(parser: Any, field: dataclasses.Field) -> None:
            TrlParser._parse_dataclass_field(parser, help_escaped(field))

        def set_defaults_with_config(self, **kwargs: Any) -> list[str]:
            return super().set_defaults_with_config(**_renamed_keys(kwargs))

    return RecipeParser(dataclass_types, epilog=epilog, formatter_class=_HelpFormatter)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default (as ``HfArgumentParser`` shows it), and the epilog's lines kept as written."""


def help_escaped(f: dataclasses.Field) -> dataclasses.Field:
    """A copy of the dataclass field ``f`` whose help text (``metadata["help"]``) has every ``%`` doubled, as
    argparse reads help texts as ``%``-formats; ``f`` itself is left as it is.

    Example:
        >>> from hf_select.training import TrainConfig
        >>> f = TrainConfig.__dataclass_fields__["gradient_checkpointing"]
        >>> "~20%% slower" in help_escaped(f).metadata["help"], "~20% slower" in f.metadata["help"]
        (True, True)
    """
    text = f.metadata.get("help")
    if not isinstance(text, str) or "%" not in text:
        return f
    escaped = copy.copy(f)
    escaped.metadata = types.MappingProxyType({**f.metadata, "help": text.replace("%", "%%")})
    return escaped


def configs_epilog(args_class: type) -> str | None:
    """The end of a recipe's ``--help``: the configs shipped for it (those of ``args_class``'s recipe module), each
    by the name ``--config`` takes and its path in a checkout; None for a class outside the recipes.

    Example:
        >>> from hf_select.recipes.mods import MoDSArguments
        >>> print(configs_epilog(MoDSArguments))  # doctest: +NORMALIZE_WHITESPACE
        shipped configs (--config NAME, or a YAML file of your own):
          mods_llama3_8b     recipes/configs/mods_llama3_8b.yaml
          mods_qwen2.5_0.5b  recipes/configs/mods_qwen2.5_0.5b.yaml
          mods_smollm2       recipes/configs/mods_smollm2.yaml
        Any other trl.SFTConfig field is read too, at the top level of the YAML or as a flag (--optim adamw_torch).
    """
    from . import shipped_configs

    recipe = args_class.__module__.rsplit(".", 1)[-1]
    names = shipped_configs(recipe)
    if not names:
        return None
    width = max(map(len, names))
    lines = [f"  {name:<{width}}  recipes/configs/{name}.yaml" for name in names]
    return "\n".join(["shipped configs (--config NAME, or a YAML file of your own):", *lines,
                      "Any other trl.SFTConfig field is read too, at the top level of the YAML or as a flag "
                      "(--optim adamw_torch)."])


def _sft_options(args_class: type, from_config: Sequence[str], from_cli: Sequence[str],
                 config_file: str | None) -> dict[str, Any]:
    """The ``trl.SFTConfig`` fields among the keys and flags ``args_class`` did not take: YAML values as the YAML
    gives them, flags typed by ``TrlParser((SFTConfig,))``. Anything else fails, named."""
    from trl import SFTConfig, TrlParser

    sft_names = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
    out: dict[str, Any] = {}
    if from_config:
        import yaml

        keys = [str(k)[2:] for k in from_config[::2]]  # TrlParser hands them back as "--key", "value" pairs
        unknown = [k for k in keys if k not in sft_names]
        _check_model_config_keys(unknown, f"{config_file}: keys")
        if unknown:
            raise ValueError(f"{config_file}: keys that neither {args_class.__name__} nor trl.SFTConfig knows: "
                             f"{unknown}; remove them or fix their names (see --help)")
        with open(str(config_file)) as fh:
            values = yaml.safe_load(fh)
        out.update({k: values[k] for k in keys})
    if from_cli:
        sft_parser = TrlParser((SFTConfig,))
        namespace, unknown = sft_parser.parse_known_args(list(from_cli))
        _check_model_config_keys([str(a)[2:].split("=", 1)[0] for a in unknown if str(a).startswith("--")], "flags")
        if unknown:
            raise ValueError(f"flags that neither {args_class.__name__} nor trl.SFTConfig knows: {unknown}; remove "
                             "them or fix their names (see --help)")
        for token in from_cli:
            action = sft_parser._option_string_actions.get(str(token).split("=", 1)[0])
            if action is not None:
                out[action.dest] = getattr(namespace, action.dest)
    return out


def _check_model_config_keys(names: Sequence[str], what: str) -> None:
    """Keys that are ``trl.ModelConfig`` fields hf-select does not take (it takes
    :data:`~hf_select.training.MODEL_CONFIG_FIELDS`) fail with that said, rather than as unknown."""
    from trl import ModelConfig

    from ..training import MODEL_CONFIG_FIELDS

    other = {f.name for f in dataclasses.fields(ModelConfig)} - set(MODEL_CONFIG_FIELDS)
    found = [n for n in names if n in other]
    if found:
        raise ValueError(f"{what} {found} are trl.ModelConfig fields that hf-select does not take; it takes "
                         f"{list(MODEL_CONFIG_FIELDS)} (and model_name_or_path): remove them")


def args_to_cli(args: Any) -> list[str]:
    """The command-line flags that reproduce ``args``: every field that differs from its default (by its current
    name: the old names in :data:`RENAMED_FIELDS` only mirror the new ones).

    Example:
        >>> args_to_cli(RecipeArguments(dataset_name="demo:40", output_dir="/tmp/r", limit=10))
        ['--dataset_name', 'demo:40', '--limit', '10', '--output_dir', '/tmp/r']
    """
    out: list[str] = []
    inactive = set(getattr(args, "inactive_fields", lambda: ())())  # settings that did not apply (e.g. a threshold)
    for f in dataclasses.fields(args):
        if f.name in RENAMED_FIELDS and RENAMED_FIELDS[f.name] in args.__dataclass_fields__:
            continue
        value = getattr(args, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if value == default or f.name in inactive:
            continue
        if isinstance(value, list) and value and all(isinstance(x, (str, int, float)) for x in value):
            out += [f"--{f.name}", *(redact(str(x)) for x in value)]  # a list field is nargs="+" in TrlParser
            continue
        if isinstance(value, (dict, list)):
            text = json.dumps(scrub(value))
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
        out += [f"--{f.name}", redact(text)]
    return out



class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a record is emitted, not the stream it was
    created with (a recipe run in-process, e.g. from a test or a notebook, must not keep a closed stream)."""

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


def setup_logging() -> None:
    """Progress of the stages on stderr (main process only), for the recipe scripts."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    log = logging.getLogger("hf_select")
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[hf-select] %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


# -- small helpers the recipes share ----------------------------------------------------------------------------------
class IFDRuleFields:
    """What the Superfiltering and Cherry arguments share about their IFD rule (both declare ``ifd_layout``,
    ``ifd_count``, ``ifd_fraction`` and ``consistency_gate``, with their own defaults and help): one check and the
    Reproduce line's inactive fields."""

    IFD_LAYOUTS: tuple[str, ...] = ()

    def check_ifd_rule(self) -> None:
        """A known ``ifd_layout``; a count replaces the share; exactly one of them; a gate quantile in (0, 1)."""
        name = type(self).__name__
        if self.ifd_layout not in self.IFD_LAYOUTS:
            raise ValueError(f"{name}.ifd_layout must be one of {self.IFD_LAYOUTS}, got {self.ifd_layout!r}")
        if self.ifd_count is not None:
            self.ifd_fraction = None
        check_count_or_fraction(self, "ifd_count", "ifd_fraction")
        if self.consistency_gate is not None and not 0 < float(self.consistency_gate) < 1:
            raise ValueError(f"{name}.consistency_gate must be a quantile in (0, 1) (0.5 = the median reverse IFD), "
                             f"or null for no gate; got {self.consistency_gate!r}")

    def inactive_fields(self) -> set[str]:
        """Fields that did not apply to this run (the share when a count was given), left out of the card's
        Reproduce line."""
        return {"ifd_fraction"} if self.ifd_count is not None else set()


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



def recipe_main(args_class: type, run: Callable[[Any], dict[str, Any]], argv: Sequence[str] | None = None) -> int:
    """The command-line entry of a recipe script: parse (YAML + flags), run, print where everything is.

    A problem the user can fix (a missing file, a bad value, no token for the push) is printed as one line starting
    with ``hf-select: error:`` (exit code 2), never with a traceback; a token is never printed.
    """
    from ..errors import print_user_error

    setup_logging()
    try:
        args = parse_recipe_args(args_class, argv)
    except (ValueError, TypeError, OSError) as err:  # the YAML or a flag: the message names the field
        print(f"hf-select: error: {redact(' '.join(str(err).split()))}", file=sys.stderr)
        return 2
    try:
        summary = run(args)
    except Exception as err:
        if print_user_error(err):
            return 2
        raise
    if int(os.environ.get("RANK", "0")) == 0 and "dry_run" not in summary:  # a dry run printed its plan
        print_summary(summary)
    return 0
