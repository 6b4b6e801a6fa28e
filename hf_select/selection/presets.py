"""Named selection recipes: ready-made step lists for a row budget, shared by ``hf-select select --preset`` and
``hf-select compare`` (where each preset is a method, trained and measured against random subsets).

Every preset is a function of the budget (``count`` rows or a ``fraction``) returning a plain list of step mappings,
so what a preset does is visible (``hf-select select --list-presets`` prints them) and can be copied into a YAML
file and edited. A preset also says which score columns its steps read (:attr:`Preset.needs`), so a caller can
score exactly those first:

- ``ifd``: forward IFD (``IFDScorer``: ``ifd``, ``ifd_ppl``, ``ifd_status``, ``response_tokens``);
- ``reverse``: reverse IFD (``IFDConfig(reverse=True)``: ``ifd_reverse``, ``ifd_reverse_status``);
- ``quality``: a quality score (``QualityScorer``: ``quality``, the offline judge's or a reward model's);
- ``embedding``: a sentence embedding of each row (``Embedder``: ``embedding``);
- ``target``: target-set embeddings (a file), for target-aware selection;
- ``lm_embedding``: the scoring LM's own embedding of each row, RDS+'s position-weighted mean of the last hidden
  state (``Embedder`` with ``backend="causal_lm"``, ``pooling="weighted_mean"``, ``column="lm_embedding"``);
- ``lm_target``: the target set embedded the same way (a file);
- ``loss_reduction``: each row's loss under the base model minus under a copy tuned on the target set
  (``LossReductionScorer``: ``loss_reduction``).

Example:
    >>> steps = preset_steps("fusion", count=100)
    >>> [s["step"] for s in steps]
    ['threshold', 'fused_diverse']
    >>> PRESETS["fusion"].needs
    ('ifd', 'reverse', 'embedding')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import HFSelectError
from .gates import median_gate_step

SCORE_NEEDS = ("ifd", "reverse", "quality", "embedding", "target", "lm_embedding", "lm_target", "loss_reduction")
# the column each need stands for, and the command that writes it (target embeddings come from a file, not a column)
NEED_COLUMNS = {
    "ifd": ("ifd", "hf-select score ifd --dataset DATA --output OUT"),
    "reverse": ("ifd_reverse", "hf-select score ifd --dataset DATA --output OUT --set reverse=true"),
    "quality": ("quality", "hf-select score quality --dataset DATA --output OUT"),
    "embedding": ("embedding", "hf-select score embed --dataset DATA --output OUT"),
    "lm_embedding": ("lm_embedding", "hf-select score embed --dataset DATA --output OUT --model MODEL --set "
                     "backend=causal_lm --set pooling=weighted_mean --set text=row --set normalize=true --set "
                     "column=lm_embedding"),
    "loss_reduction": ("loss_reduction", "hf-select score loss_reduction --dataset DATA --output OUT --model MODEL "
                       "--set target=TARGET_ROWS"),
}


@dataclass(frozen=True)
class Preset:
    """A named step list. ``build(budget, options)`` returns the steps; ``budget`` is ``{"count": n}`` or
    ``{"fraction": f}``."""

    name: str
    summary: str
    needs: tuple[str, ...]
    build: Callable[[dict[str, Any], Mapping[str, Any]], list[dict[str, Any]]]
    rank_column: str | None = None  # the score the preset ranks by, for diagnostics (None: a composite)


def _consistent(options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The first step of every IFD preset: drop rows whose instruction does not help predict their response
    (IFD >= 1, Cherry LLM's and Superfiltering's own filter)."""
    return [{"step": "threshold", "column": options.get("column", "ifd"), "max": 1.0, "strict": True}]


def _superfiltering(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    column = options.get("column", "ifd_ppl")
    return [{"step": "ifd_rule", "column": column, **budget}]


def _ifd_gated(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    gate = median_gate_step(float(options.get("max_reverse_quantile", 0.5)))
    return [gate, {"step": "ifd_rule", "column": options.get("column", "ifd"), **budget}]


def _ifd_length(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*_consistent(options), {"step": "length_stratified_top", "column": options.get("column", "ifd"),
                                    "mode": options.get("mode", "strata"), "bins": int(options.get("bins", 5)),
                                    **budget}]


def _ifd_quota(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"step": "ifd_rule", "column": options.get("column", "ifd"),
             "stratify_by": options.get("stratify_by", "source"), **budget}]


FUSION_SCORES = {"ifd": 1.0, "ifd_reverse": -1.0, "loss_conditioned": -1.0}


def _fusion(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    scores = dict(options.get("scores") or FUSION_SCORES)
    return [*_consistent(options),
            {"step": "fused_diverse", "scores": scores, "normalise": options.get("normalise", "rank"),
             "combine": options.get("combine", "sum"), "column": "embedding",
             "min_distance": float(options.get("min_distance", 0.1)), "fill": "best", **budget}]


def _random_per_source(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    column = options.get("stratify_by", "source")
    return [{"step": "random", **budget, **({"stratify_by": column} if column else {})}]


def _longest(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"step": "longest", "measure": "chars", **budget}]


def _longest_gated(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    # rows whose response alone overflows the reverse pass are the longest ones: let them through unjudged
    gate = median_gate_step(float(options.get("max_reverse_quantile", 0.5)),
                            keep_status=list(options.get("keep_status", ["prompt_too_long"])))
    return [gate, {"step": "longest", "measure": "chars", **budget}]


def _target(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    target = options.get("target")
    if not target:
        raise HFSelectError("preset 'target' needs a target set: pass target=FILE (embedded target rows, or "
                            "`hf-select select --target FILE`)")
    return [{"step": "target_similarity", "target": target, "aggregate": options.get("aggregate", "max"),
             "column": "embedding", **budget}]


def _target_lm(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    target = options.get("target")
    if not target:
        raise HFSelectError("preset 'target_lm' needs a target set: pass target=FILE (the target rows embedded like "
                            "the pool's lm_embedding: the scoring LM, pooling=weighted_mean)")
    return [{"step": "target_similarity", "target": target, "aggregate": options.get("aggregate", "max"),
             "column": "lm_embedding", **budget}]


def _loss_reduction(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"step": "top", "column": "loss_reduction", **budget}]


def _longest_diverse(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    gate = median_gate_step(float(options.get("max_reverse_quantile", 0.5)),
                            keep_status=list(options.get("keep_status", ["prompt_too_long"])))
    clusters = {"clusters": int(options.get("clusters", 20)), "column": "embedding"}
    return [gate, {"step": "longest", "measure": "chars", "stratify_by": clusters, **budget}]


def _kcenter_length(budget: dict[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    gate = median_gate_step(float(options.get("max_reverse_quantile", 0.5)),
                            keep_status=list(options.get("keep_status", ["prompt_too_long"])))
    return [gate, {"step": "kcenter", "column": "embedding", "metric": "cosine",
                   "weight_column": options.get("weight_column", "response_tokens"),
                   "weight_transform": options.get("weight_transform", "log1p"), **budget}]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("superfiltering", "Superfiltering's rule: drop IFD >= 1, keep the highest perplexity ratio.",
               ("ifd",), _superfiltering, "ifd_ppl"),
        Preset("ifd_gated", "Consistency gate (reverse IFD at most its median over the rows, and IFD < 1), then "
                            "the highest IFD.", ("ifd", "reverse"), _ifd_gated, "ifd"),
        Preset("ifd_length", "IFD < 1, then the highest IFD within each of 5 response-length strata (each keeps "
                             "its pool share).", ("ifd",), _ifd_length, "ifd"),
        Preset("ifd_quota", "Cherry's IFD rule with each source keeping its pool share of the budget.",
               ("ifd",), _ifd_quota, "ifd"),
        Preset("fusion", "IFD < 1, then rank by IFD + (-reverse IFD) + (-conditioned loss) (rank-normalised), adding "
                         "a row only when its cosine distance to every chosen row is > 0.1 (DEITA-style).",
               ("ifd", "reverse", "embedding"), _fusion, None),
        Preset("random_per_source", "A seeded random draw in which each source (the 'source' column) keeps its "
                                    "pool share; a plain random draw where the rows have no source column.",
               (), _random_per_source, None),
        Preset("longest", "The longest responses (characters): beats random on GPT-4-style answers, loses on "
                          "human-written ones at an equal token budget.", (), _longest, None),
        Preset("longest_gated", "Consistency gate (reverse IFD at most its median over the rows that have one, "
                                "and IFD < 1; a response too long for the reverse pass passes unjudged), then "
                                "the longest responses (characters).", ("ifd", "reverse"), _longest_gated,
               None),
        Preset("target", "Rows most similar (cosine, max over targets) to a target set's embeddings (RDS+-style).",
               ("embedding", "target"), _target, None),
        Preset("target_lm", "RDS+ as published: rows most similar (cosine, max over targets; aggregate=round_robin "
                            "for turns) to the target set, both embedded by the scoring LM itself (position-weighted "
                            "mean of its last hidden state); reads lm_embedding.", ("lm_embedding", "lm_target"),
               _target_lm, None),
        Preset("loss_reduction", "CoLoR-Filter-style: the rows whose completion loss drops most under a copy of the "
                                 "scoring model fine-tuned briefly on the target set (loss_base - loss_tuned); reads "
                                 "loss_reduction.", ("loss_reduction",), _loss_reduction, "loss_reduction"),
        Preset("longest_diverse", "Consistency gate (as longest_gated), then the longest responses (characters) "
                                  "within 20 k-means clusters of the sentence embeddings, each cluster keeping its "
                                  "pool share; reads ifd, ifd_reverse, embedding.", ("ifd", "reverse", "embedding"),
               _longest_diverse, None),
        Preset("kcenter_length", "Consistency gate (as longest_gated), then k-center greedy on the sentence "
                                 "embeddings (cosine) with a length prior: each pick maximises log(1 + response "
                                 "tokens) x distance to the nearest chosen row; reads ifd, ifd_reverse, "
                                 "response_tokens, embedding.", ("ifd", "reverse", "embedding"), _kcenter_length,
               None),
    )
}


RECOMMENDED = "random_per_source"
"""The preset ``hf-select select`` runs when given no steps, chosen by a rule on two pools (benchmarks/RESULTS.md,
"pool_a" and "pool_b"; ``benchmarks/choose_default.py``): among the methods that need no target set, the one that
loses to random on no eval set of either pool and has the best mean rank over all eval sets, ties to the cheaper;
``random_per_source`` when none qualifies. Measured with ``hf-select compare`` (10,000 supervised tokens per method,
eval sets in three answer styles, 5 random draws with their own training seeds, 95% prediction-interval verdicts,
SmolLM2-135M-Instruct, 2026-12-06): on pool A the length presets (``longest_gated``, the former recommendation,
``longest_diverse``, ``kcenter_length``) lost to random on Dolly's human answers and on GSM8K, ``ifd_gated`` on
AlpacaEval and Dolly, and InstructMining's rule fitted on the run's own fine-tunes on AlpacaEval and Dolly; only
``random_per_source`` and the target-aware ``target_lm`` and ``loss_reduction`` lost nowhere. On pool B (LIMA,
GSM8K, Dolly, Code Alpaca, 5% swapped responses) ``random_per_source`` tied random on all three eval sets again,
``target_lm`` lost on Dolly and GSM8K, and ``loss_reduction`` lost nowhere (it beat random on 3 of the 6 eval sets
of both pools). So with a target set the rule picks ``loss_reduction``; without one, the only blind method that lost
nowhere is ``random_per_source``, this default."""


def column_options(name: str, columns: Sequence[str]) -> tuple[dict[str, Any], str | None]:
    """Options that fit preset ``name`` to rows with these ``columns``, and a note saying what changed (None when
    nothing did): ``random_per_source`` on rows without a ``source`` column is a plain random draw.

    Example:
        >>> column_options("random_per_source", ["instruction", "output"])
        ({'stratify_by': None}, "the rows have no 'source' column, so the draw is a plain random one")
        >>> column_options("random_per_source", ["instruction", "output", "source"])
        ({}, None)
    """
    if name == "random_per_source" and "source" not in columns:
        return {"stratify_by": None}, "the rows have no 'source' column, so the draw is a plain random one"
    return {}, None


def missing_scores(name: str, columns: Sequence[str]) -> list[str]:
    """What the rows lack for preset ``name``: one line per missing score column, naming the command that writes
    it (empty when nothing is missing).

    Example:
        >>> missing_scores("longest_gated", ["instruction", "output", "ifd"])
        ["'ifd_reverse' (hf-select score ifd --dataset DATA --output OUT --set reverse=true)"]
    """
    have = set(columns)
    wanted = [NEED_COLUMNS[need] for need in PRESETS[name].needs if need in NEED_COLUMNS]
    return [f"{col!r} ({how})" for col, how in wanted if col not in have]


def preset_steps(name: str, *, count: int | None = None, fraction: float | None = None,
                 **options: Any) -> list[dict[str, Any]]:
    """The steps of preset ``name`` for a budget of ``count`` rows or a ``fraction`` of the input.

    Options: ``max_reverse_quantile`` (of the gated presets), ``column`` (the IFD column ranked),
    ``target`` (the target embeddings, for ``target`` and ``target_lm``; ``aggregate``: max, mean or round_robin),
    ``scores`` / ``min_distance`` (for ``fusion``), ``bins`` (for ``ifd_length``), ``stratify_by`` (for
    ``ifd_quota``), ``clusters`` (for ``longest_diverse``, default 20), ``weight_column`` / ``weight_transform``
    (for ``kcenter_length``, default ``response_tokens`` / ``log1p``).

    Raises:
        HFSelectError: an unknown preset, or a budget that is not exactly one of count / fraction.

    Example:
        >>> preset_steps("superfiltering", fraction=0.1)
        [{'step': 'ifd_rule', 'column': 'ifd_ppl', 'fraction': 0.1}]
    """
    if name not in PRESETS:
        raise HFSelectError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
    if (count is None) == (fraction is None):
        raise HFSelectError(f"preset {name!r}: give exactly one of count (rows) or fraction (0 < f <= 1)")
    budget: dict[str, Any] = {"count": int(count)} if count is not None else {"fraction": float(fraction)}
    return PRESETS[name].build(budget, options)
