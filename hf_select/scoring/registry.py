"""Scorers by name, for the command line and the recipes: name -> (module, config class, scorer class)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

SCORERS: dict[str, tuple[str, str, str]] = {
    "ifd": ("hf_select.scoring.ifd", "IFDConfig", "IFDScorer"),
    "quality": ("hf_select.scoring.quality", "QualityConfig", "QualityScorer"),
    "necessity": ("hf_select.scoring.necessity", "NecessityConfig", "NecessityScorer"),
    "indicators": ("hf_select.scoring.indicators", "IndicatorConfig", "IndicatorScorer"),
    "embed": ("hf_select.scoring.embed", "EmbedConfig", "Embedder"),
    "loss_reduction": ("hf_select.scoring.loss_reduction", "LossReductionConfig", "LossReductionScorer"),
}


def get_scorer_classes(name: str) -> tuple[type, type]:
    """(config class, scorer class) of a registered scorer.

    Example:
        >>> get_scorer_classes("ifd")[0].__name__
        'IFDConfig'
    """
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; expected one of {sorted(SCORERS)}")
    module, config_name, scorer_name = SCORERS[name]
    mod = import_module(module)
    return getattr(mod, config_name), getattr(mod, scorer_name)


def build_scorer(name: str, **config: Any) -> Any:
    """Build a scorer from its name and config fields."""
    config_class, scorer_class = get_scorer_classes(name)
    return scorer_class(config_class(**config))
