"""Run a list of selection steps over a scored dataset and keep a full record of what each step did.

A step is a name plus parameters, from Python (``{"step": "threshold", "column": "quality", "min": 0.0}`` or
``Step("threshold", column="quality", min=0.0)``) or a YAML file (a list of such mappings, or a mapping with
``steps:`` and an optional ``seed:``). Steps run in order; each sees the rows the previous ones kept.

Built-in steps: ``threshold``, ``top``, ``ifd_rule``, ``token_budget``, ``dedup_exact``, ``dedup_near``
(:mod:`.filters`), ``kcenter`` (:mod:`.kcenter`), ``kmeans_sample``, ``facility_location`` (:mod:`.clusters`),
``random`` (the seeded baseline every comparison needs), ``longest``, ``consistency_gate`` (:mod:`.gates`),
``length_stratified_top`` (:mod:`.length`), ``fused_diverse`` (:mod:`.fusion`) and ``target_similarity``
(:mod:`.target`). Other modules add their own with :func:`register_step`.

Every step with a row budget (``count``/``k``), and ``threshold``, also takes ``stratify_by`` (a column, or
``{clusters: N, column: embedding}``) and ``min_share``: composition quotas, see :mod:`.quotas`.

Seeds: a step's own ``seed`` key wins, then a ``seed`` in the YAML file, then the ``seed`` argument.

Example:
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"quality": [0.3, -1.0, 2.0, float("nan")]})
    >>> result = select(ds, [{"step": "threshold", "column": "quality", "min": 0.0}])
    >>> result.row_ids
    [0, 2]
    >>> result.provenance[0]["dropped"]
    {'nan_score': 1, 'below_min': 1}
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HFSelectError
from ..io import atomic_folder
from . import filters, quotas
from .clusters import facility_location, kmeans_cluster_sample
from .filters import StepResult, embedding_matrix, resolve_count
from .fusion import fused_diverse
from .gates import consistency_gate
from .kcenter import k_center_greedy
from .length import length_stratified_top
from .target import target_similarity

logger = logging.getLogger(__name__)

ROW_ID = "_row_id"
PROVENANCE_FILE = "provenance.json"
DROPPED_DIR = "dropped"
SELECTION_FORMAT = "hf-select-selection"


# -- the step registry ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepSpec:
    """A registered step: ``function(dataset, **params)`` (plus ``seed=`` when it takes one) -> StepResult."""

    name: str
    function: Callable[..., StepResult]
    params: tuple[str, ...]
    takes_seed: bool
    any_params: bool

    @property
    def help(self) -> str:
        return (inspect.getdoc(self.function) or "").split("\n\n")[0]


STEPS: dict[str, StepSpec] = {}


def register_step(name: str, function: Callable[..., StepResult] | None = None, *, overwrite: bool = False) -> Any:
    """Register a selection step (usable as a decorator). The function takes the dataset first, its parameters as
    keywords (and ``seed`` if it needs randomness) and returns a :class:`StepResult`.

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
        STEPS[name] = StepSpec(
            name=name,
            function=fn,
            params=tuple(p.name for p in params if p.name != "seed" and p.kind is not p.VAR_KEYWORD),
            takes_seed=any(p.name == "seed" for p in params),
            any_params=any(p.kind is p.VAR_KEYWORD for p in params),
        )
        return fn

    return add(function) if function is not None else add


class Step:
    """One step as a Python object: ``Step("top", column="quality", fraction=0.1)``.

    Example:
        >>> Step("random", count=10, seed=3).to_dict()
        {'step': 'random', 'count': 10, 'seed': 3}
    """

    def __init__(self, name: str, **params: Any):
        self.name = name
        self.params = params

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.name, **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Step({self.name!r}{', ' if args else ''}{args})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return getattr(value, "name_or_path", None) or repr(value)


def load_steps(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int | None]:
    """Read steps (and an optional seed) from a YAML file: a list of steps or ``{steps: [...], seed: N}``.

    Example:
        >>> load_steps("select.yaml")  # doctest: +SKIP
        ([{'step': 'threshold', 'column': 'quality', 'min': 0.0}], 0)
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise HFSelectError(f"{p}: no such selection config file (a YAML list of steps).")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise HFSelectError(f"{p}: not valid YAML ({str(err).splitlines()[0]}).") from err
    seed = None
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - {"steps", "seed"})
        if unknown:
            raise HFSelectError(f"{p}: unknown top-level keys {unknown}; expected 'steps' and optionally 'seed'.")
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise HFSelectError(f"{p}: seed must be an integer, got {seed!r}")
        data = data.get("steps")
    if not isinstance(data, list):
        raise HFSelectError(f"{p}: expected a list of steps (each a mapping with a 'step' key), got "
                            f"{type(data).__name__}.")
    return data, seed


def _normalise_step(raw: Any, i: int) -> tuple[str, dict[str, Any], int | None]:
    """(name, params, seed) of step number ``i`` (1-based, as in the provenance table)."""
    if isinstance(raw, Step) or (hasattr(raw, "to_dict") and callable(raw.to_dict)):
        raw = raw.to_dict()
    elif dataclasses.is_dataclass(raw) and not isinstance(raw, type):
        raw = dataclasses.asdict(raw)
    if not isinstance(raw, Mapping):
        raise HFSelectError(f"step {i}: expected a mapping like {{'step': 'threshold', ...}}, got {raw!r}")
    params = dict(raw)
    name = params.pop("step", None)
    if name is None:
        raise HFSelectError(f"step {i}: has no 'step' key naming it; known steps: {sorted(STEPS)}")
    if name not in STEPS:
        raise HFSelectError(f"step {i}: unknown step {name!r}; known steps: {sorted(STEPS)}")
    seed = params.pop("seed", None)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise HFSelectError(f"step {i} ({name}): seed must be an integer, got {seed!r}")
    spec = STEPS[name]
    if not spec.any_params:
        unknown = sorted(set(params) - set(spec.params) - set(quotas.QUOTA_PARAMS))
        if unknown:
            raise HFSelectError(f"step {i} ({name}): unknown parameter(s) {unknown}; {name} takes {list(spec.params)}")
    return name, params, None if seed is None else int(seed)


def parse_steps(steps: Any) -> tuple[list[tuple[str, dict[str, Any], int | None]], int | None]:
    """Steps from a YAML path, a list of mappings/``Step`` objects, or a mapping with ``steps``; plus a file seed."""
    file_seed = None
    if isinstance(steps, (str, os.PathLike)):
        steps, file_seed = load_steps(steps)
    elif isinstance(steps, Mapping) and "steps" in steps:
        file_seed = steps.get("seed")
        steps = steps["steps"]
    elif isinstance(steps, (Mapping, Step)):
        steps = [steps]
    if not isinstance(steps, Sequence):
        raise HFSelectError(f"steps must be a list of steps or a YAML file path, got {type(steps).__name__}")
    return [_normalise_step(raw, i) for i, raw in enumerate(steps, 1)], file_seed


# -- the result -------------------------------------------------------------------------------------------------------


@dataclass
class SelectionResult:
    """A chosen subset with the dropped rows and a record of every step.

    - ``dataset``: the kept rows, in input order, with ``_row_id`` (the row's index in the input dataset);
    - ``dropped``: every dropped row with ``_row_id``, ``drop_step`` (name), ``drop_step_index`` (its position in
      ``provenance``, from 0) and ``drop_reason``;
    - ``provenance``: one dict per step: ``step``, ``params``, ``seed``, ``rows_in``, ``rows_out``, ``dropped``
      ({reason: rows}), ``info`` and ``seconds``.
    """

    dataset: Any
    dropped: Any
    provenance: list[dict[str, Any]]
    seed: int = 0
    input_rows: int = 0
    input_fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def row_ids(self) -> list[int]:
        """``_row_id`` of the kept rows (indices into the input dataset), in increasing order."""
        return [int(i) for i in self.dataset.with_format(None)[ROW_ID]] if len(self.dataset) else []

    def __len__(self) -> int:
        return len(self.dataset)

    def to_dict(self) -> dict[str, Any]:
        """The provenance as plain JSON-serialisable data (what ``provenance.json`` holds).

        Example:
            >>> import json
            >>> json.dumps(result.to_dict())  # doctest: +SKIP
        """
        from .. import __version__

        return {
            "format": SELECTION_FORMAT,
            "format_version": 1,
            "hf_select_version": __version__,
            "seed": self.seed,
            "input_rows": self.input_rows,
            "input_fingerprint": self.input_fingerprint,
            "selected_rows": len(self.dataset),
            "dropped_rows": len(self.dropped),
            "steps": _jsonable(self.provenance),
            **({"extra": _jsonable(self.extra)} if self.extra else {}),
        }

    def dropped_counts(self) -> dict[str, int]:
        """Dropped rows per reason over all steps."""
        out: dict[str, int] = {}
        for entry in self.provenance:
            for reason, count in entry["dropped"].items():
                out[reason] = out.get(reason, 0) + count
        return out

    def provenance_markdown(self) -> str:
        """The provenance as a markdown table (for reports and dataset cards).

        Example:
            >>> print(result.provenance_markdown())  # doctest: +SKIP
        """
        return provenance_table(self.provenance)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the subset (``save_to_disk`` in ``folder`` itself, so ``datasets.load_from_disk(folder)`` gives
        it), the dropped rows (``folder/dropped``) and ``folder/provenance.json``, atomically: the folder appears
        whole or not at all, and an older one is replaced only once the new one is complete.

        Example:
            >>> result.save("chosen/")  # doctest: +SKIP
        """
        out = Path(folder)
        with atomic_folder(out) as staging:
            # An empty dataset needs num_shards=1, or no data file is written and it cannot be loaded again.
            self.dataset.save_to_disk(str(staging), num_shards=1 if len(self.dataset) == 0 else None)
            self.dropped.save_to_disk(str(staging / DROPPED_DIR), num_shards=1 if len(self.dropped) == 0 else None)
            (staging / PROVENANCE_FILE).write_text(json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n",
                                                   encoding="utf-8")
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike) -> SelectionResult:
        """Read a folder written by :meth:`save`.

        Raises:
            HFSelectError: when the folder is not a saved selection.

        Example:
            >>> SelectionResult.load("chosen/").row_ids[:3]  # doctest: +SKIP
        """
        import datasets

        p = Path(folder)
        meta = p / PROVENANCE_FILE
        if not meta.is_file():
            raise HFSelectError(f"{p}: not a saved selection (no {PROVENANCE_FILE}); write one with "
                                "`hf-select select` or SelectionResult.save().")
        info = json.loads(meta.read_text(encoding="utf-8"))
        subset = datasets.load_from_disk(str(p))
        dropped_dir = p / DROPPED_DIR
        dropped = datasets.load_from_disk(str(dropped_dir)) if dropped_dir.is_dir() else subset.select([])
        return cls(
            dataset=subset,
            dropped=dropped,
            provenance=info.get("steps", []),
            seed=int(info.get("seed", 0)),
            input_rows=int(info.get("input_rows", len(subset) + len(dropped))),
            input_fingerprint=info.get("input_fingerprint"),
            extra=info.get("extra", {}),
        )


def _fmt_params(params: Mapping[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        text = json.dumps(_jsonable(v)) if not isinstance(v, str) else v
        parts.append(f"{k}={text if len(text) <= 40 else text[:37] + '...'}")
    return ", ".join(parts)


def provenance_table(provenance: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of the steps: name, parameters, seed, rows in/out and rows dropped per reason.

    Example:
        >>> print(provenance_table([{"step": "random", "params": {"count": 2}, "seed": 0, "rows_in": 5,
        ...                          "rows_out": 2, "dropped": {"not_sampled": 3}}]))
        | # | step | parameters | seed | rows in | rows out | dropped (reason: rows) |
        |---|---|---|---|---|---|---|
        | 1 | random | count=2 | 0 | 5 | 2 | not_sampled: 3 |
    """
    lines = [
        "| # | step | parameters | seed | rows in | rows out | dropped (reason: rows) |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, e in enumerate(provenance, 1):
        dropped = ", ".join(f"{r}: {c:,}" for r, c in e.get("dropped", {}).items()) or "none"
        params = _fmt_params(e.get("params", {})).replace("|", "\\|")
        seed = "-" if e.get("seed") is None else e["seed"]
        lines.append(f"| {i} | {e['step']} | {params or '-'} | {seed} | {e['rows_in']:,} | {e['rows_out']:,} "
                     f"| {dropped} |")
    return "\n".join(lines)


# -- running ----------------------------------------------------------------------------------------------------------


def _check_result(res: StepResult, n: int, name: str) -> StepResult:
    """Every input row must be kept or dropped exactly once; rows a step forgets are dropped as not_selected."""
    keep = np.asarray(res.keep, dtype=np.int64).reshape(-1)
    dropped = {r: np.asarray(v, dtype=np.int64).reshape(-1) for r, v in res.dropped.items() if len(v)}
    seen = np.zeros(n, dtype=np.int64)
    for idx in (keep, *dropped.values()):
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise RuntimeError(f"selection step {name!r} returned a row position outside 0..{n - 1}")
        np.add.at(seen, idx, 1)
    if (seen > 1).any():
        raise RuntimeError(f"selection step {name!r} kept or dropped row {int(np.flatnonzero(seen > 1)[0])} twice")
    if (seen == 0).any():
        dropped["not_selected"] = np.concatenate([dropped.get("not_selected", np.zeros(0, np.int64)),
                                                  np.flatnonzero(seen == 0)])
    return StepResult(np.sort(keep), dropped, res.info)


def select(dataset: Any, steps: Any, *, seed: int = 0) -> SelectionResult:
    """Run ``steps`` over ``dataset`` and return the chosen subset, the dropped rows and the provenance.

    Args:
        dataset: a ``datasets.Dataset`` with the score columns the steps read. A ``_row_id`` column is added
            (the row's index) unless there is one already.
        steps: a list of step mappings / :class:`Step` objects, or a path to a YAML file of them.
        seed: the seed of steps that draw at random (``random``, ``kcenter``'s first center, ``kmeans_sample``).

    Raises:
        HFSelectError: an unknown step or parameter, or a missing/unsuitable column (naming it).

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"ifd": [0.5, 1.3, 0.9, 0.7], "ifd_status": ["ok"] * 4})
        >>> select(ds, [{"step": "ifd_rule", "count": 2}]).row_ids
        [2, 3]
    """
    parsed, file_seed = parse_steps(steps)
    base_seed = int(file_seed if file_seed is not None else seed)
    n = len(dataset)
    if n == 0:
        warnings.warn("select: the dataset is empty; the selection is empty.", UserWarning, stacklevel=2)
    if ROW_ID in dataset.column_names:
        base = dataset
    else:
        base = dataset.add_column(ROW_ID, np.arange(n, dtype=np.int64))
    pos = np.arange(n, dtype=np.int64)
    drop_pos: list[np.ndarray] = []
    drop_meta: list[tuple[str, int, str, int]] = []
    provenance: list[dict[str, Any]] = []
    for i, (name, params, step_seed) in enumerate(parsed):
        spec = STEPS[name]
        s = base_seed if step_seed is None else step_seed
        rows_in = len(pos)
        t0 = time.perf_counter()
        if rows_in == 0:
            res = StepResult(np.zeros(0, np.int64), {}, {"skipped": "no rows left"})
        else:
            current = base if rows_in == n and i == 0 else base.select(pos)
            kwargs = dict(params)
            if spec.takes_seed:
                kwargs["seed"] = s
            try:
                if quotas.wants_stratify(kwargs):
                    res = quotas.run_stratified(spec.function, current, kwargs, step=name, step_params=spec.params)
                else:
                    res = spec.function(current, **{k: v for k, v in kwargs.items() if k not in quotas.QUOTA_PARAMS})
            except (HFSelectError, ValueError) as err:
                message = str(err)
                message = message[len(name) + 2 :] if message.startswith(f"{name}: ") else message
                raise HFSelectError(f"step {i + 1} ({name}): {message}") from err
            res = _check_result(res, rows_in, name)
        seconds = time.perf_counter() - t0
        for reason, idx in res.dropped.items():
            drop_pos.append(pos[idx])
            drop_meta.append((name, i, reason, len(idx)))
        provenance.append({
            "step": name,
            "params": _jsonable(params),
            "seed": s if spec.takes_seed else None,
            "rows_in": rows_in,
            "rows_out": len(res.keep),
            "dropped": {r: int(len(v)) for r, v in res.dropped.items()},
            "info": _jsonable(res.info),
            "seconds": round(seconds, 4),
        })
        logger.info("select step %d (%s): %d -> %d rows in %.2fs", i, name, rows_in, len(res.keep), seconds)
        pos = pos[res.keep]
    subset = base.select(pos) if len(pos) != n else base
    all_drop = np.concatenate(drop_pos) if drop_pos else np.zeros(0, np.int64)
    steps_col, idx_col, reason_col = [], [], []
    for name, i, reason, count in drop_meta:
        steps_col += [name] * count
        idx_col += [i] * count
        reason_col += [reason] * count
    from datasets import Dataset, Features, Value

    extra = {"drop_step": Value("string"), "drop_step_index": Value("int64"), "drop_reason": Value("string")}
    if len(all_drop):
        dropped = base.select(all_drop)
        for (col, feature), values in zip(extra.items(), (steps_col, idx_col, reason_col), strict=True):
            dropped = dropped.add_column(col, values, feature=feature)
    else:  # datasets cannot add a column to an empty selection of a concatenated table
        features = Features({**base.features, **extra})
        dropped = Dataset.from_dict({c: [] for c in features}, features=features)
    return SelectionResult(
        dataset=subset,
        dropped=dropped,
        provenance=provenance,
        seed=base_seed,
        input_rows=n,
        input_fingerprint=getattr(dataset, "_fingerprint", None),
    )


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
    fraction: float | None = None,
    column: str = "embedding",
    metric: str = "euclidean",
    initial_column: str | None = None,
    initial_row_ids: Sequence[int] | None = None,
    precision: str = "mixed",
    device: str | None = None,
    seed: int = 0,
) -> StepResult:
    """k-center greedy on an embedding column (MoDS). ``initial_column`` (true = already chosen) or
    ``initial_row_ids`` (``_row_id`` values) mark rows that are centers from the start; they are kept, and ``k``
    more are picked. Reasons: ``no_embedding``, ``not_selected``."""
    x, rows, missing = _embedding_rows(dataset, column, "kcenter")
    n = len(dataset)
    init_mask = np.zeros(n, bool)
    if initial_column is not None:
        init_mask |= np.nan_to_num(filters.column_values(dataset, initial_column, "kcenter"), nan=0.0) != 0
    if initial_row_ids is not None:
        ids = np.asarray(dataset.with_format(None)[ROW_ID]) if ROW_ID in dataset.column_names else np.arange(n)
        init_mask |= np.isin(ids, np.asarray(list(initial_row_ids), dtype=np.int64))
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
    Reasons: ``no_embedding``, ``nan_score``, ``outside_band``, ``not_sampled``."""
    x, rows, missing = _embedding_rows(dataset, column, "kmeans_sample")
    n = len(dataset)
    scores = filters.column_values(dataset, score_column, "kmeans_sample") if score_column else np.zeros(n)
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


def facility_location_step(
    dataset: Any,
    *,
    k: int | None = None,
    fraction: float | None = None,
    column: str = "embedding",
    n_neighbors: int = 32,
    metric: str = "cosine",
    device: str | None = None,
    seed: int = 0,
) -> StepResult:
    """Facility location by lazy greedy on a sparse k-NN graph (Superfiltering's diversity step).
    Reasons: ``no_embedding``, ``not_selected``."""
    x, rows, missing = _embedding_rows(dataset, column, "facility_location")
    n = len(dataset)
    want = resolve_count(n, len(rows), fraction=fraction, count=k, step="facility_location", count_name="k")
    res = facility_location(x, want, n_neighbors=n_neighbors, seed=seed, metric=metric, device=device,
                            return_result=True)
    keep = np.zeros(n, bool)
    keep[rows[np.asarray(res.indices, dtype=np.int64)]] = True
    info = {"objective": res.objective[-1] if res.objective else 0.0, "max_objective": res.max_objective}
    return StepResult.from_mask(keep, {"no_embedding": missing}, info)


def random_step(dataset: Any, *, count: int | None = None, fraction: float | None = None, seed: int = 0
                ) -> StepResult:
    """A seeded uniform random sample: the baseline every selection should beat. Reason: ``not_sampled``."""
    n = len(dataset)
    want = resolve_count(n, n, fraction=fraction, count=count, step="random")
    keep = np.zeros(n, bool)
    keep[np.random.default_rng(seed).choice(n, size=want, replace=False)] = True
    return StepResult.from_mask(keep, {"not_sampled": ~keep})


def longest_step(dataset: Any, *, count: int | None = None, fraction: float | None = None,
                 column: str | None = None, column_mapping: Mapping[str, str] | None = None,
                 measure: str = "auto") -> StepResult:
    """The rows with the longest responses (a strong simple baseline). Length: ``column`` if given, else
    ``response_tokens`` when present (``measure="auto"``), else the response's characters (always with
    ``measure="chars"``: ``response_tokens`` counts only the tokens a scorer kept under its ``max_length``).
    Reasons: ``invalid_row``, ``not_longest``."""
    if measure not in ("auto", "chars"):
        raise ValueError(f"longest: measure must be 'auto' or 'chars', got {measure!r}")
    n = len(dataset)
    if column is None and measure == "auto" and "response_tokens" in dataset.column_names:
        column = "response_tokens"
    if column is not None:
        lengths = filters.column_values(dataset, column, "longest")
        info = {"length": column}
    else:
        vals: list[float] = []
        for texts, _ in filters.iter_texts(dataset, "response", column_mapping=column_mapping):
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
    register_step(_name, _fn)
