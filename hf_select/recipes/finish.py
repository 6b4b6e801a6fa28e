"""The common ending of every recipe, after its selection and final fine-tune: held-out loss (``eval`` stage), the
report (``report`` stage), the dataset and model cards (``hub`` stage: ``hub/dataset`` and ``hub/model``), the push
with ``--push_to_hub``, and ``summary.json``.

Example:
    >>> from hf_select.recipes.arguments import RecipeArguments
    >>> reproduce_command("mods", RecipeArguments(dataset_name="demo:40", output_dir="/tmp/r"))
    'accelerate launch recipes/mods.py --dataset_name demo:40 --output_dir /tmp/r'
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import scrub
from ..stages import StageRunner, eval_stage, report_stage
from .arguments import RecipeArguments, args_to_cli

logger = logging.getLogger(__name__)


def reproduce_command(recipe: str, args: Any) -> str:
    """The command that reproduces this run (for the dataset card)."""
    return f"accelerate launch recipes/{recipe}.py " + " ".join(shlex.quote(a) for a in args_to_cli(args))


def finish_recipe(
    runner: StageRunner,
    args: RecipeArguments,
    *,
    method: str,
    scored: Any,
    selection: Any,
    model_dir: str | os.PathLike,
    train_meta: Mapping[str, Any] | None = None,
    score_columns: Sequence[str] = (),
    extra_models: Sequence[Mapping[str, str]] = (),
    recipe: str | None = None,
) -> dict[str, Any]:
    """The common ending: eval, report, cards (``hub`` stage: ``hub/dataset`` and ``hub/model``) and, with
    ``--push_to_hub``, the push. Returns a summary dict (also written to ``<output_dir>/summary.json``)."""
    from ..hub import build_card_context, push_outputs, write_hub_folders

    eval_meta = eval_stage(runner, args, model_dir)
    report_dir = report_stage(runner, args, scored, selection, score_columns=score_columns,
                              title=f"{method} on {args.dataset_name}")
    demo = args.dataset_name.startswith("demo")
    stages = [{"name": i.name, "params": _short_params(i.params), "meta": i.meta} for i in runner.infos]
    subset = selection.dataset

    def compute(folder: Path) -> dict[str, Any]:
        ctx = build_card_context(
            selection=selection, source=args.dataset_name, method=method, rows_in=len(scored),
            base_model=args.model_name_or_path, training=args.train_config().to_dict(),
            train_loss=(train_meta or {}).get("train_loss"), eval_result=eval_meta, stages=stages, scored=scored,
            score_columns=score_columns, source_split=None if demo else args.dataset_train_split,
            license=args.license or ("apache-2.0" if demo else None),
            reproduce=reproduce_command(recipe or method, args), extra_models=extra_models,
        )
        if runner.is_main:
            write_hub_folders(folder, subset=subset, context=ctx, model_dir=str(model_dir),
                              report_dir=str(report_dir) if report_dir else None, selection=selection,
                              dataset_id=args.hub_dataset_id, model_id=args.hub_model_id)
        return {"rows_out": len(subset), "eval_loss": (eval_meta or {}).get("loss")}

    hub_info = runner.run("hub", compute, params={"eval": eval_meta, "rows": len(subset),
                                                  "dataset_id": args.hub_dataset_id, "model_id": args.hub_model_id,
                                                  "stages": [i.key for i in runner.infos]})
    summary = {
        "method": method, "output_dir": str(runner.output_dir), "rows_in": len(scored), "rows_out": len(subset),
        "model_dir": str(model_dir), "hub_folder": str(hub_info.path), "report_dir": str(report_dir) if report_dir
        else None, "eval": eval_meta, "train": dict(train_meta or {}),
        "stages": {i.name: ("reused" if i.reused else "computed") for i in runner.infos},
    }
    if args.push_to_hub and runner.is_main:
        summary["pushed"] = push_outputs(hub_info.path, dataset_id=args.hub_dataset_id, model_id=args.hub_model_id,
                                         allow_public=args.allow_public)
    if runner.is_main:
        (runner.output_dir / "summary.json").write_text(json.dumps(scrub(summary), indent=2, default=str))
        logger.info("done: subset, report, cards and model under %s", runner.output_dir)
    return summary


def _short_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Stage parameters for the card, without bulky entries (digests, the training config: on the model card)."""
    out = {k: v for k, v in params.items() if k not in ("row_ids", "train", "stages")}
    if isinstance(out.get("config"), Mapping):
        out["config"] = {k: v for k, v in out["config"].items() if v is not None}
    return _shorten(out)


def _shorten(value: Any, limit: int = 120) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 3] + "..."
    if isinstance(value, Mapping):
        return {k: _shorten(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v, limit) for v in value]
    return value

