"""The recipes' command line: the arguments every recipe shares (:class:`RecipeArguments`, read from YAML plus flags
with ``trl.TrlParser``; an unknown key fails), the flags that reproduce a run, and the entry point a recipe script
calls (:func:`recipe_main`: parse, run, print where everything is, one-line errors).

Example:
    >>> args = parse_recipe_args(RecipeArguments, ["--dataset", "demo:40", "--output_dir", "/tmp/r"])
    >>> args_to_cli(args)
    ['--dataset', 'demo:40', '--output_dir', '/tmp/r']
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import redact, scrub
from ..models import DEFAULT_LM
from ..training import TrainConfig

logger = logging.getLogger(__name__)


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

    from . import config_path

    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):  # a shipped config may be named by its stem (``--config mods_smollm2``)
        if arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = str(config_path(argv[i + 1]))
        elif arg.startswith("--config="):
            argv[i] = f"--config={config_path(arg.split('=', 1)[1])}"
    parser = TrlParser((args_class,))
    (args,) = parser.parse_args_and_config(argv)
    return args



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



def recipe_main(args_class: type, run: Callable[[Any], dict[str, Any]], argv: Sequence[str] | None = None) -> int:
    """The command-line entry of a recipe script: parse (YAML + flags), run, print where everything is.

    A problem the user can fix (a missing file, a bad value, no token for the push) is printed as one line starting
    with ``hf-select: error:`` (exit code 2), never with a traceback; a token is never printed.
    """
    from ..errors import user_error_message

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
