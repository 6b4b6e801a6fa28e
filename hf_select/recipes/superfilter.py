"""Superfiltering (ACL'24): IFD scored with a small model -> IFD rule -> optional facility location on sentence
embeddings -> SFT of the final model -> held-out loss -> cards.

By default the scores and the rule are the paper's code's own: IFD with ``IFDConfig(layout="superfiltering")`` (its
plain prompt, the response alone in the direct pass, prompt + response tokenized as one text, its truncation), ranked
by the perplexity ratio ``ifd_ppl``; the rule drops ``ifd_ppl >= 1`` and keeps ``ifd_fraction`` x *all* rows
(``ifd_rule(of="all")``). ``ifd_layout: hf_select`` scores with the ``template`` and the project's layout instead.

    accelerate launch recipes/superfilter.py --config recipes/configs/superfilter_smollm2.yaml
    python recipes/superfilter.py --config recipes/configs/superfilter_gpt2_llama3.2_1b.yaml --output_dir runs/sf

Stages (each a folder under output_dir, reused when the run is started again): data, ifd, [embed], selection,
train, eval, report, hub. In Python: ``run_superfilter(SuperfilterArguments(...))``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

from hf_select.card_text import DATASET_PLACEHOLDER
from hf_select.models import DEFAULT_EMBEDDER, DEFAULT_LM
from hf_select.recipes.arguments import IFDRuleFields, RecipeArguments, recipe_main
from hf_select.recipes.finish import finish_recipe
from hf_select.selection.gates import median_gate_step
from hf_select.stages import StageRunner, data_stage, score_stage

IFD_COLUMNS = ("ifd", "ifd_ppl")
IFD_LAYOUTS = ("superfiltering", "hf_select")


@dataclass
class SuperfilterArguments(IFDRuleFields, RecipeArguments):
    """Arguments of the Superfiltering recipe (plus the shared recipe and training fields)."""

    IFD_LAYOUTS = IFD_LAYOUTS  # not a field: no annotation

    ifd_model_name_or_path: str = field(
        default=DEFAULT_LM, metadata={"help": "Small causal LM that scores IFD (the paper: GPT-2)."}
    )
    ifd_layout: str = field(
        default="superfiltering",
        metadata={"help": f"IFD token layout, one of {IFD_LAYOUTS}: 'superfiltering' = the paper's code exactly (its "
                          "plain prompt; `template` is not used), 'hf_select' = `template` and the project's layout."},
    )
    ifd_column: str = field(
        default="ifd_ppl",
        metadata={"help": f"Rank by one of {IFD_COLUMNS}: perplexity ratio (Superfiltering) or loss ratio (Cherry)."},
    )
    ifd_fraction: float | None = field(
        default=0.1, metadata={"help": "Share of all rows (scored or not, as Superfiltering counts) kept by the IFD "
                                       "rule (or give ifd_count)."}
    )
    ifd_count: int | None = field(default=None, metadata={"help": "Rows kept by the IFD rule (instead of a share)."})
    consistency_gate: float | None = field(
        default=None,
        metadata={"help": "Before the IFD rule, drop rows whose reverse IFD (how little the response helps predict "
                          "its instruction) is above this quantile of the rows (0.5 = the median); scores reverse IFD "
                          "too. Off by default: the paper has no such step. On the demo rows reverse IFD < 1 removed "
                          "nothing, the median gate took the corrupted share of the top 10% from 58% to 8-14% "
                          "(benchmarks/RESULTS.md)."},
    )
    diversity: bool = field(
        default=False, metadata={"help": "Then pick a diverse subset of the top-IFD rows with facility location."}
    )
    diversity_count: int | None = field(
        default=None, metadata={"help": "Rows facility location keeps (default: half of the IFD rule's rows)."}
    )
    embed_model_name_or_path: str = field(
        default=DEFAULT_EMBEDDER, metadata={"help": "Sentence embedder for facility location."}
    )
    embed_text: str = field(default="row", metadata={"help": "Text embedded: row (the paper), instruction, prompt."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ifd_column not in IFD_COLUMNS:
            raise ValueError(f"SuperfilterArguments.ifd_column must be one of {IFD_COLUMNS}, got {self.ifd_column!r}")
        self.check_ifd_rule()
        if self.diversity_count is not None and self.diversity_count < 1:
            raise ValueError(f"SuperfilterArguments.diversity_count must be >= 1, got {self.diversity_count}")


def selection_steps(args: SuperfilterArguments, n_rows: int) -> list[dict[str, Any]]:
    """The selection steps: the IFD rule (a share of all rows, as Superfiltering counts), then optionally facility
    location."""
    rule: dict[str, Any] = {"step": "ifd_rule", "column": args.ifd_column, "of": "all"}
    rule.update({"count": args.ifd_count} if args.ifd_count is not None else {"fraction": args.ifd_fraction})
    steps = [rule]
    if args.consistency_gate is not None:  # the rule's share stays a share of all rows: a count after the gate
        if args.ifd_count is None:
            rule.pop("fraction")
            rule["count"] = int(math.floor(args.ifd_fraction * n_rows + 1e-9))
        steps.insert(0, median_gate_step(args.consistency_gate, max_ifd=None))
    if args.diversity:
        kept = args.ifd_count if args.ifd_count is not None else int(args.ifd_fraction * n_rows)
        steps.append({"step": "facility_location", "count": args.diversity_count or max(1, kept // 2),
                      "column": "embedding"})
    return steps



def ifd_config(args: SuperfilterArguments) -> Any:
    """The IFD scorer's config: the paper's layout unless ``ifd_layout`` says otherwise."""
    from hf_select.scoring.ifd import IFDConfig

    seed = args.ifd_layout != "hf_select"
    return IFDConfig(model_name_or_path=args.ifd_model_name_or_path, template="auto" if seed else args.template,
                     layout=args.ifd_layout, max_length=args.score_max_length, column_mapping=args.column_mapping,
                     reverse=args.consistency_gate is not None)


def embedder(args: SuperfilterArguments) -> Any:
    """The sentence embedder of facility location."""
    from hf_select.scoring.embed import EmbedConfig, Embedder

    return Embedder(EmbedConfig(model_name_or_path=args.embed_model_name_or_path, text=args.embed_text,
                                column_mapping=args.column_mapping))


def plan(args: SuperfilterArguments, n_rows: int) -> list[Any]:
    """The dry run's stages: IFD of every row, [their embeddings], the fine-tune on the rule's rows."""
    from hf_select.cost import PlannedStage
    from hf_select.recipes.dry_run import kept_rows
    from hf_select.scoring.ifd import IFDScorer

    stages = [PlannedStage("ifd", n_rows, scorer=IFDScorer(ifd_config(args)))]
    if args.diversity:
        stages.append(PlannedStage("embed", n_rows, scorer=embedder(args)))
    kept = kept_rows(args.ifd_count, args.ifd_fraction, n_rows)
    if args.diversity:
        kept = min(kept, args.diversity_count or max(1, kept // 2))
    return [*stages, PlannedStage("train", kept, train=args.train_config(), model=args.model_name_or_path)]


def run_superfilter(args: SuperfilterArguments) -> dict[str, Any]:
    """Run the recipe (or, with ``dry_run``, print its cost); returns the summary (also in
    ``<output_dir>/summary.json``)."""
    from hf_select.callbacks import SelectionProvenanceCallback
    from hf_select.scoring.ifd import IFDScorer
    from hf_select.selection import select

    if args.dry_run:
        from hf_select.recipes.dry_run import recipe_dry_run

        return recipe_dry_run(args, plan)
    runner = StageRunner(args.output_dir, resume=args.resume, cpu=args.cpu)
    data = data_stage(runner, args)
    ifd = IFDScorer(ifd_config(args))
    scored = score_stage(runner, "ifd", ifd, data, args)
    if args.diversity:
        scored = score_stage(runner, "embed", embedder(args), scored, args)
    steps = selection_steps(args, len(data))
    selection, _ = runner.selection_stage("selection", lambda: select(scored, steps, seed=args.seed),
                                          params={"steps": steps, "seed": args.seed}, pool=scored)
    callback = SelectionProvenanceCallback(selection, method="superfiltering",
                                           dataset_link=args.hub_dataset_id or DATASET_PLACEHOLDER)
    model_dir, train = runner.sft_stage("train", selection.dataset, args.train_config(),
                                        model_name_or_path=args.model_name_or_path, callbacks=[callback])
    return finish_recipe(runner, args, method="superfiltering", scored=scored, selection=selection,
                         model_dir=model_dir, train_meta=train.meta, score_columns=list(IFD_COLUMNS),
                         recipe="superfilter")


def main(argv: list[str] | None = None) -> int:
    return recipe_main(SuperfilterArguments, run_superfilter, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
