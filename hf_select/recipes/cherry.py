"""Cherry LLM (NAACL'24): prompt embeddings (a causal LM's mean-pooled hidden states) + prompt perplexity ->
k-means cluster sampling (rows inside a perplexity band, a few per cluster) -> SFT of a pre-experienced model (1 epoch)
-> IFD of every row with it -> IFD rule -> SFT of the final model from the base model -> held-out loss -> cards.

By default the IFD and its rule are the paper's code's own: ``IFDConfig(layout="cherry")`` (the Alpaca prompt,
``### Response:`` before the response in the direct pass, prompt + response tokenized as one text, its truncation
and skips), ranked by the loss ratio ``ifd``; the rule drops ``ifd >= 1`` and keeps ``ifd_fraction`` x the rows
*left after that drop* (``ifd_rule(of="eligible")``). ``template`` still shapes the prompt embeddings and prompt
perplexity; ``ifd_layout: hf_select`` scores IFD with it too.

    accelerate launch recipes/cherry.py --config recipes/configs/cherry_smollm2.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/cherry.py \
        --config recipes/configs/cherry_llama3.2_1b.yaml

Stages (each a folder under output_dir, reused when the run is started again): data, embed, prompt_ppl,
pre_selection, pre_experienced, ifd, selection, train, eval, report, hub.
In Python: ``run_cherry(CherryArguments(...))``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from hf_select.card_text import DATASET_PLACEHOLDER
from hf_select.recipes.arguments import IFDRuleFields, RecipeArguments, recipe_main
from hf_select.recipes.finish import finish_recipe
from hf_select.selection.gates import median_gate_step
from hf_select.stages import StageRunner, data_stage, score_stage

PROMPT_LOSS = "loss_reverse_direct"  # mean token loss of the instruction alone (log prompt perplexity)
IFD_LAYOUTS = ("cherry", "hf_select")


@dataclass
class CherryArguments(IFDRuleFields, RecipeArguments):
    """Arguments of the Cherry LLM recipe (plus the shared recipe and training fields)."""

    IFD_LAYOUTS = IFD_LAYOUTS  # not a field: no annotation

    embed_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Causal LM whose mean-pooled hidden states embed the prompts "
                                        "(default: model_name_or_path, as in the paper)."}
    )
    n_clusters: int = field(default=100, metadata={"help": "k-means clusters of the prompt embeddings."})
    per_cluster: int = field(default=10, metadata={"help": "Rows sampled per cluster for the pre-experienced model."})
    ppl_band: list[float] = field(
        default_factory=lambda: [25.0, 75.0],
        metadata={"help": "Percentiles of prompt perplexity, per cluster, that sampled rows fall within."},
    )
    pre_experienced_epochs: float = field(default=1.0, metadata={"help": "Epochs of the pre-experienced model."})
    ifd_layout: str = field(
        default="cherry",
        metadata={"help": f"IFD token layout, one of {IFD_LAYOUTS}: 'cherry' = the paper's code exactly (Alpaca "
                          "prompt, whatever `template` says), 'hf_select' = `template` and the project's layout."},
    )
    consistency_gate: float | None = field(
        default=None,
        metadata={"help": "Before the IFD rule, drop rows whose reverse IFD (how little the response helps predict "
                          "its instruction) is above this quantile of the rows (0.5 = the median); scores reverse IFD "
                          "too. Off by default: the paper has no such step. On the demo rows reverse IFD < 1 removed "
                          "nothing, the median gate took the corrupted share of the top 10% from 58% to 8-14% "
                          "(benchmarks/RESULTS.md)."},
    )
    ifd_fraction: float | None = field(
        default=0.1, metadata={"help": "Share of the rows left after dropping IFD >= 1 (as Cherry LLM counts) kept "
                                       "by the IFD rule (or give ifd_count)."}
    )
    ifd_count: int | None = field(default=None, metadata={"help": "Rows kept by the IFD rule (instead of a share)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_ifd_rule()
        for name in ("n_clusters", "per_cluster"):
            if getattr(self, name) < 1:
                raise ValueError(f"CherryArguments.{name} must be >= 1, got {getattr(self, name)}")
        band = [float(x) for x in self.ppl_band]
        if len(band) != 2 or not 0 <= band[0] < band[1] <= 100:
            raise ValueError(f"CherryArguments.ppl_band must be two percentiles 0 <= low < high <= 100, got {band}")
        self.ppl_band = band
        if self.pre_experienced_epochs <= 0:
            raise ValueError(f"CherryArguments.pre_experienced_epochs must be > 0, got {self.pre_experienced_epochs}")


def selection_steps(args: CherryArguments) -> list[dict[str, Any]]:
    """The optional consistency gate, then Cherry LLM's rule (its share counts the rows left after both drops)."""
    steps = [ifd_rule_step(args)]
    if args.consistency_gate is not None:
        steps.insert(0, median_gate_step(args.consistency_gate, max_ifd=None))
    return steps


def ifd_rule_step(args: CherryArguments) -> dict[str, Any]:
    """Cherry LLM's rule: drop IFD >= 1, then the highest IFD, a share of the rows that are left."""
    rule: dict[str, Any] = {"step": "ifd_rule", "column": "ifd", "of": "eligible"}
    rule.update({"count": args.ifd_count} if args.ifd_count is not None else {"fraction": args.ifd_fraction})
    return rule


def first_scorers(args: CherryArguments) -> tuple[Any, Any]:
    """The prompt embedder and the prompt-perplexity IFD scorer (reverse IFD), both with the base model."""
    from hf_select.scoring.embed import EmbedConfig, Embedder
    from hf_select.scoring.ifd import IFDConfig, IFDScorer

    base = args.embed_model_name_or_path or args.model_name_or_path
    embedder = Embedder(EmbedConfig(model_name_or_path=base, backend="causal_lm", text="prompt",
                                    template=args.template, max_length=args.score_max_length,
                                    column_mapping=args.column_mapping))
    prompt_ppl = IFDScorer(IFDConfig(model_name_or_path=base, template=args.template, reverse=True,
                                     max_length=args.score_max_length, column_mapping=args.column_mapping))
    return embedder, prompt_ppl


def ifd_scorer(args: CherryArguments, model: str) -> Any:
    """The IFD scorer of the rule, with ``model`` (the pre-experienced model)."""
    from hf_select.scoring.ifd import IFDConfig, IFDScorer

    seed = args.ifd_layout != "hf_select"
    return IFDScorer(IFDConfig(model_name_or_path=model, template="auto" if seed else args.template,
                               layout=args.ifd_layout, max_length=args.score_max_length,
                               column_mapping=args.column_mapping))


def plan(args: CherryArguments, n_rows: int) -> list[Any]:
    """The dry run's stages: embeddings and prompt perplexity of every row, the pre-experienced model, IFD of
    every row, the final fine-tune (its rows at most the rule's share of every row)."""
    from hf_select.cost import PlannedStage
    from hf_select.recipes.dry_run import kept_rows

    embedder, prompt_ppl = first_scorers(args)
    pre_rows = min(n_rows, args.n_clusters * args.per_cluster)
    return [
        PlannedStage("embed", n_rows, scorer=embedder),
        PlannedStage("prompt_ppl", n_rows, scorer=prompt_ppl),
        PlannedStage("pre_experienced", pre_rows, model=args.model_name_or_path,
                     train=args.train_config(num_train_epochs=args.pre_experienced_epochs),
                     note="at most: the rows in the perplexity band"),
        PlannedStage("ifd", n_rows, scorer=ifd_scorer(args, args.model_name_or_path),
                     note="timed with the base model, as the pre-experienced model does not exist yet"),
        PlannedStage("train", kept_rows(args.ifd_count, args.ifd_fraction, n_rows), model=args.model_name_or_path,
                     train=args.train_config(), note="at most: the rule's share of the rows with IFD < 1"),
    ]


def run_cherry(args: CherryArguments) -> dict[str, Any]:
    """Run the recipe (or, with ``dry_run``, print its cost); returns the summary (also in
    ``<output_dir>/summary.json``)."""
    from hf_select.callbacks import SelectionProvenanceCallback
    from hf_select.selection import select

    if args.dry_run:
        from hf_select.recipes.dry_run import recipe_dry_run

        return recipe_dry_run(args, plan)
    runner = StageRunner(args.output_dir, resume=args.resume, cpu=args.cpu)
    data = data_stage(runner, args)

    # 1. prompt embeddings and prompt perplexity with the base model
    embedder, prompt_ppl = first_scorers(args)
    embedded = score_stage(runner, "embed", embedder, data, args)
    with_ppl = score_stage(runner, "prompt_ppl", prompt_ppl, embedded, args)

    # 2. the pre-experienced model: a few rows per k-means cluster, inside the perplexity band, 1 epoch
    k_steps = [{"step": "kmeans_sample", "column": "embedding", "score_column": PROMPT_LOSS,
                "n_clusters": args.n_clusters, "per_cluster": args.per_cluster, "band": args.ppl_band}]
    pre, _ = runner.selection_stage("pre_selection", lambda: select(with_ppl, k_steps, seed=args.seed),
                                    params={"steps": k_steps, "seed": args.seed}, pool=with_ppl)
    pre_cfg = args.train_config(num_train_epochs=args.pre_experienced_epochs)
    pre_model, _ = runner.sft_stage("pre_experienced", pre.dataset, pre_cfg,
                                    model_name_or_path=args.model_name_or_path,
                                    callbacks=[SelectionProvenanceCallback(pre, method="cherry")])

    # 3. IFD of every row with the pre-experienced model, then the IFD rule
    ifd = ifd_scorer(args, str(pre_model))
    scored = score_stage(runner, "ifd", ifd, with_ppl, args)
    steps = selection_steps(args)
    selection, _ = runner.selection_stage("selection", lambda: select(scored, steps, seed=args.seed),
                                          params={"steps": steps, "seed": args.seed}, pool=scored)

    # 4. the final model from the base model
    callback = SelectionProvenanceCallback(selection, method="cherry",
                                           dataset_link=args.hub_dataset_id or DATASET_PLACEHOLDER)
    model_dir, train = runner.sft_stage("train", selection.dataset, args.train_config(),
                                        model_name_or_path=args.model_name_or_path, callbacks=[callback])
    extra = [{"name": "pre-experienced model",
              "description": f"{args.model_name_or_path} fine-tuned for {args.pre_experienced_epochs:g} epoch(s) on "
                             f"{len(pre)} rows sampled from {args.n_clusters} k-means clusters ({pre_model}); it "
                             "scored the IFD"}]
    return finish_recipe(runner, args, method="cherry", scored=scored, selection=selection, model_dir=model_dir,
                         train_meta=train.meta, score_columns=["ifd", PROMPT_LOSS], extra_models=extra,
                         recipe="cherry")


def main(argv: list[str] | None = None) -> int:
    return recipe_main(CherryArguments, run_cherry, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
