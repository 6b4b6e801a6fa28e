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
from ..training import TrainConfig
from .budget import TokenCounts, check_budget, rows_for_tokens, subset_tokens, tokens_stage
from .config import BASE_METHODS, SIMPLE_METHODS, TARGET_METHODS, CompareConfig, recipe_args, run_seeds
from .diagnostics import SCORE_STAGES, recipe_diagnostics, step_diagnostics
from .fitted import FITTED_METHODS, experiments, fit_from_experiments, pool_indicators
from .markdown import render_markdown
from .plan import make_plan
from .plot import plot_compare
from .pool import (
    SOURCE_COLUMN,
    build_pool,
    corrupted_counts,
    count_by,
    dataset_prompt_keys,
    eval_prompt_keys,
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
# what the eval stages measured of each eval set (the base model's run), shown beside the table
EVAL_META_KEYS = ("rows", "rows_scored", "tokens_scored", "tokens_total", "rows_truncated", "unscored", "max_length")


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
    counts: TokenCounts | None = None
    scored: Any = None
    scores_meta: dict[str, Any] = field(default_factory=dict)
    scores_error: str | None = None
    dev_spec: dict[str, Any] | None = None
    row_ids: dict[str, list[int]] = field(default_factory=dict)  # by run label: what each finished run chose
    results: list[Any] = field(default_factory=list)  # the runs so far (the fitted methods learn from them)


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
        'ties (+0.0021 <= ±0.0086)'
    """
    from ..stages import StageRunner, load_stage_dataset

    start = time.time()
    out = Path(config.output_dir)
    runner = StageRunner(out, resume=config.resume)
    specs = eval_specs(config.eval)
    for spec in specs:  # fail early, once, on an unreadable eval set
        eval_rows(spec["path"], questions=config.eval_questions, limit=config.eval_limit)
    _check_target_apart(config, specs)
    dev_specs = _dev_specs(config, specs)
    pool_params = {"files": [file_fingerprint(f) for f in config.pool], "limit": config.pool_limit,
                   "seed": config.pool_seed, "eval_overlap": config.eval_overlap,
                   "evals": [file_fingerprint(s["path"]) for s in specs], "questions": config.eval_questions}

    def make_pool(folder: Path) -> dict[str, Any]:
        exclude = {s["name"]: eval_prompt_keys(s["path"], questions=config.eval_questions) for s in specs}
        pool, info = build_pool(config.pool, limit=config.pool_limit, seed=config.pool_seed, exclude=exclude)
        hits = {name: n for name, n in info["eval_overlap"].items() if n}
        if hits and config.eval_overlap == "error":
            raise HFSelectError(f"the pool asks the questions of eval sets {hits} (rows per eval set); remove them "
                                "from the pool files, or set eval_overlap='drop' to leave them out of the pool")
        if hits:
            logger.warning("compare: %s pool rows ask an eval set's question and were left out of the pool", hits)
        pool.save_to_disk(str(folder / "data"))
        return {"rows": len(pool), **info}

    pool_info = runner.run("pool", make_pool, params=pool_params)
    pool = load_stage_dataset(pool_info.path)
    pool_dir = str(pool_info.path / "data")
    _check_dev_apart_from_pool(dev_specs, pool, config)
    k = config.budget_rows(len(pool))
    lengths = response_lengths(pool, config.model_name_or_path)
    try:
        counts: TokenCounts | None = tokens_stage(runner, pool, pool_info.key, config)
    except HFSelectError as err:
        if config.budget_tokens is not None:
            raise
        logger.warning("compare: no supervised token counts (%s)", err)
        counts = None
    if config.budget_tokens is not None and counts is not None:
        check_budget(config.budget_tokens, counts)
    logger.info("compare: pool of %d rows (%s), budget %s, methods %s", len(pool),
                pool_info.meta.get("composition"),
                f"{config.budget_tokens} tokens" if config.budget_tokens else f"{k} rows", config.methods)
    plan = make_plan(config, pool, counts, [*specs, *dev_specs], k)
    print(plan.text(), flush=True)
    if config.dry_run:
        return CompareResult(output_dir=str(out), config=json.loads(json.dumps(config.to_dict(), default=str)),
                             pool_rows=len(pool), pool_composition=dict(pool_info.meta.get("composition") or {}),
                             pool_mean_response_chars=mean_or_none(lengths["chars"]),
                             pool_mean_response_tokens=mean_or_none(lengths["tokens"]), budget_rows=k,
                             eval_sets=specs, base_loss={}, methods=[], budget_tokens=config.budget_tokens,
                             plan=plan.to_dict())

    base_loss, base_meta = (_base_losses(config, out / "base", pool_dir, [*specs, *dev_specs]) if config.train
                            else ({}, {}))
    dev_info: dict[str, Any] = {}
    if dev_specs:
        dev_meta = base_meta.pop("dev", {})
        dev_info = {"path": dev_specs[0]["path"], "base_loss": base_loss.pop("dev", None),
                    **{key: dev_meta.get(key) for key in EVAL_META_KEYS if key in dev_meta}}
    for spec in specs:
        meta = base_meta.get(spec["name"]) or {}
        spec.update({key: meta.get(key) for key in EVAL_META_KEYS if key in meta})
    shared = _Shared(config=config, out=out, pool=pool, pool_dir=pool_dir, pool_key=pool_info.key, budget=k,
                     eval_specs=specs, lengths=lengths, base_loss=base_loss, counts=counts,
                     step_methods=[m for m in config.methods if m not in BASE_METHODS and m not in FITTED_METHODS],
                     dev_spec=dev_specs[0] if dev_specs else None)
    partial = CompareResult(
        output_dir=str(out), config=json.loads(json.dumps(config.to_dict(), default=str)), pool_rows=len(pool),
        pool_composition=dict(pool_info.meta.get("composition") or {}),
        pool_mean_response_chars=mean_or_none(lengths["chars"]),
        pool_mean_response_tokens=mean_or_none(lengths["tokens"]), budget_rows=k, eval_sets=specs,
        base_loss=base_loss, methods=[], pool_corrupted=corrupted_counts(pool, range(len(pool))),
        scores_seconds=_stage_seconds(out / "scores"), budget_tokens=config.budget_tokens,
        pool_tokens=subset_tokens(range(len(pool)), counts) if counts is not None else {},
        eval_overlap=dict(pool_info.meta.get("eval_overlap") or {}), plan=plan.to_dict(), dev=dev_info,
    )
    shared.results = partial.methods
    fitted = [m for m in config.methods if m in FITTED_METHODS]
    if shared.step_methods or fitted:
        _score_step_methods(shared)
        partial.scores_seconds = _stage_seconds(out / "scores")
    # the fitted methods learn from every other method's fine-tunes: they run last
    for method in [m for m in config.methods if m not in FITTED_METHODS] + fitted:
        for seed in run_seeds(config, method):
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


def _eval_overlap(keys: set[str], specs: Sequence[Mapping[str, Any]], config: CompareConfig) -> dict[str, int]:
    """Per eval set that asks any of the questions ``keys``: how many of its rows do."""
    hits = {s["name"]: len(keys & eval_prompt_keys(s["path"], questions=config.eval_questions)) for s in specs}
    return {name: n for name, n in hits.items() if n}


def _check_target_apart(config: CompareConfig, specs: Sequence[Mapping[str, Any]]) -> None:
    """A target-aware method must not see the eval questions: a target set that asks any of them is an error."""
    if not config.target or not any(m in TARGET_METHODS for m in config.methods):
        return
    hits = _eval_overlap(eval_prompt_keys(config.target), specs, config)
    if hits:
        raise HFSelectError(f"CompareConfig.target {config.target} asks questions of the eval sets {hits} (rows per "
                            "eval set): a target-aware method would be tuned to the eval; use target rows held out "
                            "of every eval set")


def _dev_specs(config: CompareConfig, specs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The dev set as an eval spec named ``dev`` ([] without one), read once; a dev set that asks an eval set's
    question is an error (a method tuned on it would be tuned to the eval)."""
    if not config.dev:
        return []
    eval_rows(config.dev, questions=config.eval_questions, limit=config.eval_limit)
    spec = {**eval_specs([config.dev])[0], "name": "dev"}
    hits = _eval_overlap(eval_prompt_keys(config.dev, questions=config.eval_questions), specs, config)
    if hits:
        raise HFSelectError(f"CompareConfig.dev {config.dev} asks questions of the eval sets {hits} (rows per eval "
                            "set): methods tuned on it would be tuned to the eval; use dev rows held out of every "
                            "eval set")
    return [spec]


def _check_dev_apart_from_pool(dev_specs: Sequence[Mapping[str, Any]], pool: Any, config: CompareConfig) -> None:
    """A dev question in the pool would lower the dev loss of every subset that holds it: an error, with the count."""
    if not dev_specs:
        return
    dev = eval_prompt_keys(dev_specs[0]["path"], questions=config.eval_questions)
    hits = sum(1 for key in dataset_prompt_keys(pool) if key in dev)
    if hits:
        raise HFSelectError(f"CompareConfig.dev {config.dev} asks {hits} questions of the pool; use dev rows the pool "
                            "does not hold (e.g. rows of the same sources outside the pool's sample)")


def method_folder(out: Path, method: str, seed: int | None) -> Path:
    """Where one method's stages live: ``out/<method>``, ``out/random/seed<N>`` for a random draw,
    ``out/<method>__seed<N>`` for another training seed of a repeated method."""
    if seed is None:
        return out / method
    return out / method / f"seed{seed}" if method == "random" else out / f"{method}__seed{seed}"


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _score_step_methods(shared: _Shared) -> None:
    """Stage folder ``scores/``: every score the step methods need, made once (a failure is recorded against
    every step method; the others still run)."""
    config = shared.config
    methods = [*shared.step_methods, *(m for m in config.methods if m in FITTED_METHODS)]
    needs = set().union(*(method_needs(m, config.step_methods) for m in methods))
    t0 = time.time()
    try:
        _check_pool_marker(shared.out / "scores", shared.pool_key)  # scores of another pool are stale
        shared.scored, shared.scores_meta = score_pool(config, shared.out / "scores", shared.pool_dir, needs)
    except Exception as err:
        shared.scores_error = f"scoring the pool failed: {_one_line(err)}"[:500]
        logger.warning("compare: %s", shared.scores_error, exc_info=True)
    logger.info("compare: shared scores %s in %.0f s", sorted(needs), time.time() - t0)


def _run_method(shared: _Shared, method: str, seed: int | None) -> MethodResult:
    """One run of a method (a random draw, or one training seed of a repeated method) into its folder; its failure
    is recorded in the result, never raised."""
    config, k = shared.config, shared.budget
    label = method if seed is None else f"{method} (seed {seed})"
    folder = method_folder(shared.out, method, seed)
    train_seed = config.seed if seed is None else seed
    logger.info("compare: %s ...", label)
    t0 = time.time()
    result = MethodResult(method=method, label=label, seed=seed, output_dir=str(folder), train_seed=train_seed)
    try:
        _check_pool_marker(folder, shared.pool_key)
        if method in SIMPLE_METHODS:
            run = _run_simple(method, train_seed, folder, shared, k)
        elif method in shared.step_methods:
            if shared.scored is None:
                raise HFSelectError(shared.scores_error or "the shared scores are missing")

            def steps_for(rows: int) -> list[dict[str, Any]]:
                return method_steps(method, rows, custom=config.step_methods,
                                    target=shared.scores_meta.get("target"),
                                    options=(config.preset_options or {}).get(method))

            run = _run_selection(train_seed, folder, shared.scored, steps_for, shared, k)
        elif method in FITTED_METHODS:
            run = _run_fitted(method, train_seed, folder, shared, k)
            result.diagnostics = {"rule": run["rule"]}
        else:
            run = run_recipe(method, folder, shared.pool_dir, len(shared.pool), k, config, shared.eval_specs,
                             dev_spec=shared.dev_spec)
        _fill(result, run, shared)
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


def _base_losses(config: CompareConfig, folder: Path, pool_dir: str, specs: Sequence[Mapping[str, Any]]
                 ) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """The base model's loss and what its eval stages measured (rows and tokens scored, rows not scored), per eval
    set (stages ``eval_<name>`` under ``output_dir/base``)."""
    from ..stages import StageRunner

    metas = eval_stages(StageRunner(folder, resume=config.resume), recipe_args(config, folder, pool_dir),
                        config.model_name_or_path, specs, limit=config.eval_limit)
    return eval_losses(metas), {name: dict(meta) for name, meta in metas.items()}


def _check_pool_marker(folder: Path, pool_key: str) -> None:
    """A folder made from another pool is stale: its stages would be reused by name. Remove it."""
    marker = folder / POOL_MARKER
    if folder.exists():
        stored = json.loads(marker.read_text()).get("pool_key") if marker.is_file() else None
        if stored != pool_key:
            logger.warning("compare: %s was made from another pool; computing it again", folder)
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"pool_key": pool_key}))


SIMPLE_STEPS: dict[str, Any] = {
    "random": lambda rows: [{"step": "random", "count": rows}],
    "longest": lambda rows: [{"step": "longest", "measure": "chars", "count": rows}],
    "random_per_source": lambda rows: [{"step": "random", "count": rows, "stratify_by": "source"}],
    "longest_per_source": lambda rows: [{"step": "longest", "measure": "chars", "count": rows,
                                         "stratify_by": "source"}],
    "full": None,
}


def _run_simple(method: str, seed: int, folder: Path, shared: _Shared, k: int) -> dict[str, Any]:
    """The baselines (random, longest, their per-source forms, full) over the pool's rows: data -> selection ->
    train -> eval stages."""
    from ..stages import StageRunner, data_stage

    args = recipe_args(shared.config, folder, shared.pool_dir)
    runner = StageRunner(folder, resume=shared.config.resume)
    data = data_stage(runner, args)
    return _run_selection(seed, folder, data, SIMPLE_STEPS[method], shared, k, runner=runner, args=args)


def _run_selection(seed: int, folder: Path, data: Any, steps_for: Any, shared: _Shared, k: int, *,
                   runner: Any = None, args: Any = None) -> dict[str, Any]:
    """selection -> train -> eval stages under ``folder`` over ``data`` (the pool's rows, or the shared scored pool).

    ``steps_for(rows)`` gives the method's steps for a row count (None: every row, the full pool). With a token
    budget the row count is the smallest whose selection reaches ``budget_tokens`` supervised tokens
    (:func:`~hf_select.compare.budget.rows_for_tokens`), else ``k``. ``seed`` is the selection's seed (random
    steps) and the training seed. With ``config.train`` off, only the selection stage runs."""
    from ..selection import select
    from ..stages import StageRunner

    config = shared.config
    if args is None:
        args = recipe_args(config, folder, str(folder))
    runner = runner or StageRunner(folder, resume=config.resume)
    tokens = config.budget_tokens if steps_for is not None else None

    def make() -> Any:
        if steps_for is None:
            return select(data, [], seed=seed)
        if tokens is None:
            return select(data, steps_for(k), seed=seed)
        counts = shared.counts
        rows, _ = rows_for_tokens(lambda n: select(data, steps_for(n), seed=seed).row_ids, counts.supervised,
                                  tokens, max_rows=len(data))
        result = select(data, steps_for(rows), seed=seed)
        got = subset_tokens(result.row_ids, counts)["supervised_tokens"]
        if got < tokens:
            logger.warning("compare: %s keeps every row its steps allow (%d rows), %d of the %d budget tokens",
                           folder.name, rows, got, tokens)
        return result

    template = steps_for(k if tokens is None else 1) if steps_for is not None else []
    params = {"steps": [dict(s) for s in template], "seed": seed, "input": data._fingerprint,
              "budget_tokens": tokens, "max_length": config.max_length if tokens is not None else None,
              "tokens": shared.counts.key if tokens is not None and shared.counts is not None else None}
    selection, _ = runner.selection_stage("selection", make, params=params)
    if not config.train:
        return {"selection": selection, "model_dir": None, "eval": {}, "eval_meta": {}, "train_loss": None,
                "reused": all(i.reused for i in runner.infos)}
    train_config = TrainConfig.from_object(args.train_config(), seed=seed)
    model_dir, train = runner.sft_stage("train", selection.dataset, train_config,
                                        model_name_or_path=args.model_name_or_path)
    metas = eval_stages(runner, args, model_dir, shared.eval_specs, limit=config.eval_limit)
    # the dev set last: its stage comes after the reported evals (adding a dev set reuses them)
    dev = eval_stages(runner, args, model_dir, [shared.dev_spec], limit=config.eval_limit) if shared.dev_spec else {}
    return {"selection": selection, "model_dir": str(model_dir), "eval": eval_losses(metas),
            "eval_meta": {name: dict(meta) for name, meta in metas.items()},
            "dev": eval_losses(dev).get("dev"),
            "train_loss": train.meta.get("train_loss"), "reused": all(i.reused for i in runner.infos)}


def _run_fitted(method: str, seed: int, folder: Path, shared: _Shared, k: int) -> dict[str, Any]:
    """``instructmining_fit`` (:mod:`hf_select.compare.fitted`): stage ``fit`` fits the rule on the finished runs'
    (subset mean indicators, dev loss) pairs; the pool ranked by its predicted log loss, lower first, then
    selection -> train -> eval like every other method."""
    from ..scoring.rule import PRED_COLUMN, InstructMiningRule
    from ..stages import StageRunner

    if shared.scored is None:
        raise HFSelectError(shared.scores_error or "the shared scores are missing")
    indicators = pool_indicators(shared.scored)
    found = experiments(shared.results, shared.row_ids, indicators)
    runner = StageRunner(folder, resume=shared.config.resume)

    def fit(out: Path) -> dict[str, Any]:
        rule = fit_from_experiments(found)
        if runner.is_main:
            rule.to_json(out / "rule.json")
            (out / "experiments.json").write_text(json.dumps(found, indent=2))
        return {"rule": rule.to_dict()}

    info = runner.run("fit", fit, params={"experiments": found})
    rule = InstructMiningRule.from_dict(info.meta["rule"])
    ranked = shared.scored.add_column(PRED_COLUMN, [float(v) for v in rule.predict(indicators)])

    def steps_for(rows: int) -> list[dict[str, Any]]:
        return [{"step": "top", "column": PRED_COLUMN, "descending": False, "count": rows}]

    run = _run_selection(seed, folder, ranked, steps_for, shared, k, runner=runner)
    return {**run, "rule": info.meta["rule"]}


def _fill(result: MethodResult, run: Mapping[str, Any], shared: _Shared) -> None:
    """Copy what a method's run chose and measured into ``result``."""
    pool, lengths = shared.pool, shared.lengths
    ids = run["selection"].row_ids
    sources = pool[SOURCE_COLUMN]
    result.rows = len(ids)
    if shared.counts is not None:
        got = subset_tokens(ids, shared.counts)
        result.rows_trained = got["rows_trained"]
        result.supervised_tokens = got["supervised_tokens"]
        result.rows_truncated = got["rows_truncated"]
    result.composition = count_by(sources[i] for i in ids)
    result.mean_response_chars = mean_or_none([lengths["chars"][i] for i in ids])
    result.mean_response_tokens = mean_or_none([lengths["tokens"][i] for i in ids]) if lengths["tokens"] else None
    result.eval_loss = {k: round(v, 6) for k, v in run["eval"].items()}
    result.delta_vs_base = {k: round(v - shared.base_loss[k], 6) for k, v in run["eval"].items()
                            if k in shared.base_loss}
    result.eval_meta = {name: {key: meta.get(key) for key in EVAL_META_KEYS if key in meta}
                        for name, meta in (run.get("eval_meta") or {}).items()}
    result.train_loss = run.get("train_loss")
    result.dev_loss = run.get("dev")
    shared.row_ids[result.label] = [int(i) for i in ids]
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
