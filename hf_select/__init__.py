"""hf-select: choose the instruction-tuning rows worth training on.

Scores are ``datasets`` columns added by ``Dataset.map`` transforms; selection reads columns and returns a
smaller ``Dataset``; TRL recipes train on the result.

Example:
    >>> from hf_select import IFDConfig, IFDScorer, score_ifd
    >>> ds = ds.map(score_ifd, batched=True)  # doctest: +SKIP
    >>> from hf_select import available_steps, select
    >>> result = select(ds, [{"step": "ifd_rule", "fraction": 0.1}])  # doctest: +SKIP
    >>> "kcenter" in available_steps()
    True
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it. Imported on first use so that `import hf_select` stays light.
_EXPORTS = {
    "IFDConfig": "hf_select.scoring.ifd",
    "IFDScorer": "hf_select.scoring.ifd",
    "score_ifd": "hf_select.scoring.ifd",
    "QualityConfig": "hf_select.scoring.quality",
    "QualityScorer": "hf_select.scoring.quality",
    "score_quality": "hf_select.scoring.quality",
    "NecessityConfig": "hf_select.scoring.necessity",
    "NecessityScorer": "hf_select.scoring.necessity",
    "score_necessity": "hf_select.scoring.necessity",
    "IndicatorConfig": "hf_select.scoring.indicators",
    "IndicatorScorer": "hf_select.scoring.indicators",
    "score_indicators": "hf_select.scoring.indicators",
    "InstructMiningRule": "hf_select.scoring.rule",
    "fit_rule": "hf_select.scoring.rule",
    "knn_distance": "hf_select.scoring.diversity",
    "mtld": "hf_select.scoring.diversity",
    "indicator_means": "hf_select.scoring.rule",
    "BaseScorer": "hf_select.scoring.base",
    "EmbedConfig": "hf_select.scoring.embed",
    "Embedder": "hf_select.scoring.embed",
    "embed": "hf_select.scoring.embed",
    "select": "hf_select.selection.select",
    "SelectionResult": "hf_select.selection.select",
    "Step": "hf_select.selection.select",
    "StepResult": "hf_select.selection.base",
    "STEPS": "hf_select.selection.steps",
    "available_steps": "hf_select.selection.steps",
    "register_step": "hf_select.selection.steps",
    "EmbedScorer": "hf_select.scoring.embed",
    "score_embed": "hf_select.scoring.embed",
    "ScorerConfig": "hf_select.scoring.config",
    "load_causal_lm": "hf_select.models",
    "detect_format": "hf_select.formats",
    "row_to_messages": "hf_select.formats",
    "CompareConfig": "hf_select.compare",
    "CompareResult": "hf_select.compare",
    "run_compare": "hf_select.compare",
    "TrainConfig": "hf_select.training",
    "train_sft": "hf_select.training",
    "evaluate_loss": "hf_select.training",
    "to_prompt_completion": "hf_select.training",
    "load_eval_dataset": "hf_select.training",
    "SelectionProvenanceCallback": "hf_select.callbacks",
    "ProbeEvalCallback": "hf_select.callbacks",
    "PerRowLossCallback": "hf_select.callbacks",
    "RowIdCollator": "hf_select.callbacks",
    "render_dataset_card": "hf_select.hub",
    "render_model_card": "hf_select.hub",
    "write_hub_folders": "hf_select.hub",
    "push_outputs": "hf_select.hub",
    "push_selection": "hf_select.hub",
    "load_selection_folder": "hf_select.selection.select",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hf_select' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = ["__version__", *_EXPORTS]
