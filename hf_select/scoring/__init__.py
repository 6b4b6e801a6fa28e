"""Scorers: each adds columns to a ``datasets.Dataset`` through ``Dataset.map`` or ``.score(dataset)``."""

from .base import BaseScorer
from .ifd import IFDConfig, IFDScorer, score_ifd

__all__ = ["BaseScorer", "IFDConfig", "IFDScorer", "score_ifd"]
