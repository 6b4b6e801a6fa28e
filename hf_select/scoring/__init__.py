"""Scorers: each adds columns to a ``datasets.Dataset`` through ``Dataset.map`` or ``.score(dataset)``."""

from .base import BaseScorer
from .diversity import knn_distance, mtld
from .embed import EmbedConfig, Embedder, embed
from .ifd import IFDConfig, IFDScorer, score_ifd
from .indicators import IndicatorConfig, IndicatorScorer, score_indicators
from .necessity import NecessityConfig, NecessityScorer, score_necessity
from .quality import QualityConfig, QualityScorer, score_quality
from .rule import InstructMiningRule, fit_rule, indicator_means

__all__ = ["BaseScorer", "EmbedConfig", "Embedder", "embed", "IFDConfig", "IFDScorer", "score_ifd",
           "QualityConfig", "QualityScorer", "score_quality", "NecessityConfig", "NecessityScorer", "score_necessity",
           "IndicatorConfig", "IndicatorScorer", "score_indicators", "InstructMiningRule", "fit_rule",
           "indicator_means", "knn_distance", "mtld"]
