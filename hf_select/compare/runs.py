"""The comparison itself: :func:`run_compare` builds the pool (stage ``pool/``), the base model's losses
(``base/``) and the shared scores of the step methods (``scores/``), then runs every method into its own folder
(``random/seed<N>/`` per random seed) and writes ``compare.json`` after each, ``compare.md`` and ``compare.png`` at
the end. The simple methods (random, longest, full) and the step methods are selection -> train -> eval stages
here; the recipe methods run through :mod:`hf_select.compare.recipe_methods`.

Example:
    >>> method_folder(Path("cmp"), "random", 3), method_folder(Path("cmp"), "fusion", None)
    (PosixPath('cmp/random/seed3'), PosixPath('cmp/fusion'))
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HFSelectError
from .config import BASE_METHODS, SIMPLE_METHODS, CompareConfig, recipe_args
from .diagnostics import SCORE_STAGES, recipe_diagnostics, step_diagnostics
from .markdown import render_markdown
from .plot import plot_compare
from .pool import (
    SOURCE_COLUMN,
    build_pool,
    corrupted_counts,
    count_by,
    eval_rows,
    eval_specs,
    file_fingerprint,
    mean_or_none,
    response_lengths,
)
from .recipe_methods import eval_losses, eval_stages, run_recipe
from .results import CompareResult, MethodResult, write_json
from .steps import method_needs, method_steps, score_pool

logger = logging.getLogger(__name__)

POOL_MARKER = "compare_pool.json"


@dataclass
class _Shared:
    """What every method of one comparison reads: the pool, its budget, the eval sets, the base losses and the
    shared scores of the step methods."""

    config: CompareConfig
    out: Path
    pool: Any
    pool_dir: str
    pool_key: str
    budget: int
    eval_specs: list[dict[str, Any]]
    lengths: dict[str, list[float]]
    base_loss: dict[str, float]
    step_methods: list[str]
    scored: Any = None
    scores_meta: dict[str, Any] = field(default_factory=dict)
    scores_error: str | None = None


def run_compare(config: CompareConfig) -> CompareResult:
    """Run every method of ``config`` and write ``compare.json``, ``compare.md`` and ``compare.png`` to
    ``config.output_dir``. Finished methods are reused when it runs again with the same settings; a method folder
    made from another pool (other files, contents, ``pool_limit`` or ``pool_seed``) is removed and computed again.

    Raises:
        HFSelectError: when the pool or an eval set cannot be read (a method's own failure is recorded instead).

    Example:
        >>> result = run_compare(CompareConfig(pool=["a.json", "b.json"], eval=["e.json"], budget=0.1,
        ...                                    methods=["random", "ifd"], output_dir="cmp/"))  # doctest: +SKIP
        >>> result.verdict(result.runs("ifd")[0], "e")  # doctest: +SKIP
        'within 2 sd (-0.8 sd)'
    """
    from ..stages import StageRunner, load_stage_dataset

    start = time.time()
    out = Path(config.output_dir)
    runner = StageRunner(out, resume=config.resume)
    pool_params = {"files": [file_fingerprint(f) for f in config.pool], "limit": config.pool_limit,
                   "seed": config.pool_seed}

    def make_pool(folder: Path) -> dict[str, Any]:
        pool, info = build_pool(config.pool, limit=config.pool_limit, seed=config.pool_seed)
        pool.save_to_disk(str(folder / "data"))
        return {"rows": len(pool), **info}

    pool_info = runner.run("pool", make_pool, params=pool_params)
    pool = load_stage_dataset(pool_info.path)
    pool_dir = str(pool_info.path / "data")
    k = config.budget_rows(len(pool))
    specs = eval_specs(config.eval)
    for spec in specs:  # fail early, once, on an unreadable eval set
        eval_rows(spec["path"], questions=config.eval_questions, limit=config.eval_limit)
    lengths = response_lengths(pool, config.model_name_or_path)
    logger.info("compare: pool of %d rows (%s), budget %d rows, methods %s", len(pool),
                pool_info.meta.get("composition"), k, config.methods)

    base_loss, base_rows = _base_losses(config, out / "base", pool_dir, specs) if config.train else ({}, {})
    for spec in specs:
        spec["rows"] = base_rows.get(spec["name"])
    shared = _Shared(config=config, out=out, pool=pool, pool_dir=pool_dir, pool_key=pool_info.key, budget=k,
                     eval_specs=specs, lengths=lengths, base_loss=base_loss,
                     step_methods=[m for m in config.methods if m not in BASE_METHODS])
    partial = CompareResult(
        output_dir=str(out), config=json.loads(json.dumps(config.to_dict(), default=str)), pool_rows=len(pool),
        pool_composition=dict(pool_info.meta.get("composition") or {}),
        pool_mean_response_chars=mean_or_none(lengths["chars"]),
        pool_mean_response_tokens=mean_or_none(lengths["tokens"]), budget_rows=k, eval_sets=specs,
        base_loss=base_loss, methods=[], pool_corrupted=corrupted_counts(pool, range(len(pool))),
        scores_seconds=_stage_seconds(out / "scores"),
    )
    if shared.step_methods:
        _score_step_methods(shared)
    for method in config.methods:
        for seed in [config.seed + i for i in range(config.random_seeds)] if method == "random" else [None]:
            partial.methods.append(_run_method(shared, method, seed))
            partial.seconds = round(time.time() - start, 2)
            write_json(partial, out)
    partial.seconds = round(time.time() - start, 2)
    partial.files = {"json": str(out / "compare.json"), "markdown": str(out / "compare.md")}
    if config.train:
        partial.files["chart"] = str(out / "compare.png")
    write_json(partial, out)
    (out / "compare.md").write_text(render_markdown(partial), encoding="utf-8")
    if config.train:
        plot_compare(partial, out / "compare.png")
    return partial


def method_folder(out: Path, method: str, seed: int | None) -> Path:
    """Where one method's stages live: ``out/<method>``, ``out/random/seed<N>`` for a random seed."""
    return out / method / f"seed{seed}" if method == "random" else out / method


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _score_step_methods(shared: _Shared) -> None:
    """Stage folder ``scores/``: every score the step methods need, made once (a failure is recorded against
    every step method; the others still run)."""
    config = shared.config
    needs = set().union(*(method_needs(m, config.step_methods) for m in shared.step_methods))
    t0 = time.time()
    try:
        shared.scored, shared.scores_meta = score_pool(config, shared.out / "scores", shared.pool_dir, needs)
    except Exception as err:
        shared.scores_error = f"scoring the pool failed: {_one_line(err)}"[:500]
        logger.warning("compare: %s", shared.scores_error, exc_info=True)
    logger.info("compare: shared scores %s in %.0f s", sorted(needs), time.time() - t0)


def _run_method(shared: _Shared, method: str, seed: int | None) -> MethodResult:
    """One method (one random seed) into its folder; its failure is recorded in the result, never raised."""
    config, k = shared.config, shared.budget
    label = f"random (seed {seed})" if method == "random" else method
    folder = method_folder(shared.out, method, seed)
    logger.info("compare: %s ...", label)
    t0 = time.time()
    result = MethodResult(method=method, label=label, seed=seed, output_dir=str(folder))
    try:
        _check_pool_marker(folder, shared.pool_key)
        if method in SIMPLE_METHODS:
            run = _run_simple(method, seed, folder, shared.pool_dir, k, config, shared.eval_specs)
        elif method in shared.step_methods:
            if shared.scored is None:
                raise HFSelectError(shared.scores_error or "the shared scores are missing")
            steps = method_steps(method, k, custom=config.step_methods, target=shared.scores_meta.get("target"),
                                 options=(config.preset_options or {}).get(method))
            run = _run_selection(method, None, folder, shared.scored, steps, config, shared.eval_specs)
        else:
            run = run_recipe(method, folder, shared.pool_dir, len(shared.pool), k, config, shared.eval_specs)
        _fill(result, run, shared.pool, shared.lengths, shared.base_loss)
        if method in SCORE_STAGES:
            result.diagnostics = recipe_diagnostics(method, folder, shared.pool, shared.lengths, run["selection"])
        elif method in shared.step_methods:
            result.diagnostics = step_diagnostics(method, shared.scored, shared.pool, shared.lengths,
                                                  run["selection"])
    except Exception as err:  # one method's failure must not stop the others
        result.status = "error"
        result.error = _one_line(err)[:500]
        result.traceback = traceback.format_exc()
        logger.warning("compare: %s failed: %s", label, result.error, exc_info=True)
    result.seconds = round(time.time() - t0, 2)
    result.compute_seconds = _stage_seconds(folder)
    return result


def _base_losses(config: CompareConfig, folder: Path, pool_dir: str,
                 specs: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, int]]:
    """The base model's loss and the completions scored, per eval set (stages ``eval_<name>`` under
    ``output_dir/base``)."""
    from ..stages import StageRunner

    metas = eval_stages(StageRunner(folder, resume=config.resume), recipe_args(config, folder, pool_dir),
                        config.model_name_or_path, specs, limit=config.eval_limit)
    return eval_losses(metas), {name: int(meta["rows"]) for name, meta in metas.items()}


def _check_pool_marker(folder: Path, pool_key: str) -> None:
    """A method folder made from another pool is stale: its stages would be reused by name. Remove it."""
    marker = folder / POOL_MARKER
    if folder.exists():
        stored = json.loads(marker.read_text()).get("pool_key") if marker.is_file() else None
        if stored != pool_key:
            logger.warning("compare: %s was made from another pool; computing it again", folder)
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"pool_key": pool_key}))


def _run_simple(method: str, seed: int | None, folder: Path, pool_dir: str, k: int, config: CompareConfig,
                specs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """random / longest / full with the recipes' machinery: data -> selection -> train -> eval stages."""
    from ..stages import StageRunner, data_stage

    args = recipe_args(config, folder, pool_dir)
    runner = StageRunner(folder, resume=config.resume)
    data = data_stage(runner, args)
    steps: list[dict[str, Any]] = {
        "random": [{"step": "random", "count": k}],
        "longest": [{"step": "longest", "count": k}],
        "full": [],
    }[method]
    return _run_selection(method, seed, folder, data, steps, config, specs, runner=runner, args=args)


def _run_selection(method: str, seed: int | None, folder: Path, data: Any, steps: Sequence[Mapping[str, Any]],
                   config: CompareConfig, specs: Sequence[Mapping[str, Any]], *, runner: Any = None,
                   args: Any = None) -> dict[str, Any]:
    """selection -> train -> eval stages under ``folder`` for ``steps`` over ``data`` (the pool's rows, or the
    shared scored pool). With ``config.train`` off, only the selection stage runs."""
    from ..selection import select
    from ..stages import StageRunner

    if args is None:
        args = recipe_args(config, folder, str(folder))
    runner = runner or StageRunner(folder, resume=config.resume)
    steps = [dict(s) for s in steps]
    sel_seed = config.seed if seed is None else seed
    selection, _ = runner.selection_stage("selection", lambda: select(data, steps, seed=sel_seed),
                                          params={"steps": steps, "seed": sel_seed, "input": data._fingerprint})
    if not config.train:
        return {"selection": selection, "model_dir": None, "eval": {}, "train_loss": None,
                "reused": all(i.reused for i in runner.infos)}
    model_dir, train = runner.sft_stage("train", selection.dataset, args.train_config(),
                                        model_name_or_path=args.model_name_or_path)
    losses = eval_losses(eval_stages(runner, args, model_dir, specs, limit=config.eval_limit))
    return {"selection": selection, "model_dir": str(model_dir), "eval": losses,
            "train_loss": train.meta.get("train_loss"), "reused": all(i.reused for i in runner.infos)}


def _fill(result: MethodResult, run: Mapping[str, Any], pool: Any, lengths: Mapping[str, list[float]],
          base_loss: Mapping[str, float]) -> None:
    """Copy what a method's run chose and measured into ``result``."""
    ids = run["selection"].row_ids
    sources = pool[SOURCE_COLUMN]
    result.rows = len(ids)
    result.composition = count_by(sources[i] for i in ids)
    result.mean_response_chars = mean_or_none([lengths["chars"][i] for i in ids])
    result.mean_response_tokens = mean_or_none([lengths["tokens"][i] for i in ids]) if lengths["tokens"] else None
    result.eval_loss = {k: round(v, 6) for k, v in run["eval"].items()}
    result.delta_vs_base = {k: round(v - base_loss[k], 6) for k, v in run["eval"].items() if k in base_loss}
    result.train_loss = run.get("train_loss")
    result.model_dir = run["model_dir"]
    result.reused = bool(run["reused"])
    result.corrupted = corrupted_counts(pool, ids)


def _stage_seconds(folder: Path) -> float:
    """Seconds the finished stages directly under ``folder`` took (their ``stage.json``)."""
    total = 0.0
    if folder.is_dir():
        for marker in folder.glob("*/stage.json"):
            try:
                total += float(json.loads(marker.read_text()).get("seconds") or 0.0)
            except (OSError, ValueError):
                continue
    return round(total, 2)
