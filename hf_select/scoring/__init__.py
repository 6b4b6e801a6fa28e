"""Scorers: each adds columns to a ``datasets.Dataset`` through ``Dataset.map`` or ``.score(dataset)``.

One module per score (``ifd``, ``quality``, ``necessity``, ``indicators``, ``embed``, ``loss_reduction``), each an
``XConfig`` (a :class:`~hf_select.scoring.config.ScorerConfig`: the shared model, length and batching fields), an
``XScorer`` and a ready-made ``score_x`` (``loss_reduction`` has none: it needs a target set); the machinery they
share is in ``base`` (whole-dataset runs: shards, resume, processes), ``config`` (the config base, the token-budget
rule, the dict that names stage keys), ``common`` (model limits, fitting pairs, padding, the reward-model loader),
``batching`` (token-budget batches, out-of-memory retry) and ``lm_loss`` (target-token losses). ``diversity`` (MTLD,
KNN-k) and ``rule`` (InstructMining's linear rule) need no model. A new scorer subclasses both bases, declares its
``features``, and is registered in ``registry``.

Columns: every scorer declares its columns' Arrow types as a ``datasets.Features`` (``XScorer.features``). Each
pass over a row has one status column named after its score column, ``<column>_status`` (``ifd_status``,
``ifd_reverse_status``, ``quality_status``, ``necessity_status``, ``embedding_status``; the ``ind_*`` indicators
share ``ind_status``): ``ok``, or why the row's score is NaN. Both quality backends write ``quality`` (and
``quality_backend``).

Example:
    >>> from hf_select.scoring import IFDScorer, QualityScorer
    >>> IFDScorer().output_columns
    ('ifd', 'ifd_ppl', 'loss_conditioned', 'loss_direct', 'response_tokens', 'ifd_status')
    >>> QualityScorer().features["quality"].dtype
    'float64'
"""

from .base import BaseScorer
from .config import ScorerConfig
from .diversity import knn_distance, mtld
from .embed import EmbedConfig, Embedder, EmbedScorer, embed, score_embed
from .ifd import IFDConfig, IFDScorer, score_ifd
from .indicators import IndicatorConfig, IndicatorScorer, score_indicators
from .loss_reduction import LossReductionConfig, LossReductionScorer
from .necessity import NecessityConfig, NecessityScorer, score_necessity
from .quality import QualityConfig, QualityScorer, score_quality
from .rule import InstructMiningRule, fit_rule, indicator_means

__all__ = ["BaseScorer", "ScorerConfig", "EmbedConfig", "Embedder", "EmbedScorer", "embed", "score_embed",
           "IFDConfig", "IFDScorer", "score_ifd", "QualityConfig", "QualityScorer", "score_quality",
           "NecessityConfig", "NecessityScorer", "score_necessity", "IndicatorConfig", "IndicatorScorer",
           "score_indicators", "LossReductionConfig", "LossReductionScorer", "InstructMiningRule", "fit_rule",
           "indicator_means", "knn_distance", "mtld"]
