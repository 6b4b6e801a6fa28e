"""Does selection beat random on *your* data? Train the same model on the rows each method picks, with the same TRL
SFT settings, and compare held-out losses against random draws of the same budget and against the whole pool.

:func:`run_compare` builds one pool from several files (a ``source`` column says which file each row came from;
rows that ask an eval set's question are left out and counted), then for every method: picks rows up to the budget
(``budget`` rows, or ``budget_tokens`` supervised completion tokens counted as the trainer sees them, in the
method's own order: :mod:`~hf_select.compare.budget`), fine-tunes ``model_name_or_path`` on them (the same
:class:`~hf_select.training.TrainConfig` for every method) and measures the held-out loss on each eval set (the sum
of completion-token losses over the tokens, whole answers up to ``eval_max_length``: :mod:`hf_select.heldout`). A
method's verdict against random is a 95% prediction interval for one new random draw
(:mod:`~hf_select.compare.stats`). Methods:

- ``random``: a uniform draw (``random_seeds`` draws, each with its own rows and training seed: their spread holds
  both);
- ``random_per_source`` / ``longest_per_source``: the same with each source keeping its pool share;
- ``longest``: the rows with the longest responses (a strong baseline: IFD correlates with response length);
- ``ifd``: Superfiltering (IFD scored by a small model, drop IFD >= 1, keep the highest), ``recipes/superfilter.py``;
- ``cherry``: Cherry LLM (IFD scored by a pre-experienced model), ``recipes/cherry.py``;
- ``mods``: MoDS (quality, k-center coverage, necessity), ``recipes/mods.py``;
- ``instructmining``: the InstructMining rule, ``recipes/instruct_mining.py``;
- ``full``: the whole pool;
- the selection presets of :mod:`hf_select.selection.presets` (``superfiltering``, ``ifd_gated``, ``ifd_length``,
  ``ifd_quota``, ``fusion``, ``longest_gated``, ``longest_diverse``, ``kcenter_length``, and the target-aware
  ``target``, ``target_lm``, ``loss_reduction``) and any custom step list given in ``step_methods``: these
  read one shared scoring of the pool (``scores/``, see :mod:`hf_select.compare.steps`), so they differ by their
  steps alone.

The recipe methods run through the recipes' own ``run_*`` functions, so the comparison measures exactly what the
recipes ship. Everything is written under ``output_dir``: ``pool/`` (the pool), ``base/`` (the base model's losses),
one folder per method (``random/seed<N>/`` per random seed), each made of stage folders that are reused when the
comparison is started again, and ``compare.json``, ``compare.md`` (the table) and ``compare.png`` (the chart). A
method that fails is recorded with its error; the others still run.

The modules, one job each; each imports only modules above it in this list (markdown and plot name the result
classes in type hints only):

- :mod:`~hf_select.compare.config`: :class:`CompareConfig` and its validation, the method names;
- :mod:`~hf_select.compare.stats`: the prediction interval and the verdicts;
- :mod:`~hf_select.compare.pool`: the pool, the eval sets' names, lengths, composition and corrupted counts;
- :mod:`~hf_select.compare.markdown` and :mod:`~hf_select.compare.plot`: ``compare.md`` and ``compare.png``;
- :mod:`~hf_select.compare.results`: :class:`MethodResult`, :class:`CompareResult` (verdicts), ``compare.json``;
- :mod:`~hf_select.compare.budget`: the pool's supervised tokens and the token budget;
- :mod:`~hf_select.compare.plan`: the plan and its estimated minutes;
- :mod:`~hf_select.compare.diagnostics`: what each method's score tracks;
- :mod:`~hf_select.compare.steps`: the step methods and the shared scoring of the pool;
- :mod:`~hf_select.compare.recipe_methods`: the recipe methods through the recipes' ``run_*`` functions;
- :mod:`~hf_select.compare.runs`: :func:`run_compare`, the simple methods and the method loop.

Example:
    >>> from hf_select.compare import CompareConfig, run_compare
    >>> config = CompareConfig(pool=["alpaca_9k.json", "dolly_3k.json"], eval=["alpaca_eval_gpt4_805.json"],
    ...                        budget=0.1, methods=["random", "longest", "ifd"], output_dir="cmp/")
    >>> config.budget_rows(14_000)
    1400
    >>> result = run_compare(config)  # doctest: +SKIP
    >>> print(result.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

from .config import (
    BASE_METHODS,
    DEFAULT_METHODS,
    METHODS,
    RECIPES,
    SIMPLE_METHODS,
    CompareConfig,
    recipe_args,
    recipe_base_args,
)
from .markdown import render_markdown
from .plot import plot_compare
from .pool import CORRUPTION_COLUMN, SOURCE_COLUMN, build_pool, corrupted_share, response_texts, stratified_indices
from .recipe_methods import recipe_arguments, recipe_entry
from .results import CompareResult, MethodResult, load_compare
from .runs import POOL_MARKER, run_compare
from .steps import method_needs, method_steps, resolve_steps, score_pool, steps_needs

__all__ = [
    "BASE_METHODS", "CORRUPTION_COLUMN", "DEFAULT_METHODS", "METHODS", "POOL_MARKER", "RECIPES", "SIMPLE_METHODS",
    "SOURCE_COLUMN", "CompareConfig", "CompareResult", "MethodResult", "build_pool", "corrupted_share",
    "load_compare", "method_needs", "method_steps", "plot_compare", "recipe_args", "recipe_arguments",
    "recipe_base_args", "recipe_entry", "render_markdown", "resolve_steps", "response_texts", "run_compare",
    "score_pool", "steps_needs", "stratified_indices",
]
