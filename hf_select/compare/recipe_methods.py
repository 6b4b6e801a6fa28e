"""The recipe methods of a comparison (``ifd``, ``cherry``, ``mods``, ``instructmining``): each runs through its
recipe's own ``run_*`` function (:mod:`hf_select.recipes`) with :func:`recipe_arguments`, so the comparison measures
exactly what the recipes ship; and the eval stages every trained method ends with (:func:`eval_stages`).

Example:
    >>> from hf_select.compare import CompareConfig, recipe_arguments
    >>> cfg = CompareConfig(pool=["a"], eval=["e.json"], budget=0.1, output_dir="/tmp/c")
    >>> args = recipe_arguments("ifd", cfg, "/tmp/c/ifd", "/tmp/c/pool/data", 600, "e.json")
    >>> args.ifd_count
    60
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import HFSelectError
from .config import RECIPES, CompareConfig, recipe_base_args

logger = logging.getLogger(__name__)


def recipe_entry(method: str) -> tuple[type, Callable[[Any], dict[str, Any]]]:
    """The recipe behind a method: its arguments class and its ``run_*`` function (the recipes are imported when
    first needed: they pull in trl).

    Example:
        >>> recipe_entry("mods")[1].__name__
        'run_mods'
    """
    if method not in RECIPES:
        raise HFSelectError(f"{method!r} is not a recipe method; one of {sorted(RECIPES)}")
    from ..recipes import cherry, instruct_mining, mods, superfilter

    entries: dict[str, tuple[type, Callable[[Any], dict[str, Any]]]] = {
        "ifd": (superfilter.SuperfilterArguments, superfilter.run_superfilter),
        "cherry": (cherry.CherryArguments, cherry.run_cherry),
        "mods": (mods.MoDSArguments, mods.run_mods),
        "instructmining": (instruct_mining.InstructMiningArguments, instruct_mining.run_instruct_mining),
    }
    return entries[method]


def recipe_arguments(method: str, config: CompareConfig, folder: str | os.PathLike, pool_dir: str, pool_rows: int,
                     eval_path: str) -> Any:
    """The recipe's Arguments for one method of a comparison: the shared training and eval settings, the budget
    as the recipe's own size fields, then ``config.method_args[method]``.

    Budget mapping: ``ifd``/``cherry``: ``ifd_count``; ``mods``: a quarter of it as the k-center seed set, the
    rest as the necessity budget (seed rows are not answered again); ``instructmining``: one subset size (no size
    search on the eval set). ``ifd`` scores with ``model_name_or_path`` unless told otherwise; ``cherry`` uses
    ``min(100, pool_rows // 100)`` k-means clusters (at least 2) of 10 rows for the pre-experienced model.

    Example:
        >>> cfg = CompareConfig(pool=["a"], eval=["e.json"], budget=0.1, output_dir="/tmp/c")
        >>> args = recipe_arguments("mods", cfg, "/tmp/c/mods", "/tmp/c/pool", 600, "e.json")
        >>> args.seed_count, args.necessity_count
        (15, 45)
    """
    cls, _ = recipe_entry(method)
    class_name = cls.__name__
    k = config.budget_rows(pool_rows)
    values = recipe_base_args(config, folder, pool_dir)
    values["eval_dataset"] = eval_path
    options = dict((config.method_args or {}).get(method) or {})
    if method == "ifd":
        values.update(ifd_count=k, ifd_fraction=None, ifd_model_name_or_path=config.model_name_or_path)
    elif method == "cherry":
        values.update(ifd_count=k, ifd_fraction=None, n_clusters=min(100, max(2, pool_rows // 100)), per_cluster=10)
    elif method == "mods":
        seed_rows = max(1, round(k / 4))
        values.update(seed_count=seed_rows, necessity_count=max(1, k - seed_rows), necessity_skip_seed=True)
    elif method == "instructmining":
        sizes = options.get("subset_sizes") or [k]
        values.update(subset_sizes=[k])
        if len(sizes) == 1 and "grid_eval_dataset" not in options:
            # one size: nothing is chosen on the grid; its eval is a one-row formality, not a peek at the eval set
            values.update(grid_eval_dataset=config.dev or eval_path, grid_eval_limit=1)
        elif "grid_eval_dataset" not in options and config.dev:
            values.update(grid_eval_dataset=config.dev)  # the size is picked on the dev set, never the eval set
        elif "grid_eval_dataset" not in options:
            logger.warning("compare: instructmining searches %s sizes on the eval set itself; set "
                           "CompareConfig.dev (or method_args['instructmining']['grid_eval_dataset']) to a separate "
                           "dev set to avoid it", sizes)
    if method in ("ifd", "cherry") and "ifd_fraction" in options and "ifd_count" not in options:
        values["ifd_count"] = None
    values.update(options)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise HFSelectError(f"method_args[{method!r}] has fields {class_name} does not know: {unknown}")
    return cls(**values)


def run_recipe(method: str, folder: Path, pool_dir: str, pool_rows: int, k: int, config: CompareConfig,
                eval_specs: Sequence[Mapping[str, Any]], *, dev_spec: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    """A recipe method through the recipe's own ``run_*`` function; other eval sets (then the dev set) as extra
    stages."""
    from ..selection import SelectionResult
    from ..stages import StageRunner

    _, run = recipe_entry(method)
    args = recipe_arguments(method, config, folder, pool_dir, pool_rows, eval_specs[0]["path"])
    summary = run(args)
    stage = "selection"
    if method == "instructmining":
        best = json.loads((folder / "grid" / "stage.json").read_text())["meta"]["best_size"]
        stage = f"grid_{best}_selection"
    selection = SelectionResult.load(str(folder / stage / "selection"))
    model_dir = summary["model_dir"]
    losses = {eval_specs[0]["name"]: float(summary["eval"]["loss"])}
    post = StageRunner(folder, resume=config.resume)
    losses.update(eval_losses(eval_stages(post, args, model_dir, eval_specs[1:], limit=config.eval_limit)))
    dev = eval_losses(eval_stages(post, args, model_dir, [dev_spec], limit=config.eval_limit)) if dev_spec else {}
    reused = all(v == "reused" for v in summary.get("stages", {}).values()) and all(i.reused for i in post.infos)
    return {"selection": selection, "model_dir": str(model_dir), "eval": losses, "dev": dev.get("dev"),
            "train_loss": (summary.get("train") or {}).get("train_loss"), "reused": reused}


def eval_stages(runner: Any, args: Any, model_dir: str | os.PathLike, eval_specs: Sequence[Mapping[str, Any]], *,
                limit: int | None) -> dict[str, dict[str, Any]]:
    """Stage ``eval_<name>`` per eval set under ``runner``: the held-out loss of ``model_dir`` (the eval stage's
    meta, ``loss`` and ``rows``), by eval set name."""
    from ..stages import eval_stage

    return {spec["name"]: eval_stage(runner, args, model_dir, name=f"eval_{spec['name']}", dataset=spec["path"],
                                     limit=limit, base_model=False) for spec in eval_specs}


def eval_losses(metas: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The losses of :func:`eval_stages`' metas, by eval set name.

    Example:
        >>> eval_losses({"alpaca": {"loss": 1.25, "rows": 8}})
        {'alpaca': 1.25}
    """
    return {name: float(meta["loss"]) for name, meta in metas.items()}
