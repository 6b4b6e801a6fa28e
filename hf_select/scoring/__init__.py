"""Scorers: each adds columns to a ``datasets.Dataset`` through ``Dataset.map`` or ``.score(dataset)``.

One module per score (``ifd``, ``quality``, ``necessity``, ``indicators``, ``embed``), each an ``XConfig`` (a
:class:`~hf_select.scoring.config.ScorerConfig`: the shared model, length and batching fields), an ``XScorer`` and
a ready-made ``score_x``; the machinery they share is in ``base`` (whole-dataset runs: shards, resume, processes),
``config`` (the config base, the token-budget rule, the dict that names stage keys), ``common`` (model limits,
fitting pairs, padding, the reward-model loader), ``batching`` (token-budget batches, out-of-memory retry) and
``lm_loss`` (target-token losses). ``diversity`` (MTLD, KNN-k) and ``rule`` (InstructMining's linear rule) need no
model. A new scorer subclasses both bases, declares its ``features``, and is registered in ``registry``.

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

from importlib import import_module
from typing import Any

# Public name -> the module that defines it, imported on first use: ``hf-select --help`` and the step registry
# import ``hf_select.scoring.registry`` without loading torch or transformers.
_EXPORTS = {
    "BaseScorer": "base", "ScorerConfig": "config", "knn_distance": "diversity", "mtld": "diversity",
    "EmbedConfig": "embed", "Embedder": "embed", "EmbedScorer": "embed", "embed": "embed", "score_embed": "embed",
    "IFDConfig": "ifd", "IFDScorer": "ifd", "score_ifd": "ifd",
    "IndicatorConfig": "indicators", "IndicatorScorer": "indicators", "score_indicators": "indicators",
    "NecessityConfig": "necessity", "NecessityScorer": "necessity", "score_necessity": "necessity",
    "QualityConfig": "quality", "QualityScorer": "quality", "score_quality": "quality",
    "InstructMiningRule": "rule", "fit_rule": "rule", "indicator_means": "rule",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = list(_EXPORTS)
