"""``hf-select select --config select.yaml --dataset scored/ --output chosen/``: run selection steps.

The output folder is the chosen subset itself (``datasets.load_from_disk("chosen/")``), with the dropped rows in
``chosen/dropped`` and the provenance in ``chosen/provenance.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from ..errors import HFSelectError
from ..io import load_rows


def register(sub: Any) -> None:
    p = sub.add_parser(
        "select",
        help="Choose rows by score columns (threshold, top, ifd_rule, kcenter, ...) and save subset + provenance.",
    )
    p.add_argument("--config", default=None, help="YAML file: a list of steps, or {steps: [...], seed: N}.")
    p.add_argument("--step", action="append", default=[], metavar="YAML",
                   help='A step inline (repeatable, after --config\'s), e.g. --step \'{step: random, count: 100}\'.')
    p.add_argument("--dataset", required=True, help="Scored dataset: save_to_disk folder, json/jsonl/parquet file.")
    p.add_argument("--output", required=True, help="Output folder (subset, dropped/ and provenance.json).")
    p.add_argument("--seed", type=int, default=None, help="Seed for the random steps (overrides the config's seed).")
    p.add_argument("--split", default="train", help="Split to read from a DatasetDict folder or Hub id.")
    p.set_defaults(func=run)


def _inline_steps(texts: list[str]) -> list[Any]:
    steps = []
    for text in texts:
        try:
            step = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise HFSelectError(f"--step {text!r}: not valid YAML/JSON ({str(err).splitlines()[0]})") from err
        if not isinstance(step, dict):
            raise HFSelectError(f"--step {text!r}: expected a mapping like '{{step: random, count: 100}}'")
        steps.append(step)
    return steps


def run(args: argparse.Namespace) -> int:
    from ..selection.select import load_steps, select

    if args.config is None and not args.step:
        raise HFSelectError("give the steps with --config select.yaml and/or --step '{step: ..., ...}'")
    steps: list[Any] = []
    seed = None
    if args.config is not None:
        steps, seed = load_steps(args.config)
    steps += _inline_steps(args.step)
    if args.seed is not None:
        seed = args.seed
    out, src = Path(args.output), Path(args.dataset)
    try:
        clash = out.resolve() == src.resolve() or src.resolve().is_relative_to(out.resolve())
    except OSError:
        clash = False
    if clash:
        raise HFSelectError(f"--output {out} would overwrite the input {src}; choose another folder.")
    dataset = load_rows(args.dataset, split=args.split)
    result = select(dataset, {"steps": steps, "seed": 0 if seed is None else seed})
    result.save(out)
    print(result.provenance_markdown())
    print(f"selected {len(result.dataset):,} of {result.input_rows:,} rows -> {out} "
          f"(dropped rows: {out / 'dropped'}, provenance: {out / 'provenance.json'})")
    return 0
