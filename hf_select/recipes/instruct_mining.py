"""InstructMining (arXiv 2307.06290): indicators per row (reward, lengths, perplexity, MTLD, KNN-6 distance) ->
the linear rule (the published one, or a fitted rule from a JSON file) ranks the rows -> the top rows at several
subset sizes -> SFT and held-out loss of each (a small grid: the paper searches the size, observing double descent)
-> keep the best size -> held-out loss on the eval set -> cards.

    accelerate launch recipes/instruct_mining.py --config recipes/configs/instruct_mining_smollm2.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/instruct_mining.py \
        --config recipes/configs/instruct_mining_qwen2.5_0.5b.yaml

Stages (each a folder under output_dir, reused when the run is started again): data, embed, indicators, rule, and
per size N: grid_N_selection, grid_N_train, grid_N_eval; then grid, eval, report, hub. In Python:
``run_instruct_mining(InstructMiningArguments(...))``.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_select.models import DEFAULT_EMBEDDER
from hf_select.recipes.arguments import RecipeArguments, recipe_main
from hf_select.recipes.finish import finish_recipe
from hf_select.stages import StageRunner, data_stage, eval_stage, score_stage

logger = logging.getLogger(__name__)

QUALITY_BACKENDS = ("judge", "reward")


@dataclass
class InstructMiningArguments(RecipeArguments):
    """Arguments of the InstructMining recipe (plus the shared recipe and training fields)."""

    rule: str = field(
        default="instructmining",
        metadata={"help": "The ranking rule: a preset name ('instructmining', the published rule) or a JSON file "
                          "written by InstructMiningRule.to_json (e.g. a rule fitted with fit_rule)."},
    )
    subset_sizes: list[int] = field(
        default_factory=lambda: [1000, 2000, 4000],
        metadata={"help": "Subset sizes tried (the top-ranked rows); the one with the lowest held-out loss wins."},
    )
    grid_eval_dataset: str | None = field(
        default=None, metadata={"help": "Eval set that picks the size (default: eval_dataset)."}
    )
    grid_eval_limit: int | None = field(default=None, metadata={"help": "Rows of the grid eval set (default: all)."})
    quality_backend: str = field(
        default="judge", metadata={"help": f"One of {QUALITY_BACKENDS}: the indicator ind_reward's scorer."}
    )
    quality_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Quality model (default: SmolLM2 judge, or OpenAssistant's reward model)."}
    )
    indicator_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Causal LM for token counts and perplexity (default: model_name_or_path)."}
    )
    embed_model_name_or_path: str = field(
        default=DEFAULT_EMBEDDER, metadata={"help": "Sentence embedder for the KNN-6 indicator."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quality_backend not in QUALITY_BACKENDS:
            raise ValueError(f"InstructMiningArguments.quality_backend must be one of {QUALITY_BACKENDS}, "
                             f"got {self.quality_backend!r}")
        sizes = [int(s) for s in self.subset_sizes]
        if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
            raise ValueError(f"InstructMiningArguments.subset_sizes must be distinct sizes >= 1, got {sizes}")
        self.subset_sizes = sorted(sizes)
        if not (self.grid_eval_dataset or self.eval_dataset):
            raise ValueError("InstructMiningArguments: the size search needs an eval set: set eval_dataset "
                             "(or grid_eval_dataset)")
        if self.grid_eval_limit is not None and self.grid_eval_limit < 1:
            raise ValueError(f"InstructMiningArguments.grid_eval_limit must be >= 1, got {self.grid_eval_limit}")


def load_rule(spec: str) -> Any:
    """A preset name or a JSON rule file."""
    from hf_select.scoring.rule import InstructMiningRule

    if Path(spec).is_file():
        return InstructMiningRule.from_json(spec)
    return InstructMiningRule.preset(spec)


def scorers(args: InstructMiningArguments) -> tuple[Any, Any]:
    """The instruction embedder (KNN-6 needs the embeddings) and the indicator scorer."""
    from hf_select.scoring.embed import EmbedConfig, Embedder
    from hf_select.scoring.indicators import IndicatorConfig, IndicatorScorer
    from hf_select.scoring.quality import QualityConfig

    embedder = Embedder(EmbedConfig(model_name_or_path=args.embed_model_name_or_path, text="instruction",
                                    column_mapping=args.column_mapping))
    quality = QualityConfig(backend=args.quality_backend, model_name_or_path=args.quality_model_name_or_path,
                            max_length=args.score_max_length, column_mapping=args.column_mapping)
    indicators = IndicatorScorer(IndicatorConfig(
        model_name_or_path=args.indicator_model_name_or_path or args.model_name_or_path, template=args.template,
        max_length=args.score_max_length, quality=quality, column_mapping=args.column_mapping))
    return embedder, indicators


def plan(args: InstructMiningArguments, n_rows: int) -> list[Any]:
    """The dry run's stages: embeddings and indicators of every row, then one fine-tune per subset size."""
    from hf_select.cost import PlannedStage

    embedder, indicators = scorers(args)
    return [PlannedStage("embed", n_rows, scorer=embedder), PlannedStage("indicators", n_rows, scorer=indicators),
            *(PlannedStage(f"grid_{size}_train", min(size, n_rows), model=args.model_name_or_path,
                           train=args.train_config()) for size in args.subset_sizes)]


def run_instruct_mining(args: InstructMiningArguments) -> dict[str, Any]:
    """Run the recipe (or, with ``dry_run``, print its cost); returns the summary (also in
    ``<output_dir>/summary.json``)."""
    from hf_select.callbacks import SelectionProvenanceCallback
    from hf_select.scoring.rule import PRED_COLUMN
    from hf_select.selection import SelectionResult, select

    if args.dry_run:
        from hf_select.recipes.dry_run import recipe_dry_run

        return recipe_dry_run(args, plan)
    runner = StageRunner(args.output_dir, resume=args.resume, cpu=args.cpu)
    data = data_stage(runner, args)
    rule = load_rule(args.rule)
    rule_note = None
    if args.rule in rule.PRESETS:
        rule_note = (f"the published rule {args.rule!r} was fitted on the paper's own indicator models; here it reads "
                     "indicators from other models, on other scales, so it ranks rows and its predicted loss is not "
                     "a loss estimate (fit a rule on your own fine-tunes: hf-select compare --methods ... "
                     "instructmining_fit --dev DEV)")
        logger.warning("instruct_mining: %s", rule_note)

    # 1. indicators (KNN-6 needs the embeddings first), 2. the rule's predicted loss per row
    embedder, indicators = scorers(args)
    embedded = score_stage(runner, "embed", embedder, data, args)
    with_ind = score_stage(runner, "indicators", indicators, embedded, args)
    ranked, _ = runner.dataset_stage("rule", lambda: rule.apply(with_ind), params={"rule": rule.to_dict()})

    # 3. the grid: the top rows at each size, fine-tuned and evaluated
    grid: list[dict[str, Any]] = []
    results: dict[int, tuple[SelectionResult, Path]] = {}
    for size in args.subset_sizes:
        steps = [{"step": "top", "column": PRED_COLUMN, "count": size, "descending": False}]
        sel, _ = runner.selection_stage(f"grid_{size}_selection", lambda steps=steps: select(ranked, steps),
                                        params={"steps": steps}, pool=ranked)
        callback = SelectionProvenanceCallback(sel, method="instruct_mining")
        model_dir, train = runner.sft_stage(f"grid_{size}_train", sel.dataset, args.train_config(),
                                            model_name_or_path=args.model_name_or_path, callbacks=[callback])
        ev = eval_stage(runner, args, model_dir, name=f"grid_{size}_eval",
                        dataset=args.grid_eval_dataset or args.eval_dataset,
                        limit=args.grid_eval_limit if args.grid_eval_dataset else args.eval_limit, base_model=False)
        grid.append({"size": size, "rows": len(sel), "eval_loss": ev["loss"],
                     "train_loss": train.meta.get("train_loss"), "model_dir": str(model_dir)})
        results[size] = (sel, model_dir)
    best = min(grid, key=lambda g: (g["eval_loss"], g["size"]))

    def write_grid(folder: Path) -> dict[str, Any]:
        if runner.is_main:
            (folder / "grid.json").write_text(json.dumps(grid, indent=2))
        return {"best_size": best["size"], "best_eval_loss": best["eval_loss"]}

    runner.run("grid", write_grid, params={"grid": grid})
    selection, model_dir = results[best["size"]]
    extra = [{"name": f"grid size {g['size']}", "description": f"held-out loss {g['eval_loss']:.4f} "
              f"({'chosen' if g is best else 'not chosen'}; {g['model_dir']})"} for g in grid]
    if rule_note:
        extra.append({"name": "rule", "description": rule_note})
    train_meta = {"train_loss": best["train_loss"], "grid": grid}
    return finish_recipe(runner, args, method="instruct_mining", scored=ranked, selection=selection,
                         model_dir=model_dir, train_meta=train_meta,
                         score_columns=[PRED_COLUMN, *[c for c in rule.columns if c in ranked.column_names]],
                         extra_models=extra, recipe="instruct_mining")


def main(argv: list[str] | None = None) -> int:
    return recipe_main(InstructMiningArguments, run_instruct_mining, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
