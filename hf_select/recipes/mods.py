"""MoDS (arXiv 2311.15653): quality -> threshold -> embed -> k-center seed set -> SFT seed model -> necessity (the
seed model answers the high-quality instructions, its answers scored) -> k-center over the necessary rows down to a
budget -> seed + necessary (deduplicated) -> SFT of the final model from the base model -> held-out loss -> cards.

    accelerate launch recipes/mods.py --config recipes/configs/mods_smollm2.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/mods.py \
        --config recipes/configs/mods_qwen2.5_0.5b.yaml

Stages (each a folder under output_dir, reused when the run is started again): data, quality, high_quality, embed,
seed, seed_model, necessity, necessary, selection, train, eval, report, hub. In Python:
``run_mods(MoDSArguments(...))``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from hf_select.card_text import DATASET_PLACEHOLDER
from hf_select.models import DEFAULT_EMBEDDER
from hf_select.recipes.arguments import RecipeArguments, recipe_main
from hf_select.recipes.finish import finish_recipe
from hf_select.selection.merge import merge_columns, union_selection
from hf_select.stages import StageRunner, data_stage, score_stage

QUALITY_BACKENDS = ("judge", "reward")
DEFAULT_THRESHOLDS = {"reward": 0.0, "judge": 3.0}


@dataclass
class MoDSArguments(RecipeArguments):
    """Arguments of the MoDS recipe (plus the shared recipe and training fields)."""

    quality_backend: str = field(
        default="judge", metadata={"help": f"One of {QUALITY_BACKENDS}: a reward model (the paper) or an LLM judge."}
    )
    quality_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Quality model; default: SmolLM2-135M-Instruct (judge) or OpenAssistant's "
                          "reward-model-deberta-v3-large-v2 (reward)."},
    )
    quality_threshold: float | None = field(
        default=None, metadata={"help": "Keep rows scoring above it (default: 0.0 for a reward model, 3.0 judge)."}
    )
    quality_fraction: float | None = field(
        default=None,
        metadata={"help": "Instead of a threshold: keep this share of the rows with the best quality (for an "
                          "uncalibrated LLM judge)."},
    )
    quality_max_batch_size: int = field(default=64, metadata={"help": "Most pairs per quality forward pass."})
    embed_model_name_or_path: str = field(
        default=DEFAULT_EMBEDDER, metadata={"help": "Sentence embedder of the instructions (k-center)."}
    )
    seed_count: int = field(default=1000, metadata={"help": "Rows of the k-center seed set."})
    seed_epochs: float | None = field(
        default=None, metadata={"help": "Epochs of the seed model (default: num_train_epochs)."}
    )
    necessity_threshold: float | None = field(
        default=None, metadata={"help": "Rows whose generated answer scores below it are necessary (default: "
                                        "quality_threshold)."}
    )
    necessity_fraction: float | None = field(
        default=None,
        metadata={"help": "Instead of a threshold: the share of answered rows with the worst answers is necessary."},
    )
    necessity_count: int = field(default=3000, metadata={"help": "Budget of necessary rows (k-center)."})
    necessity_max_new_tokens: int = field(default=256, metadata={"help": "Most tokens the seed model writes."})
    necessity_max_batch_size: int = field(default=64, metadata={"help": "Most prompts generated together."})
    necessity_skip_seed: bool = field(
        default=False, metadata={"help": "Do not generate for the seed rows (they are in the subset anyway)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quality_backend not in QUALITY_BACKENDS:
            raise ValueError(f"MoDSArguments.quality_backend must be one of {QUALITY_BACKENDS}, "
                             f"got {self.quality_backend!r}")
        if self.quality_threshold is None:
            self.quality_threshold = DEFAULT_THRESHOLDS[self.quality_backend]
        if self.necessity_threshold is None:
            self.necessity_threshold = self.quality_threshold
        for name in ("seed_count", "necessity_count", "necessity_max_new_tokens", "quality_max_batch_size",
                     "necessity_max_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"MoDSArguments.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("quality_fraction", "necessity_fraction"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"MoDSArguments.{name} must be in (0, 1], got {value}")
        if self.seed_epochs is not None and self.seed_epochs <= 0:
            raise ValueError(f"MoDSArguments.seed_epochs must be > 0, got {self.seed_epochs}")

    def inactive_fields(self) -> set[str]:
        """Fields that did not apply to this run (a threshold when a fraction was given), left out of the card's
        Reproduce line."""
        return ({"quality_threshold"} if self.quality_fraction is not None else set()) | (
            {"necessity_threshold"} if self.necessity_fraction is not None else set())


def quality_config(args: MoDSArguments) -> Any:
    """The quality scorer's config (also the judge of the seed model's answers)."""
    from hf_select.scoring.quality import QualityConfig

    return QualityConfig(backend=args.quality_backend, model_name_or_path=args.quality_model_name_or_path,
                         max_length=args.score_max_length, max_batch_size=args.quality_max_batch_size,
                         column_mapping=args.column_mapping)


def embedder(args: MoDSArguments) -> Any:
    """The instruction embedder of k-center."""
    from hf_select.scoring.embed import EmbedConfig, Embedder

    return Embedder(EmbedConfig(model_name_or_path=args.embed_model_name_or_path, text="instruction",
                                column_mapping=args.column_mapping))


def necessity_scorer(args: MoDSArguments, model: str) -> Any:
    """The necessity scorer: ``model`` (the seed model) answers, the quality scorer judges the answers."""
    from hf_select.scoring.necessity import NecessityConfig, NecessityScorer

    return NecessityScorer(NecessityConfig(
        model_name_or_path=model, quality=quality_config(args), template=args.template,
        max_new_tokens=args.necessity_max_new_tokens, max_length=args.score_max_length,
        max_batch_size=args.necessity_max_batch_size, seed=args.seed, column_mapping=args.column_mapping))


def plan(args: MoDSArguments, n_rows: int) -> list[Any]:
    """The dry run's stages. The rows past the quality step are unknown before scoring: the stages after it are
    costed on every row (the most they can get)."""
    from hf_select.cost import PlannedStage
    from hf_select.scoring.quality import QualityScorer

    most = "at most: the rows above the quality threshold"
    seed_rows = min(args.seed_count, n_rows)
    return [
        PlannedStage("quality", n_rows, scorer=QualityScorer(quality_config(args))),
        PlannedStage("embed", n_rows, scorer=embedder(args), note=most),
        PlannedStage("seed_model", seed_rows, model=args.model_name_or_path,
                     train=args.train_config(num_train_epochs=args.seed_epochs or args.num_train_epochs)),
        PlannedStage("necessity", n_rows, scorer=necessity_scorer(args, args.model_name_or_path),
                     note=f"{most}; timed with the base model, as the seed model does not exist yet"),
        PlannedStage("train", min(n_rows, args.seed_count + args.necessity_count), model=args.model_name_or_path,
                     train=args.train_config(), note="at most: seed + necessary rows"),
    ]


def run_mods(args: MoDSArguments) -> dict[str, Any]:
    """Run the recipe (or, with ``dry_run``, print its cost); returns the summary (also in
    ``<output_dir>/summary.json``)."""
    from hf_select.callbacks import SelectionProvenanceCallback
    from hf_select.scoring.quality import QualityScorer
    from hf_select.selection import select

    if args.dry_run:
        from hf_select.recipes.dry_run import recipe_dry_run

        return recipe_dry_run(args, plan)
    runner = StageRunner(args.output_dir, resume=args.resume, cpu=args.cpu)
    data = data_stage(runner, args)

    # 1. quality
    quality = QualityScorer(quality_config(args))
    scored = score_stage(runner, "quality", quality, data, args)
    if args.quality_fraction is not None:
        q_steps = [{"step": "top", "column": quality.score_column, "fraction": args.quality_fraction}]
    else:
        q_steps = [{"step": "threshold", "column": quality.score_column, "min": args.quality_threshold,
                    "strict": True}]
    high, _ = runner.selection_stage("high_quality", lambda: select(scored, q_steps, seed=args.seed),
                                     params={"steps": q_steps}, pool=scored)

    # 2. coverage: k-center seed set on the instructions' embeddings
    embedded = score_stage(runner, "embed", embedder(args), high.dataset, args)
    s_steps = [{"step": "kcenter", "k": args.seed_count, "column": "embedding"}]
    seed, _ = runner.selection_stage("seed", lambda: select(embedded, s_steps, seed=args.seed),
                                     params={"steps": s_steps, "seed": args.seed}, pool=embedded)
    seed_cfg = args.train_config(num_train_epochs=args.seed_epochs or args.num_train_epochs)
    seed_model, _ = runner.sft_stage("seed_model", seed.dataset, seed_cfg, model_name_or_path=args.model_name_or_path,
                                     callbacks=[SelectionProvenanceCallback(seed, method="mods")])

    # 3. necessity: the seed model answers the high-quality instructions; badly answered rows are needed
    to_answer = embedded
    if args.necessity_skip_seed:
        in_seed = set(seed.row_ids)
        to_answer = embedded.filter(lambda ids: [i not in in_seed for i in ids], input_columns="_row_id",
                                    batched=True)
    necessity = necessity_scorer(args, str(seed_model))
    answered = score_stage(runner, "necessity", necessity, to_answer, args)
    if args.necessity_fraction is not None:
        needed = {"step": "top", "column": "necessity", "fraction": args.necessity_fraction, "descending": False}
    else:
        needed = {"step": "threshold", "column": "necessity", "max": args.necessity_threshold, "strict": True}
    n_steps = [needed, {"step": "kcenter", "k": args.necessity_count, "column": "embedding"}]
    necessary, _ = runner.selection_stage("necessary", lambda: select(answered, n_steps, seed=args.seed),
                                          params={"steps": n_steps, "seed": args.seed}, pool=answered)

    # every score on one table of the source rows (for the subset's columns, the report and the cards)
    full = merge_columns(scored, embedded, ["embedding"])
    full = merge_columns(full, answered, ["necessity", "necessity_status", "generated_response"])

    # 4. seed + necessary, deduplicated; the final model from the base model
    selection, _ = runner.selection_stage(
        "selection",
        lambda: union_selection(full, {"seed": seed, "necessary": necessary}, before=[("quality", high)],
                                seed=args.seed),
        params={"seed_rows": len(seed), "necessary_rows": len(necessary)})
    callback = SelectionProvenanceCallback(selection, method="mods",
                                           dataset_link=args.hub_dataset_id or DATASET_PLACEHOLDER)
    model_dir, train = runner.sft_stage("train", selection.dataset, args.train_config(),
                                        model_name_or_path=args.model_name_or_path, callbacks=[callback])

    extra = [{"name": "seed model", "description": f"{args.model_name_or_path} fine-tuned on the {len(seed)} k-center "
                                                   f"seed rows ({seed_model}); it wrote the answers behind necessity"}]
    return finish_recipe(runner, args, method="mods", scored=full, selection=selection, model_dir=model_dir,
                         train_meta=train.meta, score_columns=[quality.score_column, "necessity"],
                         extra_models=extra, recipe="mods")


def main(argv: list[str] | None = None) -> int:
    return recipe_main(MoDSArguments, run_mods, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
