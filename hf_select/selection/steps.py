"""The selection step registry, and the adapters that make each selector a step.

A step is a function ``step(dataset, **params)`` (plus ``seed=`` when it draws at random) that returns a
:class:`~hf_select.selection.base.StepResult`; :func:`register_step` adds one to :data:`STEPS` under a name, and
:func:`hf_select.selection.select` runs steps by name. Functions that already have that shape (``threshold``,
``top``, ``ifd_rule``, ``token_budget``, ``dedup_exact``, ``dedup_near`` in :mod:`.filters`, ``consistency_gate``,
``length_stratified_top``, ``fused_diverse``, ``target_similarity``) are registered as they are. The algorithms
that work on matrices (:func:`~hf_select.selection.kcenter.k_center_greedy`,
:func:`~hf_select.selection.clusters.facility_location`,
:func:`~hf_select.selection.clusters.kmeans_cluster_sample`) get an adapter here that reads the embedding column,
turns the budget into a number of rows and gives every other row a reason; ``random`` and ``longest`` (the
baselines) are steps of their own.

Sizes: every budgeted step takes ``count`` (rows) or ``fraction``; ``kcenter`` also takes ``k``, the k-center
literature's name (the same as ``count``). Parameters renamed since (``facility_location``'s ``k``, ``ifd_rule``'s
``top``) still run, with a ``FutureWarning`` (:func:`~hf_select.selection.base.renamed_params`).

Example:
    >>> "kcenter" in available_steps()
    True
    >>> STEPS["facility_location"].params[:2]
    ('count', 'fraction')
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..columns import ROW_ID
from ..errors import HFSelectError
from . import filters
from .base import StepResult, column_values, embedding_matrix, iter_texts, renamed_params, resolve_count
from .clusters import facility_location, kmeans_cluster_sample
from .fusion import fused_diverse
from .gates import consistency_gate
from .kcenter import k_center_greedy
from .length import length_stratified_top
from .step_help import PARAM_HELP
from .target import target_similarity
from .weighted_kcenter import weighted_k_center_greedy

# -- the step registry ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepSpec:
    """A registered step: ``function(dataset, **params)`` (plus ``seed=`` when it takes one) -> StepResult."""

    name: str
    function: Callable[..., StepResult]
    params: tuple[str, ...]
    takes_seed: bool
    any_params: bool
    renamed: Mapping[str, str] = field(default_factory=dict)  # old parameter name -> new (still accepted, warned)
    param_help: Mapping[str, str] = field(default_factory=dict)  # parameter -> its meaning (docstring "Args:" + own)

    @property
    def help(self) -> str:
        return (inspect.getdoc(self.function) or "").split("\n\n")[0]


STEPS: dict[str, StepSpec] = {}
"""Every registered step by name (the built-in ones are registered when this module is imported)."""


def available_steps() -> list[str]:
    """The names of the registered selection steps, sorted (details in ``STEPS[name]``: parameters, help).

    Example:
        >>> available_steps()[:3]
        ['consistency_gate', 'dedup_exact', 'dedup_near']
    """
    return sorted(STEPS)


def docstring_params(doc: str | None) -> dict[str, str]:
    """The parameter meanings of a Google-style docstring's ``Args:`` section (``a, b: text`` documents both).

    Example:
        >>> docstring_params("Keep rows.\\n\\nArgs:\\n    column: the score.\\n    min, max: the bounds,\\n"
        ...                  "        inclusive.\\n\\nReturns:\\n    rows.")
        {'column': 'the score.', 'min': 'the bounds, inclusive.', 'max': 'the bounds, inclusive.'}
    """
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Args:"), None)
    if start is None:
        return out
    base = len(lines[start]) - len(lines[start].lstrip())
    entry_indent: int | None = None
    current: list[str] = []
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= base:
            break
        entry_indent = indent if entry_indent is None else entry_indent
        head = re.match(r"([A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*:\s+(.*)", line.strip())
        if indent == entry_indent and head:
            current = [n.strip() for n in head.group(1).split(",")]
            for n in current:
                out[n] = head.group(2).strip()
        elif current:
            for n in current:
                out[n] = f"{out[n]} {line.strip()}"
    return out


def register_step(name: str, function: Callable[..., StepResult] | None = None, *, overwrite: bool = False,
                  param_help: Mapping[str, str] | None = None) -> Any:
    """Register a selection step (usable as a decorator). The function takes the dataset first, its parameters as
    keywords (and ``seed`` if it needs randomness) and returns a :class:`StepResult`. A function wrapped in
    :func:`~hf_select.selection.base.renamed_params` keeps accepting its old parameter names in step lists too.

    The meaning of each parameter (``hf-select select --list-steps``, docs/STEPS.md) comes from the function's
    docstring ``Args:`` section, or from ``param_help`` (parameter -> meaning) for parameters it does not document;
    a parameter documented in both is an error (one source each).

    Example:
        >>> @register_step("even_rows")  # doctest: +SKIP
        ... def even_rows(dataset):
        ...     import numpy as np
        ...     keep = np.arange(len(dataset)) % 2 == 0
        ...     return StepResult.from_mask(keep, {"odd_row": ~keep})
    """

    def add(fn: Callable[..., StepResult]) -> Callable[..., StepResult]:
        if name in STEPS and not overwrite and STEPS[name].function is not fn:
            raise ValueError(f"a selection step named {name!r} is already registered; pass overwrite=True")
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())[1:]
        meanings = docstring_params(inspect.getdoc(fn))
        twice = sorted(set(meanings) & set(param_help or {}))
        if twice:
            raise ValueError(f"step {name!r}: parameter(s) {twice} are documented both in the docstring's Args: "
                             "section and in param_help; keep one")
        meanings.update(param_help or {})
        STEPS[name] = StepSpec(
            name=name,
            function=fn,
            params=tuple(p.name for p in params if p.name != "seed" and p.kind is not p.VAR_KEYWORD),
            takes_seed=any(p.name == "seed" for p in params),
            any_params=any(p.kind is p.VAR_KEYWORD for p in params),
            renamed=dict(getattr(fn, "renamed_params", {})),
            param_help=meanings,
        )
        return fn

    return add(function) if function is not None else add


# -- steps over embeddings, and the baselines -------------------------------------------------------------------------


def _embedding_rows(dataset: Any, column: str, step: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matrix, positions with a vector, mask of rows without one)."""
    x, rows = embedding_matrix(dataset, column, step)
    missing = np.ones(len(dataset), bool)
    missing[rows] = False
    return x, rows, missing


def kcenter_step(
    dataset: Any,
    *,
    k: int | None = None,
    count: int | None = None,
    fraction: float | None = None,
    column: str = "embedding",
    metric: str = "euclidean",
    initial_column: str | None = None,
    initial_row_ids: Sequence[int] | None = None,
    precision: str = "mixed",
    device: str | None = None,
    weight_column: str | None = None,
    weight_transform: str = "none",
    seed: int = 0,
) -> StepResult:
    """k-center greedy on an embedding column (MoDS): the first center at random, then repeatedly the row
    farthest from every chosen center; with ``weight_column``, the row with the largest weighted distance (a length
    or quality prior: :mod:`~hf_select.selection.weighted_kcenter`). Reasons: ``no_embedding``, ``no_weight``,
    ``not_selected``.

    Args:
        k: centers to pick (the k-center problem's name for the budget, and MoDS's).
        count: the same number under the name every other step uses (give ``k`` or ``count``, not both).
        fraction: or a share of the step's input rows.
        column: the embedding column (a vector per row; rows without one are dropped as ``no_embedding``).
        metric: ``euclidean`` or ``cosine`` distance.
        initial_column: a column whose true (non-zero) rows are centers from the start: they are kept, and
            ``k`` more are picked.
        initial_row_ids: ``_row_id`` values of rows that are centers from the start (as ``initial_column``).
        precision: the arithmetic of the distance updates, as
            :func:`~hf_select.selection.kcenter.k_center_greedy` takes it (``mixed``: float32 products with an
            exact float64 re-check of near-ties, the same picks as ``float64``).
        device: torch device of the distance updates (default: a GPU when there is one, else the CPU).
        weight_column: a numeric column of per-row priors (e.g. ``response_tokens``): each pick is the row with the
            largest ``weight x distance to the nearest center``, the first the heaviest row (exact float64 on the
            CPU; ``precision``, ``device`` and ``seed`` are not used). Rows whose weight is missing, negative or
            not finite are dropped as ``no_weight``. None: plain k-center greedy.
        weight_transform: ``none`` (the column's values) or ``log1p`` (``log(1 + value)``: a soft length prior,
            so that a row 100x longer weighs about 3x, not 100x, and distance still matters).
    """
    if k is not None and count is not None:
        raise ValueError("kcenter: give k or count (the same number of centers), not both")
    if weight_transform not in WEIGHT_TRANSFORMS:
        raise HFSelectError(f"kcenter: weight_transform must be one of {WEIGHT_TRANSFORMS}, got {weight_transform!r}")
    k = count if k is None else k
    if weight_column is not None:
        return _weighted_kcenter(dataset, k, fraction, column, metric, initial_column, initial_row_ids,
                                 weight_column, weight_transform)
    x, rows, missing = _embedding_rows(dataset, column, "kcenter")
    n = len(dataset)
    init_mask = _initial_mask(dataset, initial_column, initial_row_ids)
    if (init_mask & missing).any():
        bad = int(np.flatnonzero(init_mask & missing)[0])
        raise HFSelectError(f"kcenter: initial row at position {bad} has no {column!r} vector; embed it first.")
    local = np.full(n, -1, dtype=np.int64)
    local[rows] = np.arange(len(rows))
    initial = local[np.flatnonzero(init_mask)]
    available = len(rows) - len(initial)
    want = resolve_count(n, available, fraction=fraction, count=k, step="kcenter", count_name="k")
    res = k_center_greedy(x, want, seed=seed, initial=initial.tolist(), metric=metric, device=device,
                          precision=precision, return_radii=True)
    keep = init_mask.copy()
    keep[rows[np.asarray(res.indices, dtype=np.int64)]] = True
    info = {"picked": len(res.indices), "initial_rows": int(len(initial)), "radius_initial": res.initial_radius,
            "radius_after_first": res.radii[0] if res.radii else None,
            "radius_final": res.radii[-1] if res.radii else None}
    return StepResult.from_mask(keep, {"no_embedding": missing}, info)


WEIGHT_TRANSFORMS = ("none", "log1p")


def _initial_mask(dataset: Any, initial_column: str | None, initial_row_ids: Sequence[int] | None) -> np.ndarray:
    n = len(dataset)
    init_mask = np.zeros(n, bool)
    if initial_column is not None:
        init_mask |= np.nan_to_num(column_values(dataset, initial_column, "kcenter"), nan=0.0) != 0
    if initial_row_ids is not None:
        ids = np.asarray(dataset.with_format(None)[ROW_ID]) if ROW_ID in dataset.column_names else np.arange(n)
        init_mask |= np.isin(ids, np.asarray(list(initial_row_ids), dtype=np.int64))
    return init_mask


def _weighted_kcenter(dataset: Any, k: int | None, fraction: float | None, column: str, metric: str,
                      initial_column: str | None, initial_row_ids: Sequence[int] | None, weight_column: str,
                      weight_transform: str) -> StepResult:
    """:func:`kcenter_step` with ``weight_column`` (see its docstring)."""
    x, rows, missing = _embedding_rows(dataset, column, "kcenter")
    n = len(dataset)
    raw = column_values(dataset, weight_column, "kcenter")
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.log1p(raw) if weight_transform == "log1p" else raw.astype(np.float64)
    no_weight = ~np.isfinite(w) | (w < 0)
    init_mask = _initial_mask(dataset, initial_column, initial_row_ids)
    if (init_mask & missing).any():
        bad = int(np.flatnonzero(init_mask & missing)[0])
        raise HFSelectError(f"kcenter: initial row at position {bad} has no {column!r} vector; embed it first.")
    no_weight &= ~missing & ~init_mask  # an initial center needs no weight; a row without a vector has its reason
    usable = rows[~no_weight[rows]]
    local = np.full(n, -1, dtype=np.int64)
    local[usable] = np.arange(len(usable))
    initial = local[np.flatnonzero(init_mask)]
    available = len(usable) - len(initial)
    want = resolve_count(n, available, fraction=fraction, count=k, step="kcenter", count_name="k")
    res = weighted_k_center_greedy(x[~no_weight[rows]], want, np.where(no_weight[usable], 0.0, w[usable]),
                                   initial=initial.tolist(), metric=metric)
    keep = init_mask.copy()
    keep[usable[np.asarray(res.indices, dtype=np.int64)]] = True
    info = {"picked": len(res.indices), "initial_rows": int(len(initial)), "weight_column": weight_column,
            "weight_transform": weight_transform, "rows_without_weight": int(no_weight.sum()),
            "weighted_radius_final": res.radii[-1] if res.radii else None}
    return StepResult.from_mask(keep, {"no_embedding": missing, "no_weight": no_weight}, info)


def kmeans_sample_step(
    dataset: Any,
    *,
    column: str = "embedding",
    score_column: str | None = None,
    n_clusters: int = 100,
    per_cluster: int = 10,
    band: Sequence[float] = (25, 75),
    pick: str = "even",
    minibatch: bool | None = None,
    seed: int = 0,
) -> StepResult:
    """Cherry LLM's pre-experienced sample (k-means, score band per cluster, ``per_cluster`` rows each).
    Reasons: ``no_embedding``, ``nan_score``, ``outside_band``, ``not_sampled``.

    Args:
        column: the embedding column clustered (Cherry: the prompts' mean-pooled hidden states).
        score_column: the score whose percentile band is kept per cluster (Cherry: prompt perplexity); ``None``
            samples every cluster without a band.
        n_clusters: k-means clusters (Cherry: 100).
        per_cluster: rows taken from each cluster (a smaller cluster gives all of its rows).
        band: the percentiles ``[low, high]`` of each cluster's scores that qualify (Cherry: 25-75).
        pick: ``even`` (every n-th row of the band, in row order, as Cherry) or ``random``.
        minibatch: use ``MiniBatchKMeans``; ``None``: only above 50,000 rows.
    """
    x, rows, missing = _embedding_rows(dataset, column, "kmeans_sample")
    n = len(dataset)
    scores = column_values(dataset, score_column, "kmeans_sample") if score_column else np.zeros(n)
    if len(band) != 2:
        raise ValueError(f"band must be two percentiles [low, high], got {list(band)}")
    res = kmeans_cluster_sample(x, scores[rows], n_clusters=n_clusters, per_cluster=per_cluster,
                                band=(band[0], band[1]), seed=seed, pick=pick, minibatch=minibatch,
                                return_result=True)
    keep = np.zeros(n, bool)
    keep[rows[np.asarray(res.indices, dtype=np.int64)]] = True
    in_band = np.zeros(n, bool)
    in_band[rows[res.in_band]] = True
    nan = np.isnan(scores)
    info = {"n_clusters": res.n_clusters, "inertia": res.inertia}
    return StepResult.from_mask(keep, {"no_embedding": missing, "nan_score": nan, "outside_band": ~in_band,
                                       "not_sampled": ~keep}, info)


@renamed_params("facility_location", k="count")
def facility_location_step(
    dataset: Any,
    *,
    count: int | None = None,
    fraction: float | None = None,
    column: str = "embedding",
    n_neighbors: int = 32,
    metric: str = "cosine",
    device: str | None = None,
    seed: int = 0,
) -> StepResult:
    """Facility location by lazy greedy on a sparse k-NN graph (Superfiltering's diversity step): ``count`` rows or a
    ``fraction`` of the step's input (``k`` is the old name of ``count``: still accepted, with a ``FutureWarning``).
    Reasons: ``no_embedding``, ``not_selected``.

    Args:
        count: rows to pick.
        fraction: or a share of the step's input rows.
        column: the embedding column (rows without a vector are dropped as ``no_embedding``).
        n_neighbors: neighbours per row in the similarity graph (more: closer to the dense objective, slower).
        metric: ``cosine`` or ``euclidean`` similarity.
        device: torch device of the neighbour search (default: a GPU when there is one, else the CPU).
    """
    x, rows, missing = _embedding_rows(dataset, column, "facility_location")
    n = len(dataset)
    want = resolve_count(n, len(rows), fraction=fraction, count=count, step="facility_location")
    res = facility_location(x, want, n_neighbors=n_neighbors, seed=seed, metric=metric, device=device,
                            return_result=True)
    keep = np.zeros(n, bool)
    keep[rows[np.asarray(res.indices, dtype=np.int64)]] = True
    info = {"objective": res.objective[-1] if res.objective else 0.0, "max_objective": res.max_objective}
    return StepResult.from_mask(keep, {"no_embedding": missing}, info)


def random_step(dataset: Any, *, count: int | None = None, fraction: float | None = None, seed: int = 0
                ) -> StepResult:
    """A seeded uniform random sample: the baseline every selection should beat. Reason: ``not_sampled``.

    The sample is the first ``count`` rows of one seeded permutation, so with the same seed a larger count keeps
    every row a smaller one kept (a token budget grows a random draw row by row, like any ranked selection).

    Args:
        count: rows to draw.
        fraction: or a share of the step's input rows.
    """
    n = len(dataset)
    want = resolve_count(n, n, fraction=fraction, count=count, step="random")
    keep = np.zeros(n, bool)
    keep[np.random.default_rng(seed).permutation(n)[:want]] = True
    return StepResult.from_mask(keep, {"not_sampled": ~keep})


def longest_step(dataset: Any, *, count: int | None = None, fraction: float | None = None,
                 column: str | None = None, column_mapping: Mapping[str, str] | None = None,
                 measure: str = "auto") -> StepResult:
    """The rows with the longest responses (a strong simple baseline). Length: ``column`` if given, else
    ``response_tokens`` when present (``measure="auto"``), else the response's characters (always with
    ``measure="chars"``: ``response_tokens`` counts only the tokens a scorer kept under its ``max_length``).
    Reasons: ``invalid_row``, ``not_longest``.

    Args:
        count: rows to keep.
        fraction: or a share of the step's input rows.
        column: a numeric column holding each row's length (e.g. ``response_tokens``); ``None``: see ``measure``.
        column_mapping: your column names -> instruction/output/messages/... (as the scorers take it), for
            reading the responses' characters.
        measure: ``auto`` (``response_tokens`` when the rows have it, else characters) or ``chars`` (always the
            response's characters).
    """
    if measure not in ("auto", "chars"):
        raise ValueError(f"longest: measure must be 'auto' or 'chars', got {measure!r}")
    n = len(dataset)
    if column is None and measure == "auto" and "response_tokens" in dataset.column_names:
        column = "response_tokens"
    if column is not None:
        lengths = column_values(dataset, column, "longest")
        info = {"length": column}
    else:
        vals: list[float] = []
        for texts, _ in iter_texts(dataset, "response", column_mapping=column_mapping):
            vals.extend(np.nan if t is None else float(len(t)) for t in texts)
        lengths = np.asarray(vals, dtype=np.float64)
        info = {"length": "response characters"}
    scored = np.flatnonzero(~np.isnan(lengths))
    want = resolve_count(n, len(scored), fraction=fraction, count=count, step="longest")
    ranked = scored[np.lexsort((scored, -lengths[scored]))]
    keep = np.zeros(n, bool)
    keep[ranked[:want]] = True
    return StepResult.from_mask(keep, {"invalid_row": np.isnan(lengths), "not_longest": ~keep}, info)


for _name, _fn in (
    ("threshold", filters.threshold),
    ("top", filters.top),
    ("ifd_rule", filters.ifd_rule),
    ("token_budget", filters.token_budget),
    ("dedup_exact", filters.dedup_exact),
    ("dedup_near", filters.dedup_near),
    ("kcenter", kcenter_step),
    ("kmeans_sample", kmeans_sample_step),
    ("facility_location", facility_location_step),
    ("random", random_step),
    ("longest", longest_step),
    ("consistency_gate", consistency_gate),
    ("length_stratified_top", length_stratified_top),
    ("fused_diverse", fused_diverse),
    ("target_similarity", target_similarity),
):
    register_step(_name, _fn, param_help=PARAM_HELP.get(_name))
