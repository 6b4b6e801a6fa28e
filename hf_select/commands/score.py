"""``hf-select score NAME --dataset IN --output OUT``: add a scorer's columns to a dataset and summarise them."""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

from ..errors import HFSelectError
from ..io import OUTPUT_FORMATS, check_output_path, load_rows, save_rows
from .catalog import SCORER_FIELDS, field_default, scorer_field_names, scorer_fields_text
from .common import add_column_mapping
from .field_values import coerce_field


def _per_scorer(name: str) -> str:
    """``ifd 1024, quality 1024, ...``: a config field's default for every scorer that has the field."""
    return ", ".join(f"{s} {field_default(s, name)}" for s in sorted(SCORER_FIELDS) if name in scorer_field_names(s))


class _SetAction(argparse._AppendAction):
    """``--set FIELD=VALUE`` (repeatable); ``--set help`` prints the fields of the scorer named before it (or of
    every scorer) and exits."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if str(values).strip() == "help":
            scorer = getattr(namespace, "scorer", None)
            print(scorer_fields_text([scorer] if scorer in SCORER_FIELDS else None), end="")
            parser.exit(0)
        super().__call__(parser, namespace, values, option_string)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "score", help="Add score columns (ifd, quality, necessity, indicators, embed) to a dataset.",
        description="Add a scorer's columns to a dataset and print rows per status and the score quantiles. The "
                    "options below set fields of the scorer's config (IFDConfig, QualityConfig, ...); any other "
                    "field goes through --set FIELD=VALUE, and `hf-select score SCORER --set help` lists them all "
                    "with their types, defaults and meanings.")
    p.add_argument("scorer", choices=sorted(SCORER_FIELDS), help="Which score to compute.")
    p.add_argument("--dataset", required=True,
                   help="json/jsonl/parquet file, save_to_disk folder, Hub id, or demo:N (N built-in demo rows).")
    p.add_argument("--output", required=True, help="Output folder (save_to_disk, or a file inside for jsonl/parquet).")
    p.add_argument("--model", default=None,
                   help="Model id or folder: the config's model_name_or_path (default: "
                        + _per_scorer("model_name_or_path").replace("None", "its backend's default") + ").")
    p.add_argument("--template", default=None,
                   help="Prompt template: auto, chat, alpaca, vicuna, plain (the config's template; default: "
                        + _per_scorer("template") + ").")
    p.add_argument("--max-length", type=int, default=None,
                   help="Maximum tokens per row: the config's max_length (default: " + _per_scorer("max_length")
                        + ").")
    p.add_argument("--split", default="train", help="Split to read from a Hub id or a DatasetDict folder.")
    p.add_argument("--format", default="disk", choices=OUTPUT_FORMATS, help="Output format.")
    p.add_argument("--shard-size", type=int, default=2048, help="Rows per resumable shard.")
    p.add_argument("--limit", type=int, default=None, help="Score only the first N rows (default: all rows).")
    add_column_mapping(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="Print what the run would cost (rows, tokens with the scorer's tokenizer, forward passes, and an "
             "estimated time from timing the model's load and a few batches of rows here), then exit without "
             "writing anything.",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="Score every row afresh: remove the finished shards an earlier identical run left in the scores "
        "cache ($HF_SELECT_SCORES_DIR, default ~/.cache/hf_select/scores) instead of reusing them. The new shards "
        "are kept, so a stopped run still resumes when started again without this flag. Default: reuse, with a "
        "message saying so.",
    )
    p.add_argument(
        "--set",
        action=_SetAction,
        default=[],
        metavar="FIELD=VALUE",
        help="Any other config field (repeatable), e.g. --set reverse=true --set max_tokens_per_batch=8192; values "
             "are read as the field's type (1e-4 a float, yes/no a bool, a,b a list, YAML for a mapping). `--set "
             "help` lists the fields with types, defaults and meanings. Fields per scorer: "
             + "; ".join(f"{s}: {', '.join(scorer_field_names(s))}" for s in sorted(SCORER_FIELDS)) + ".",
    )
    p.set_defaults(func=run)


def parse_overrides(pairs: list[str], config_class: type) -> dict[str, Any]:
    """``["a=1", "b=true"]`` -> ``{"a": 1, "b": True}``, checked against the config's fields and read as their
    types (:func:`~hf_select.commands.field_values.coerce_field`: ``--set mtld_threshold=7e-1`` is a float)."""
    names = {f.name for f in dataclasses.fields(config_class)} | set(getattr(config_class, "RENAMED", {}))
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise HFSelectError(f"--set {pair!r}: expected FIELD=VALUE")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in names:
            raise HFSelectError(f"--set {key}: {config_class.__name__} has no such field; fields: {sorted(names)}")
        out[key] = coerce_field(config_class, key, value)
    return out


def summarise(dataset: Any, columns: tuple[str, ...] | list[str]) -> str:
    """Rows per status and quantiles of every numeric score column, as printable lines."""
    import numpy as np

    lines = [f"rows: {len(dataset)}"]
    for col in columns:
        if col not in dataset.column_names:
            continue
        values = dataset[col]
        if col.endswith("_status"):
            counts: dict[str, int] = {}
            for v in values:
                counts[v] = counts.get(v, 0) + 1
            lines.append(f"{col}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
        elif values and isinstance(values[0], (int, float)):
            arr = np.asarray(values, dtype=float)
            ok = arr[np.isfinite(arr)]
            if not len(ok):
                lines.append(f"{col}: no finite values")
                continue
            q = np.percentile(ok, [0, 10, 25, 50, 75, 90, 100])
            line = (
                f"{col}: n={len(ok)} min={q[0]:.4g} p10={q[1]:.4g} p25={q[2]:.4g} median={q[3]:.4g} "
                f"p75={q[4]:.4g} p90={q[5]:.4g} max={q[6]:.4g}"
            )
            if col in ("ifd", "ifd_ppl", "ifd_reverse"):
                line += f" share>=1={float(np.mean(ok >= 1)):.3f}"
            lines.append(line)
    return "\n".join(lines)


def _load(spec: str, split: str) -> Any:
    """The rows: ``demo:N`` (the built-in demo dataset, seed 0) or anything :func:`~hf_select.io.load_rows` reads."""
    if spec == "demo" or spec.startswith("demo:"):
        from ..demo import make_demo_dataset

        count = spec.split(":", 1)[1] if ":" in spec else "1000"
        if not count.isdigit() or int(count) < 1:
            raise HFSelectError(f"--dataset {spec}: demo:N takes a row count N >= 1, e.g. demo:200.")
        return make_demo_dataset(n=int(count), seed=0)
    return load_rows(spec, split=split)


def run(args: argparse.Namespace) -> int:
    from ..scoring.registry import get_scorer_classes

    config_class, scorer_class = get_scorer_classes(args.scorer)
    fields = {f.name for f in dataclasses.fields(config_class)}
    kwargs = parse_overrides(args.set, config_class)
    for flag, field in (("model", "model_name_or_path"), ("template", "template"), ("max_length", "max_length"),
                        ("column_mapping", "column_mapping")):
        value = getattr(args, flag)
        if value is not None:
            if field not in fields:
                raise HFSelectError(f"--{flag.replace('_', '-')} does not apply to the {args.scorer} scorer")
            kwargs[field] = value
    try:
        config = config_class(**kwargs)
    except (TypeError, ValueError) as err:
        raise HFSelectError(str(err)) from err
    check_output_path(args.output, args.format, inputs=(args.dataset,))  # before loading the rows or a model
    dataset = _load(args.dataset, args.split)
    if args.limit is not None:
        dataset = dataset.select(range(min(args.limit, len(dataset))))
    scorer = scorer_class(config)
    if args.dry_run:
        from ..cost import CostPlan, score_cost

        print(CostPlan(rows=len(dataset), stages=[score_cost(scorer, dataset)]).text())
        return 0
    before = set(dataset.column_names)
    scored = scorer.score(dataset, shard_size=args.shard_size, cache=not args.no_cache)
    from ..card_text import record_scorer

    # the scored columns' provenance: dataset cards read the scorer's settings back (hf_select.card_text)
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if getattr(config, f.name)
                is not None}
    record_scorer(scored, args.scorer, settings, scorer.output_columns, source=args.dataset, split=args.split)
    out = save_rows(scored, args.output, args.format, inputs=(args.dataset,))
    new_cols = [c for c in scored.column_names if c not in before or c in scorer.output_columns]
    print(summarise(scored, new_cols))
    run_info = scorer.last_run
    if run_info is not None and not run_info.reused:  # a reuse was announced by .score() itself
        print(f"scores kept in {run_info.folder} (an identical run reuses them; --no-cache scores afresh)")
    print(f"saved {len(scored)} rows to {out}")
    if not math.isfinite(len(scored)):
        return 1
    return 0
