"""``hf-select demo``: the whole pipeline on the built-in demo dataset, offline on CPU, in minutes.

It runs the Superfiltering recipe (IFD with SmolLM2-135M-Instruct, top 10%, a 1-epoch SFT) and a small MoDS loop
(LLM-judge quality, MiniLM embeddings, k-center seed set, seed model, necessity, final SFT) on the demo rows, whose
``corruption`` column says which rows were broken on purpose, and prints how well IFD finds them: the AUROC of IFD
for ``corruption != "none"`` and the share of swapped rows (another task's answer) with IFD >= 1. Then it applies
what hf-select recommends (the preset :data:`hf_select.selection.presets.RECOMMENDED`, chosen by ``hf-select
compare`` on two pools: see the README) to the same rows at the Superfiltering subset's supervised tokens, trains it
the same way and prints its subset (corrupted share by kind) and held-out loss beside the two seed methods'.
Everything (subsets, reports, cards, models) stays in one folder; a second run reuses the finished stages.

Example:
    $ hf-select demo --output hf-select-demo
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_EMBEDDER, DEFAULT_LM
from .catalog import RECOMMENDED_PRESET as RECOMMENDED  # the presets module imports torch: not at --help


@dataclass
class DemoConfig:
    """Sizes and models of the demo. The defaults are sized for 2 CPU cores and 15 minutes: on a CPU, SmolLM2-135M
    scores about 2-4 rows a second and fine-tunes about 2 rows a second, so the fine-tuning runs are kept to a few
    dozen rows (1 epoch)."""

    output_dir: str = field(default="hf-select-demo", metadata={"help": "Folder for everything the demo writes."})
    rows: int = field(default=500, metadata={"help": "Demo rows for Superfiltering."})
    mods_rows: int = field(default=160, metadata={"help": "Demo rows for the MoDS loop (the first of the same rows)."})
    eval_rows: int = field(default=40, metadata={"help": "Clean held-out demo rows for the eval loss."})
    model_name_or_path: str = field(default=DEFAULT_LM, metadata={"help": "Scoring, judge and base model."})
    embed_model_name_or_path: str = field(default=DEFAULT_EMBEDDER, metadata={"help": "Sentence embedder (MoDS)."})
    ifd_fraction: float = field(default=0.1, metadata={"help": "Share of the rows Superfiltering keeps."})
    seed_count: int = field(default=16, metadata={"help": "MoDS k-center seed rows."})
    necessity_count: int = field(default=24, metadata={"help": "MoDS necessary rows (k-center budget)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Tokens the MoDS seed model writes per answer."})
    max_length: int = field(default=256, metadata={"help": "Tokens per row in scoring and training."})
    epochs: float = field(default=1.0, metadata={"help": "Epochs of every fine-tuning run."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of every fine-tuning run."})
    batch_size: int = field(default=8, metadata={"help": "Rows per training step."})
    resume: bool = field(default=True, metadata={"help": "Reuse the finished stages of an earlier demo run."})
    seed: int = field(default=0, metadata={"help": "Seed of the demo rows, the selection and the training."})

    def __post_init__(self) -> None:
        for name in ("rows", "mods_rows", "eval_rows", "seed_count", "necessity_count", "max_new_tokens",
                     "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DemoConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.mods_rows > self.rows:
            raise ValueError(f"DemoConfig.mods_rows ({self.mods_rows}) must be <= rows ({self.rows})")
        if not 0 < self.ifd_fraction <= 1:
            raise ValueError(f"DemoConfig.ifd_fraction must be in (0, 1], got {self.ifd_fraction}")
        if self.max_length < 32:
            raise ValueError(f"DemoConfig.max_length must be >= 32, got {self.max_length}")


def ifd_separation(scored: Any) -> dict[str, Any]:
    """How well IFD flags the corrupted demo rows: AUROC of ``ifd`` for ``corruption != "none"`` over the rows with
    an IFD, the share of swapped rows with IFD >= 1 (vs clean rows), and the rows without an IFD per corruption.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"ifd": [0.5, 0.6, 1.2, float("nan")],
        ...                         "corruption": ["none", "none", "swapped", "emptied"]})
        >>> ifd_separation(ds)["auroc"], ifd_separation(ds)["swapped_ifd_ge1"]
        (1.0, 1.0)
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    ifd = np.asarray(scored["ifd"], dtype=float)
    corruption = np.asarray(scored["corruption"], dtype=object)
    ok = np.isfinite(ifd)
    bad = corruption != "none"
    out: dict[str, Any] = {"rows": int(len(ifd)), "rows_with_ifd": int(ok.sum()),
                           "corrupted_with_ifd": int((bad & ok).sum())}
    labels = bad[ok]
    out["auroc"] = float(roc_auc_score(labels, ifd[ok])) if 0 < labels.sum() < len(labels) else None
    swapped = ok & (corruption == "swapped")
    clean = ok & ~bad
    out["swapped_ifd_ge1"] = float(np.mean(ifd[swapped] >= 1)) if swapped.any() else None
    out["clean_ifd_ge1"] = float(np.mean(ifd[clean] >= 1)) if clean.any() else None
    out["no_ifd"] = {str(k): int(((corruption == k) & ~ok).sum()) for k in sorted(set(corruption[~ok]))}
    return out


def corrupted_share(dataset: Any) -> float:
    """Share of rows whose ``corruption`` is not ``none``."""
    values = dataset["corruption"]
    return sum(v != "none" for v in values) / max(1, len(values))


def corruption_mix(dataset: Any) -> dict[str, int]:
    """Rows per ``corruption`` value, most frequent first."""
    counts: dict[str, int] = {}
    for v in dataset["corruption"]:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def run_demo(config: DemoConfig, *, echo: Any = print) -> dict[str, Any]:
    """Run both recipes and return the numbers (also written to ``<output_dir>/demo_summary.json``)."""
    from ..recipes.mods import MoDSArguments, run_mods
    from ..recipes.superfilter import SuperfilterArguments, run_superfilter
    from ..selection import SelectionResult
    from ..stages import load_stage_dataset

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    common = dict(model_name_or_path=config.model_name_or_path, template="auto", score_max_length=config.max_length,
                  max_length=config.max_length, num_train_epochs=config.epochs, learning_rate=config.learning_rate,
                  per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
                  eval_dataset=f"demo:{config.eval_rows}", seed=config.seed, resume=config.resume,
                  warmup_steps=0.1, logging_steps=5, shard_size=100)

    sf_args = SuperfilterArguments(
        dataset_name=f"demo:{config.rows}", output_dir=str(out / "superfiltering"),
        ifd_model_name_or_path=config.model_name_or_path, ifd_fraction=config.ifd_fraction, eval_base_model=True,
        **common)
    echo(f"[1/2] Superfiltering: IFD of {config.rows} demo rows with {config.model_name_or_path}, top "
         f"{config.ifd_fraction:.0%}, 1 SFT run ...")
    sf = run_superfilter(sf_args)
    scored = load_stage_dataset(out / "superfiltering" / "ifd")
    sep = ifd_separation(scored)
    sf_subset = SelectionResult.load(out / "superfiltering" / "selection" / "selection").dataset
    sep["corrupted_share_source"] = corrupted_share(scored)
    sep["corrupted_share_subset"] = corrupted_share(sf_subset)
    sep["subset_mix"] = corruption_mix(sf_subset)

    mods_args = MoDSArguments(
        dataset_name=f"demo:{config.rows}", limit=config.mods_rows, output_dir=str(out / "mods"),
        quality_backend="judge", quality_model_name_or_path=config.model_name_or_path, quality_fraction=0.5,
        embed_model_name_or_path=config.embed_model_name_or_path, seed_count=config.seed_count,
        necessity_fraction=0.5, necessity_count=config.necessity_count, necessity_max_new_tokens=config.max_new_tokens,
        necessity_skip_seed=True, eval_base_model=True, **common)
    echo(f"[2/2] MoDS: judge quality, MiniLM k-center seed ({config.seed_count}), seed model, necessity, final SFT on "
         f"{config.mods_rows} demo rows ...")
    md = run_mods(mods_args)
    mods_subset = SelectionResult.load(out / "mods" / "selection" / "selection").dataset
    sf_ids = SelectionResult.load(out / "superfiltering" / "selection" / "selection").row_ids
    echo(f"[3/3] The recommended preset ({RECOMMENDED}) on the same {config.rows} rows at the Superfiltering "
         "subset's supervised tokens, 1 SFT run ...")
    rec = recommended_run(config, sf_args, scored, sf_ids, out / "recommended")

    summary = {
        "output_dir": str(out.resolve()), "seconds": round(time.time() - start, 1),
        "superfiltering": {**_brief(sf), "ifd_separation": sep},
        "mods": {**_brief(md), "corrupted_share_source": corrupted_share(load_stage_dataset(out / "mods" / "data")),
                 "corrupted_share_subset": corrupted_share(mods_subset), "subset_mix": corruption_mix(mods_subset)},
        "recommended": rec,
        "base_model_eval_loss": (sf.get("eval") or {}).get("loss_base"),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(summary, echo)
    return summary


def recommended_run(config: DemoConfig, args: Any, scored: Any, reference_ids: list[int], folder: Path
                    ) -> dict[str, Any]:
    """The recommended preset on the demo rows ``scored`` (they carry Superfiltering's IFD columns), keeping rows in
    the preset's order until their supervised tokens reach those of the rows ``reference_ids`` (the instrument's
    equal token budget), then the same fine-tune and eval as the recipes (stages under ``folder``)."""
    from ..compare.budget import count_pool_tokens, rows_for_tokens, subset_tokens
    from ..selection import select
    from ..selection.presets import column_options, missing_scores, preset_steps
    from ..stages import StageRunner, eval_stage
    from ..training import TrainConfig

    missing = missing_scores(RECOMMENDED, scored.column_names)
    if missing:  # a preset that needs scores the demo does not make: said, not silently replaced
        return {"preset": RECOMMENDED, "skipped": f"the demo rows lack {missing}"}
    counts = count_pool_tokens(scored, config.model_name_or_path, config.max_length)
    budget = subset_tokens(reference_ids, counts)["supervised_tokens"]
    runner = StageRunner(folder, resume=config.resume)
    options, note = column_options(RECOMMENDED, scored.column_names)

    def steps(n: int) -> list[dict[str, Any]]:
        return preset_steps(RECOMMENDED, count=n, **options)

    def make() -> Any:
        rows, _ = rows_for_tokens(lambda n: select(scored, steps(n), seed=config.seed).row_ids, counts.supervised,
                                  budget, max_rows=len(scored))
        return select(scored, steps(rows), seed=config.seed)

    selection, _ = runner.selection_stage("selection", make, params={
        "preset": RECOMMENDED, "steps": steps(1), "budget_tokens": budget, "seed": config.seed,
        "input": scored._fingerprint, "max_length": config.max_length})
    model_dir, _ = runner.sft_stage("train", selection.dataset, TrainConfig.from_object(args.train_config()),
                                    model_name_or_path=config.model_name_or_path)
    meta = eval_stage(runner, args, model_dir, base_model=False) or {}
    subset = selection.dataset
    return {"preset": RECOMMENDED, "rows_in": len(scored), "rows_out": len(subset), "budget_tokens": budget,
            "supervised_tokens": subset_tokens(selection.row_ids, counts)["supervised_tokens"],
            "eval_loss": meta.get("loss"), "model": str(model_dir), "corrupted_share_subset": corrupted_share(subset),
            "subset_mix": corruption_mix(subset), "note": note}


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    ev = summary.get("eval") or {}
    return {"rows_in": summary["rows_in"], "rows_out": summary["rows_out"], "eval_loss": ev.get("loss"),
            "model": summary["model_dir"], "cards": summary["hub_folder"], "report": summary.get("report_dir"),
            "stages": summary.get("stages")}


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _print_summary(s: dict[str, Any], echo: Any) -> None:
    sf, md, sep = s["superfiltering"], s["mods"], s["superfiltering"]["ifd_separation"]
    echo("")
    echo(f"hf-select demo finished in {s['seconds']:.0f} s; everything is under {s['output_dir']}")
    echo(f"IFD vs the rows corrupted on purpose ({sep['rows_with_ifd']} of {sep['rows']} rows have an IFD; "
         f"without one: {sep['no_ifd'] or 'none'}):")
    echo(f"  AUROC of IFD for corruption != 'none': {_fmt(sep['auroc'])}")
    echo(f"  swapped rows with IFD >= 1: {_fmt(sep['swapped_ifd_ge1'], '.1%')} (clean rows: "
         f"{_fmt(sep['clean_ifd_ge1'], '.1%')})")
    echo(f"held-out loss of the base model: {_fmt(s.get('base_model_eval_loss'), '.4f')}")
    for name, r in (("Superfiltering", sf), ("MoDS", md)):
        src = sep["corrupted_share_source"] if name == "Superfiltering" else r["corrupted_share_source"]
        sub = sep["corrupted_share_subset"] if name == "Superfiltering" else r["corrupted_share_subset"]
        mix = sep["subset_mix"] if name == "Superfiltering" else r["subset_mix"]
        echo(f"{name}: {r['rows_out']} of {r['rows_in']} rows; corrupted rows {src:.1%} of the source -> "
             f"{sub:.1%} of the subset ({', '.join(f'{k}={v}' for k, v in mix.items())}); held-out loss after "
             f"fine-tuning {_fmt(r['eval_loss'], '.4f')}")
        echo(f"  model:  {r['model']}")
        echo(f"  cards:  {r['cards']}  (dataset/ and model/, ready for `hf-select push`)")
        echo(f"  report: {r['report']}")
    rec = s.get("recommended") or {}
    if rec.get("skipped"):
        echo(f"Recommended preset {rec['preset']}: not run ({rec['skipped']})")
    elif rec:
        echo(f"Recommended preset {rec['preset']} (what hf-select advises; see the README's comparison): "
             f"{rec['rows_out']} of {rec['rows_in']} rows, {rec['supervised_tokens']} supervised tokens (the "
             f"Superfiltering subset's: {rec['budget_tokens']}); corrupted rows "
             f"{sep['corrupted_share_source']:.1%} of the source -> {rec['corrupted_share_subset']:.1%} of the subset "
             f"({', '.join(f'{k}={v}' for k, v in rec['subset_mix'].items())}); held-out loss after fine-tuning "
             f"{_fmt(rec['eval_loss'], '.4f')}")
        if rec.get("note"):
            echo(f"  note:   {rec['note']}")
        echo(f"  model:  {rec['model']}")


def sizes_text(config: DemoConfig | None = None) -> str:
    """The demo's sizes in one paragraph (``hf-select demo --help`` shows it).

    Example:
        >>> sizes_text().split(";")[0]
        'Superfiltering: IFD of 500 demo rows, the top 10% kept'
    """
    c = config or DemoConfig()
    return (f"Superfiltering: IFD of {c.rows} demo rows, the top {c.ifd_fraction:.0%} kept; MoDS: {c.mods_rows} rows "
            f"(the first of the same rows), {c.seed_count} k-center seed rows, {c.necessity_count} necessary rows, "
            f"{c.max_new_tokens} generated tokens per answer; held-out loss on {c.eval_rows} clean demo rows; every "
            f"fine-tune {c.epochs:g} epoch(s) at batch {c.batch_size}, learning rate {c.learning_rate:g}, "
            f"{c.max_length} tokens per row; seed {c.seed}.")


def register(sub: Any) -> None:
    defaults = DemoConfig()
    p = sub.add_parser("demo", help="Run Superfiltering and a small MoDS loop on the built-in demo data "
                                    "(offline, CPU).",
                       description="Score, select and fine-tune on the built-in demo dataset (15% of its rows "
                                   "corrupted on purpose) with the offline default models, and print how well IFD "
                                   "finds the corrupted rows and each model's held-out loss. Sizes: "
                                   + sizes_text(defaults))
    p.add_argument("--output", default=defaults.output_dir, help="Folder for everything the demo writes.")
    p.add_argument("--rows", type=int, default=defaults.rows, help="Demo rows for Superfiltering.")
    p.add_argument("--mods-rows", type=int, default=defaults.mods_rows,
                   help="Demo rows for the MoDS loop (at most --rows).")
    p.add_argument("--model", default=defaults.model_name_or_path, help="Scoring, judge and base model.")
    p.add_argument("--embedder", default=defaults.embed_model_name_or_path, help="Sentence embedder for MoDS.")
    p.add_argument("--fresh", action="store_true", help="Recompute every stage instead of reusing earlier ones.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from ..recipes.arguments import setup_logging

    if args.verbose:
        setup_logging()
    else:
        logging.getLogger("hf_select").setLevel(logging.WARNING)
    config = DemoConfig(output_dir=args.output, rows=args.rows, mods_rows=min(args.mods_rows, args.rows),
                        model_name_or_path=args.model, embed_model_name_or_path=args.embedder, resume=not args.fresh)
    run_demo(config)
    return 0
