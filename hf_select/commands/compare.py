"""``hf-select compare``: train the same model on each method's rows and on random rows of the same size, and
compare held-out losses (see :mod:`hf_select.compare`).

Example:
    $ hf-select compare --pool alpaca.json dolly.json --eval alpaca_eval_gpt4_805.json --budget 0.1 \\
        --methods random,longest,ifd --output cmp/ --set learning_rate=1e-4 --set mods.necessity_max_new_tokens=64
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..defaults import DEFAULT_LM
from ..errors import HFSelectError
from .catalog import COMPARE_METHODS
from .field_values import coerce_field


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help="Does selection beat random? Train on each method's rows and compare.",
                       description="Train the same model with the same TRL SFT settings on the rows each method "
                                   "chooses, on random rows of the same size and on the whole pool; write "
                                   "compare.json, compare.md and compare.png to --output. Exit code 1 when a "
                                   "method failed (its error is in the table), 2 on a file or option problem.")
    p.add_argument("--pool", nargs="+", required=True, metavar="FILE",
                   help="Files pooled into the rows to select from (each row keeps a 'source' column).")
    p.add_argument("--eval", nargs="+", required=True, metavar="FILE", help="Held-out eval files.")
    p.add_argument("--budget", type=float, default=None,
                   help="Rows per method: a share of the pool (< 1) or a row count (>= 1) (default: 0.1).")
    p.add_argument("--budget-tokens", type=int, default=None,
                   help="Supervised completion tokens per method, counted as the trainer sees them: each method "
                        "keeps rows in its own order until their tokens reach it (default: a row budget).")
    p.add_argument("--methods", default=None,
                   help=f"Comma-separated, any of {', '.join(COMPARE_METHODS)} (default: all but target).")
    p.add_argument("--output", required=True, help="Output folder (finished methods in it are reused).")
    p.add_argument("--model", default=None,
                   help=f"Base model fine-tuned on every subset (default: {DEFAULT_LM}).")
    p.add_argument("--pool-limit", type=int, default=None,
                   help="Use N pool rows, sampled per source (default: every row).")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="Use the first N rows of each eval set (default: every row).")
    p.add_argument("--random-seeds", type=int, default=None,
                   help="Random draws, each with its own rows and training seed; verdicts need >= 3 (default: 5).")
    p.add_argument("--eval-max-length", type=int, default=None,
                   help="Tokens per eval row, separate from training's max_length (default: 2048, capped at the "
                        "model's limit).")
    p.add_argument("--target", default=None, metavar="FILE",
                   help="Example rows of the data you want, for the target-aware methods (target, target_lm, "
                        "loss_reduction); never the eval set (default: none).")
    p.add_argument("--dev", default=None, metavar="FILE",
                   help="A dev set apart from the eval sets and the pool: every model is also scored on it (no "
                        "verdict); instructmining_fit fits its rule to it (default: none).")
    p.add_argument("--dry-run", action="store_true",
                   help="Print the plan (fine-tunes, tokens, estimated minutes from a short timing) and stop.")
    p.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="Any CompareConfig / training field (--set learning_rate=1e-4 --set max_length=512), or a recipe "
             "method's option as METHOD.FIELD=VALUE (--set mods.necessity_max_new_tokens=64).",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~hf_select.compare.CompareConfig` of the parsed command line.

    Raises:
        HFSelectError: an unknown field, a malformed ``--set`` or an invalid value (one line, naming the field).
    """
    from ..compare import RECIPES, CompareConfig, recipe_entry

    names = {f.name for f in dataclasses.fields(CompareConfig)}
    values: dict[str, Any] = {}
    method_args: dict[str, dict[str, Any]] = {}
    for pair in args.set:
        if "=" not in pair:
            raise HFSelectError(f"--set {pair!r}: expected FIELD=VALUE or METHOD.FIELD=VALUE")
        key, raw = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if "." in key:
            method, fname = key.split(".", 1)
            if method not in RECIPES:
                raise HFSelectError(f"--set {key}: {method!r} is not a recipe method; one of {sorted(RECIPES)}")
            # the value as the recipe's Arguments field types it (an unknown field is one error, naming the class)
            method_args.setdefault(method, {})[fname] = coerce_field(recipe_entry(method)[0], fname, raw, key=key)
            continue
        if key not in names:
            raise HFSelectError(f"--set {key}: CompareConfig has no such field; fields: {sorted(names)}")
        values[key] = coerce_field(CompareConfig, key, raw)
    values.update(pool=list(args.pool), eval=list(args.eval), output_dir=args.output)
    # a flag given on the command line wins over the same field in --set
    for flag, fname in (("budget", "budget"), ("methods", "methods"), ("model", "model_name_or_path"),
                        ("pool_limit", "pool_limit"), ("eval_limit", "eval_limit"),
                        ("random_seeds", "random_seeds"), ("budget_tokens", "budget_tokens"),
                        ("eval_max_length", "eval_max_length"), ("target", "target"), ("dev", "dev")):
        if getattr(args, flag, None) is not None:
            values[fname] = getattr(args, flag)
    if getattr(args, "dry_run", False):
        values["dry_run"] = True
    if method_args:
        merged = dict(values.get("method_args") or {})
        for method, options in method_args.items():
            merged[method] = {**(merged.get(method) or {}), **options}
        values["method_args"] = merged
    try:
        return CompareConfig(**values)
    except (TypeError, ValueError) as err:
        raise HFSelectError(str(err)) from err


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..compare import run_compare

    config = config_from_args(args)
    for path in [*config.pool, *config.eval]:
        if (not Path(path).exists() and not path.startswith("demo")
                and (path.count("/") != 1 or path.startswith((".", "/")))):
            raise HFSelectError(f"{path}: no such file or directory.")
    result = run_compare(config)
    if config.dry_run:
        return 0
    print(result.markdown())
    print(f"wrote {result.files.get('json')}, {result.files.get('markdown')} and {result.files.get('chart')}")
    failed = [m.label for m in result.methods if m.status != "ok"]
    if failed:
        print(f"failed: {', '.join(failed)} (errors in the table and in compare.json)")
        return 1
    return 0
