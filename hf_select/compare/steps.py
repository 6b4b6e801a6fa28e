"""The step methods of a comparison: selection presets (:mod:`hf_select.selection.presets`) and user-given step
lists, all run over one shared scoring of the pool.

Scoring is most of a comparison's cost, so every step method reads the same scored pool, made once in
``output_dir/scores/`` with exactly the scorers the requested methods need (IFD with reverse IFD, the quality
score, sentence embeddings, the target set's embeddings, the comparison model's own RDS+ embeddings of the rows
and of the target set, the loss reduction under a copy tuned on the target set). Each method is then only a
selection, a fine-tune and its evals; the IFD variants differ by their steps alone, never by their scores.

A custom method is a step list whose budgeted steps may say ``count: budget`` (the comparison's row budget):

Example:
    >>> custom = {"judge_top": [{"step": "top", "column": "quality", "count": "budget"}]}
    >>> resolve_steps(custom["judge_top"], 300)
    [{'step': 'top', 'column': 'quality', 'count': 300}]
    >>> sorted(steps_needs(custom["judge_top"]))
    ['quality']
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import HFSelectError
from .config import recipe_args

logger = logging.getLogger(__name__)

BUDGET = "budget"
TARGET_FILE = "target_embeddings.npy"
LM_TARGET_STAGE = "lm_target"  # scores/lm_target/target_embeddings.npy: the target set embedded by the LM
# score columns -> the scorer (need) that writes them, to infer what a custom step list needs
_COLUMN_NEEDS = {"ifd": "ifd", "ifd_ppl": "ifd", "loss_conditioned": "ifd", "loss_direct": "ifd",
                 "response_tokens": "ifd", "ifd_reverse": "reverse", "ifd_reverse_ppl": "reverse",
                 "judge_score": "quality", "quality": "quality", "embedding": "embedding",
                 "lm_embedding": "lm_embedding", "loss_reduction": "loss_reduction", "loss_base": "loss_reduction",
                 "loss_tuned": "loss_reduction"}


def resolve_steps(steps: Sequence[Mapping[str, Any]], budget: int) -> list[dict[str, Any]]:
    """Copy of ``steps`` with every ``count``/``k`` of ``"budget"`` replaced by ``budget`` rows."""
    out = []
    for step in steps:
        s = dict(step)
        for key in ("count", "k"):
            if s.get(key) == BUDGET:
                s[key] = int(budget)
        out.append(s)
    return out


def steps_needs(steps: Sequence[Mapping[str, Any]]) -> set[str]:
    """The scorers a step list reads, inferred from the column names it mentions (and target steps)."""
    needs: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, str) and value in _COLUMN_NEEDS:
            needs.add(_COLUMN_NEEDS[value])
        elif isinstance(value, Mapping):
            for k, v in value.items():
                visit(k)
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)

    for step in steps:
        visit({k: v for k, v in step.items() if k != "step"})
        name = step.get("step")
        if name == "ifd_rule":
            needs.add("ifd")
        elif name == "consistency_gate":
            needs.add("reverse")
        elif name in ("kcenter", "facility_location", "fused_diverse", "dedup_near", "kmeans_sample"):
            needs.add("lm_embedding" if step.get("column") == "lm_embedding" else "embedding")
        elif name == "target_similarity":
            lm = step.get("column") == "lm_embedding"
            needs.update({"lm_embedding", "lm_target"} if lm else {"embedding", "target"})
    if "reverse" in needs:
        needs.add("ifd")
    return needs


def lm_target_path(target: str | None) -> str | None:
    """The LM-embedded target set's file, beside the sentence-embedded one :func:`score_pool` reports as
    ``target`` (``scores/target/...`` -> ``scores/lm_target/...``; it is itself when only the LM's was made).

    Example:
        >>> lm_target_path("out/scores/target/target_embeddings.npy")
        'out/scores/lm_target/target_embeddings.npy'
    """
    if not target:
        return None
    path = Path(target)
    return str(path.parents[1] / LM_TARGET_STAGE / TARGET_FILE)


def method_steps(method: str, budget: int, *, custom: Mapping[str, Sequence[Mapping[str, Any]]] | None,
                 target: str | None, options: Mapping[str, Any] | None = None,
                 lm_target: str | None = None) -> list[dict[str, Any]]:
    """The steps of one step method (a preset, or a custom list from ``custom``) for ``budget`` rows.

    ``target``: the target set's embeddings file (``score_pool``'s ``target``); ``lm_target``: the LM-embedded one
    for presets that need ``lm_target`` (default: the file beside ``target``, :func:`lm_target_path`).
    """
    from ..selection.presets import PRESETS, preset_steps

    if custom and method in custom:
        return resolve_steps(custom[method], budget)
    if method in PRESETS:
        opts = dict(options or {})
        if "lm_target" in PRESETS[method].needs:
            opts.setdefault("target", lm_target or lm_target_path(target))
        elif "target" in PRESETS[method].needs:
            opts.setdefault("target", target)
        return preset_steps(method, count=budget, **opts)
    raise HFSelectError(f"{method!r} is neither a preset nor a custom step method")


def method_needs(method: str, custom: Mapping[str, Sequence[Mapping[str, Any]]] | None) -> set[str]:
    """What ``method`` needs scored (see :data:`hf_select.selection.presets.SCORE_NEEDS`)."""
    from ..selection.presets import PRESETS
    from .fitted import FIT_NEEDS, FITTED_METHODS

    if custom and method in custom:
        return steps_needs(custom[method])
    if method in FITTED_METHODS:
        return set(FIT_NEEDS)
    return set(PRESETS[method].needs)


def score_pool(config: Any, out: Path, pool_dir: str, needs: set[str]) -> tuple[Any, dict[str, Any]]:
    """Stage folder ``out/scores``: the pool with every score the step methods need, made once.

    IFD uses the comparison's model and template (``reverse=True`` when a method needs it), the quality score the
    offline LLM judge (or ``config.quality_model_name_or_path`` as a reward model), the embeddings the sentence
    embedder; the target set is embedded with the same embedder into ``scores/target/target_embeddings.npy``. The
    ``lm_embedding`` column and ``scores/lm_target/target_embeddings.npy`` come from the comparison's model
    (``causal_lm``, whole rows in its template, ``pooling="weighted_mean"``: RDS+); ``loss_reduction`` from
    :class:`~hf_select.scoring.loss_reduction.LossReductionScorer` with the comparison's model and
    ``CompareConfig.target`` (its default steps and learning rate).
    Returns the scored dataset and ``{"target": path or None, "lm_target": path or None, "columns": [...]}``
    (``target`` is the LM's file when only that one was made).
    """
    from ..stages import StageRunner, data_stage, score_stage

    args = recipe_args(config, out, pool_dir)
    runner = StageRunner(out, resume=config.resume)
    scored = data_stage(runner, args)
    dtype = config.score_dtype
    if "ifd" in needs or "reverse" in needs:
        from ..scoring.ifd import IFDConfig, IFDScorer

        ifd = IFDScorer(IFDConfig(model_name_or_path=config.model_name_or_path, template=config.template,
                                  max_length=config.score_max_length, reverse="reverse" in needs, dtype=dtype))
        scored = score_stage(runner, "ifd", ifd, scored, args)
    if "quality" in needs:
        from ..scoring.quality import QualityConfig, QualityScorer

        backend = "reward" if config.quality_model_name_or_path else "judge"
        quality = QualityScorer(QualityConfig(backend=backend, model_name_or_path=config.quality_model_name_or_path,
                                              max_length=config.score_max_length, dtype=dtype))
        scored = score_stage(runner, "quality", quality, scored, args)
    embedder = None
    if "embedding" in needs or "target" in needs:
        from ..scoring.embed import EmbedConfig, Embedder

        embedder = Embedder(EmbedConfig(model_name_or_path=config.embed_model_name_or_path, text="row",
                                        normalize=True))
        if "embedding" in needs:
            scored = score_stage(runner, "embed", embedder, scored, args)
    lm_embedder = None
    if "lm_embedding" in needs or "lm_target" in needs:
        from ..scoring.embed import EmbedConfig, Embedder

        # RDS+: the comparison's own model, the whole row in its template, position-weighted mean of the last layer
        lm_embedder = Embedder(EmbedConfig(model_name_or_path=config.model_name_or_path, backend="causal_lm",
                                           text="row", template=config.template, pooling="weighted_mean",
                                           normalize=True, column="lm_embedding",
                                           max_length=config.score_max_length, dtype=dtype))
        if "lm_embedding" in needs:
            scored = score_stage(runner, "lm_embed", lm_embedder, scored, args)
    if ("target" in needs or "lm_target" in needs or "loss_reduction" in needs) and not config.target:
        raise HFSelectError("a target-aware method (e.g. 'target', 'target_lm', 'loss_reduction') needs "
                            "CompareConfig.target: a file of example rows of the kind you want (never the eval set "
                            "itself)")
    if "loss_reduction" in needs:
        from ..scoring.loss_reduction import LossReductionConfig, LossReductionScorer

        reduction = LossReductionScorer(LossReductionConfig(
            model_name_or_path=config.model_name_or_path, target=config.target, target_limit=config.target_limit,
            max_length=config.score_max_length, dtype=dtype))
        scored = score_stage(runner, "loss_reduction", reduction, scored, args)
    target_path = _embed_target(runner, config, embedder) if "target" in needs else None
    lm_target = _embed_target(runner, config, lm_embedder, LM_TARGET_STAGE) if "lm_target" in needs else None
    return scored, {"target": target_path or lm_target, "lm_target": lm_target,
                    "columns": list(scored.column_names)}


def _embed_target(runner: Any, config: Any, embedder: Any, stage: str = "target") -> str:
    import numpy as np

    from ..io import load_rows
    from ..scoring.base import config_to_dict

    def compute(folder: Path) -> dict[str, Any]:
        rows = load_rows(config.target)
        if config.target_limit is not None:
            rows = rows.select(range(min(config.target_limit, len(rows))))
        embedded = embedder.score(rows)
        column = embedder.config.column
        statuses = embedded[f"{column}_status"]
        ok = [i for i, s in enumerate(statuses) if s == "ok"]
        if not ok:
            raise HFSelectError(f"{config.target}: no target row could be embedded (statuses: "
                                f"{sorted(set(statuses))}); set CompareConfig.target to rows with an instruction and "
                                "a response")
        matrix = np.asarray([embedded[i][column] for i in ok], dtype=np.float32)
        if runner.is_main:
            np.save(folder / TARGET_FILE, matrix)
            (folder / "target.json").write_text(json.dumps({"source": config.target, "rows": len(rows),
                                                            "embedded": len(ok)}))
        return {"rows": len(rows), "embedded": len(ok)}

    info = runner.run(stage, compute, params={"target": config.target, "limit": config.target_limit,
                                              "embedder": config_to_dict(embedder.config)})
    return str(info.path / TARGET_FILE)
