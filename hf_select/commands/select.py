"""``hf-select select --config select.yaml --dataset scored/ --output chosen/``: run selection steps.

The output folder is the chosen subset itself (``datasets.load_from_disk("chosen/")``), with the dropped rows in
``chosen/dropped`` and the provenance in ``chosen/provenance.json``.

``--target FILE`` (a prompts/answers file of the kind of rows wanted; never the eval set itself) feeds the
``target_similarity`` step(s): a file that already has an ``embedding`` column is used as it is, any other is
embedded here with ``--target-embedder`` (default: the offline default sentence embedder) on ``--target-text``
(default ``instruction``, what ``hf-select score embed`` embeds by default). Embed the pool with the same model and
text; a dimension mismatch is an error.

Without ``--config`` or ``--step`` it runs a preset (:mod:`hf_select.selection.presets`): ``--preset NAME``, by
default ``recommended`` (the preset the selection-quality benchmark supports best: today a random draw that keeps
each source's share, since no selection beat random on every answer style), with ``--fraction`` (default
0.1) or ``--count``; ``--list-presets`` prints every preset's steps.

Example:
    $ hf-select select --dataset scored/ --output chosen/ --target my_examples.jsonl \
        --step '{step: target_similarity, fraction: 0.1, aggregate: round_robin}'
    $ hf-select select --dataset scored/ --output chosen/ --preset recommended --count 1000
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..defaults import DEFAULT_EMBEDDER
from ..errors import HFSelectError
from ..io import load_rows
from .catalog import PRESETS, RECOMMENDED_PRESET
from .common import add_column_mapping

EXAMPLE_STEPS = """\
example select.yaml (more in examples/, every step and parameter: --list-steps or docs/STEPS.md):
  seed: 0
  steps:
    - {step: threshold, column: ifd, max: 1.0, strict: true}   # drop rows whose prompt does not help
    - {step: top, column: ifd, fraction: 0.1}                    # keep the highest IFD: 10% of the rows
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "select",
        help="Choose rows by score columns (threshold, top, ifd_rule, kcenter, ...) and save subset + provenance.",
        description="Run selection steps over a scored dataset and save the subset (a save_to_disk folder), the "
                    "dropped rows with their reasons (dropped/) and provenance.json. Steps come from --config "
                    "and --step, or a preset (--preset; with none of them: the recommended preset, "
                    f"{RECOMMENDED_PRESET}). --list-steps prints every step with its parameters.",
        epilog=EXAMPLE_STEPS,
    )
    p.add_argument("--config", default=None,
                   help="YAML file: a list of steps, or {steps: [...], seed: N} (default: no file; see --preset).")
    p.add_argument("--step", action="append", default=[], metavar="YAML",
                   help='A step inline (repeatable, after --config\'s), e.g. --step \'{step: random, count: 100}\'.')
    p.add_argument("--dataset", default=None,
                   help="Scored dataset: save_to_disk folder, json/jsonl/parquet file (required to select).")
    p.add_argument("--output", default=None,
                   help="Output folder (subset, dropped/ and provenance.json; required to select).")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="Run a preset instead of --config/--step: one of recommended, " + ", ".join(sorted(PRESETS))
                        + f" (default when no step is given: recommended = {RECOMMENDED_PRESET}).")
    p.add_argument("--fraction", type=float, default=None,
                   help="Preset budget: share of all rows (default: 0.1 unless --count is given).")
    p.add_argument("--count", type=int, default=None,
                   help="Preset budget: number of rows, instead of --fraction (default: none).")
    p.add_argument("--list-presets", action="store_true", help="Print every preset's steps and exit.")
    p.add_argument("--list-steps", nargs="*", default=None, metavar="STEP",
                   help="Print every selection step (or only the STEPs named) with its parameters, their types, "
                        "defaults and meanings, and exit (default: off).")
    p.add_argument("--seed", type=int, default=None,
                   help="Seed for the random steps (overrides the config's seed; default: the config's, else 0).")
    p.add_argument("--split", default="train", help="Split to read from a DatasetDict folder or Hub id.")
    p.add_argument("--target", default=None, metavar="FILE",
                   help="Target rows (json/jsonl/parquet file or save_to_disk folder) for the target_similarity "
                        "step(s): rows with an 'embedding' column are used as they are, others are embedded "
                        "(default: none).")
    p.add_argument("--target-embedder", default=None, metavar="MODEL",
                   help="Embedder for --target rows without embeddings (default: the offline default sentence "
                        f"embedder, {DEFAULT_EMBEDDER}); use the model the pool's embedding column was made with.")
    p.add_argument("--target-text", default="instruction", choices=("instruction", "prompt", "row", "response"),
                   help="Which text of the --target rows to embed (as EmbedConfig.text).")
    add_column_mapping(p)
    p.set_defaults(func=run)


def _with_column_mapping(steps: list[Any], mapping: dict[str, str] | None) -> list[Any]:
    """Give ``--column-mapping`` to every step that reads texts (takes ``column_mapping``) and names none itself."""
    if not mapping:
        return steps
    from ..selection.steps import STEPS

    out = []
    for step in steps:
        raw = step.to_dict() if hasattr(step, "to_dict") else step
        spec = STEPS.get(raw.get("step")) if isinstance(raw, dict) else None
        if spec is not None and "column_mapping" in spec.params and raw.get("column_mapping") is None:
            raw = {**raw, "column_mapping": dict(mapping)}
        out.append(raw)
    return out


def _list_presets() -> int:
    from ..selection.presets import PRESETS, RECOMMENDED, preset_steps

    for name, preset in sorted(PRESETS.items()):
        mark = " (recommended)" if name == RECOMMENDED else ""
        options = {"target": "TARGET_FILE"} if {"target", "lm_target"} & set(preset.needs) else {}
        print(f"{name}{mark}: {preset.summary}\n  needs scores: {', '.join(preset.needs)}")
        print("  steps (fraction 0.1): " + yaml.safe_dump(preset_steps(name, fraction=0.1, **options),
                                                          default_flow_style=True, sort_keys=False).strip())
    return 0


def _preset_steps(args: argparse.Namespace, n_rows: int, columns: Sequence[str] = ()) -> list[Any]:
    """The preset's steps for a budget of ``--count`` rows or ``--fraction`` of *all* ``n_rows`` (a preset's later
    steps see fewer rows, so the fraction becomes a row count here)."""
    import math

    from ..selection.presets import PRESETS, RECOMMENDED, column_options, missing_scores, preset_steps

    name = args.preset or "recommended"
    name = RECOMMENDED if name == "recommended" else name
    if name not in PRESETS:
        raise HFSelectError(f"--preset {name!r}: unknown preset; presets: recommended, {', '.join(sorted(PRESETS))} "
                            "(see --list-presets)")
    if args.count is not None and args.fraction is not None:
        raise HFSelectError("give --count or --fraction for the preset's budget, not both")
    if args.fraction is not None and not 0 < args.fraction <= 1:
        raise HFSelectError(f"--fraction must be in (0, 1], got {args.fraction}")
    count = args.count if args.count is not None else math.floor((args.fraction or 0.1) * n_rows + 1e-9)
    print(f"hf-select select: preset {name!r}, {count} of {n_rows} rows")
    wants_target = bool({"target", "lm_target"} & set(PRESETS[name].needs))
    if wants_target and not args.target:
        raise HFSelectError(f"preset {name!r} needs --target FILE (example rows of the kind you want)")
    missing = missing_scores(name, columns)
    if missing:
        raise HFSelectError(f"preset {name!r} reads score columns the rows lack: {'; '.join(missing)}; score them "
                            "first, or give steps (--config / --step) instead")
    if wants_target:
        steps = preset_steps(name, count=count, target="--target")
        return [{**s, "target": None} if s.get("step") == "target_similarity" else s for s in steps]
    options, note = column_options(name, columns)
    if note:
        print(f"hf-select select: {note}")
    return preset_steps(name, count=count, **options)


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


def target_embeddings(path: str, embedder: str | None = None, text: str = "instruction") -> Any:
    """The ``--target`` file's embeddings as a :class:`~hf_select.selection.TargetEmbeddings`: its ``embedding``
    column when it has one, else the rows embedded with ``embedder`` on ``text``.

    Raises:
        HFSelectError: the file is missing or empty, or no row could be embedded.

    Example:
        >>> target_embeddings("my_examples.jsonl")  # doctest: +SKIP
        TargetEmbeddings(my_examples.jsonl (20 target rows))
    """
    from ..models import DEFAULT_EMBEDDER
    from ..scoring.embed import EmbedConfig, Embedder
    from ..selection.target import TargetEmbeddings, load_target_embeddings

    rows = load_rows(path)
    if len(rows) == 0:
        raise HFSelectError(f"--target {path}: the target set has no rows.")
    if "embedding" not in rows.column_names:
        config = EmbedConfig(model_name_or_path=embedder or DEFAULT_EMBEDDER, text=text)
        rows = Embedder(config).score(rows)
        name = f"{path} embedded with {config.model_name_or_path} ({text})"
    else:
        name = path
    from ..selection.filters import embedding_matrix

    x, kept = embedding_matrix(rows, "embedding", "--target")
    if len(kept) == 0:
        raise HFSelectError(f"--target {path}: no usable row in field 'embedding' ({len(rows)} rows; check "
                            "embedding_status) -- give rows with an instruction and a response.")
    return load_target_embeddings(TargetEmbeddings(x, name=name, rows_skipped=len(rows) - len(kept)))


def _attach_target(steps: list[Any], make_target: Any) -> list[Any]:
    """Give the target (``make_target()``, built once) to every target_similarity step that names none itself."""
    raws = [step.to_dict() if hasattr(step, "to_dict") else step for step in steps]
    users = [i for i, raw in enumerate(raws) if isinstance(raw, dict) and raw.get("step") == "target_similarity"]
    if not users:
        raise HFSelectError("--target is given but no step uses it; add one, e.g. "
                            "--step '{step: target_similarity, fraction: 0.1}'")
    missing = [i for i in users if raws[i].get("target") is None]
    if missing:
        target = make_target()
        for i in missing:
            raws[i] = {**raws[i], "target": target}
    return raws


def run(args: argparse.Namespace) -> int:
    from ..selection.select import load_steps, select

    if args.list_presets:
        return _list_presets()
    if args.list_steps is not None:
        from ..step_reference import reference_text

        try:
            print(reference_text(args.list_steps), end="")
        except KeyError as err:
            raise HFSelectError(f"--list-steps: {err.args[0]}") from err
        return 0
    for flag in ("dataset", "output"):
        if not getattr(args, flag):
            raise HFSelectError(f"--{flag} is required (or --list-presets / --list-steps to see the presets / steps)")
    steps: list[Any] = []
    seed = None
    if args.preset is not None and (args.config is not None or args.step):
        raise HFSelectError("--preset replaces --config/--step; give one or the other")
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
    if args.config is None and not args.step:
        steps = _preset_steps(args, len(dataset), dataset.column_names)
    steps = _with_column_mapping(steps, getattr(args, "column_mapping", None))
    if getattr(args, "target", None):
        steps = _attach_target(steps, lambda: target_embeddings(args.target, args.target_embedder, args.target_text))
    result = select(dataset, {"steps": steps, "seed": 0 if seed is None else seed})
    result.save(out)
    print(result.provenance_markdown())
    print(f"selected {len(result.dataset):,} of {result.input_rows:,} rows -> {out} "
          f"(dropped rows: {out / 'dropped'}, provenance: {out / 'provenance.json'})")
    return 0
