"""Run a list of selection steps over a scored dataset and keep a full record of what each step did.

A step is a name plus parameters, from Python (``{"step": "threshold", "column": "quality", "min": 0.0}`` or
``Step("threshold", column="quality", min=0.0)``) or a YAML file (a list of such mappings, or a mapping with
``steps:`` and an optional ``seed:``). Steps run in order; each sees the rows the previous ones kept.

The steps are looked up by name in the registry of :mod:`.steps` (``STEPS``, ``available_steps()``): ``threshold``,
``top``, ``ifd_rule``, ``token_budget``, ``dedup_exact``, ``dedup_near`` (:mod:`.filters`), ``kcenter``
(:mod:`.kcenter`), ``kmeans_sample``, ``facility_location`` (:mod:`.clusters`), ``random`` (the seeded baseline
every comparison needs), ``longest``, ``consistency_gate`` (:mod:`.gates`), ``length_stratified_top``
(:mod:`.length`), ``fused_diverse`` (:mod:`.fusion`) and ``target_similarity`` (:mod:`.target`). Other modules add
their own with :func:`~hf_select.selection.steps.register_step`. This module parses step lists, runs them, and
holds the result (:class:`SelectionResult`: the subset, the dropped rows, the provenance; saved and loaded).

Every step with a row budget (``count``, or ``k`` for ``kcenter``), and ``threshold``, also takes ``stratify_by``
(a column, or ``{clusters: N, column: embedding}``) and ``min_share``: composition quotas, see :mod:`.quotas`.
Old parameter names (``ifd_rule``'s ``top``, ``facility_location``'s ``k``) run under their new names, with a
``FutureWarning``; the provenance records the new names.

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
import json
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..columns import ROW_ID
from ..errors import HFSelectError
from ..io import atomic_folder
from . import quotas
from .base import StepResult, rename_params
from .steps import STEPS

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
DROPPED_DIR = "dropped"
SELECTION_FORMAT = "hf-select-selection"


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
    if spec.renamed:  # old parameter names run under their new ones (a FutureWarning says which)
        params = rename_params(f"step {i} ({name})", params, spec.renamed, stacklevel=1)
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

    def push_to_hub(self, repo_id: str, private: bool = True, *, token: str | None = None, with_pool: bool = False,
                    pool: Any = None, source: str | None = None, source_split: str | None = None,
                    source_revision: str | None = None, license: str | None = None,
                    report_dir: str | os.PathLike | None = None, commit_message: str | None = None) -> str:
        """Push the subset as a Hub dataset repository, private unless ``private=False``, in one commit, with the
        card a recipe's subset gets (steps, counts, drop reasons, the scorers' settings, the source's licence and
        revision; with ``report_dir`` its plots and example rows). ``with_pool=True`` (or a ``pool``: the dataset
        the rows were selected from) adds config ``pool``: every pool row with ``selected``, ``drop_step`` and
        ``drop_reason``. ``source`` names the source dataset when ``hf-select score`` did not record it. Returns
        the repository's URL; see :func:`hf_select.hub.push_selection`.

        Example:
            >>> result.push_to_hub("me/alpaca-top10", source="tatsu-lab/alpaca", with_pool=True)  # doctest: +SKIP
            'https://huggingface.co/datasets/me/alpaca-top10'
        """
        from ..hub import push_selection

        return push_selection(self, repo_id, private=private, token=token, with_pool=with_pool, pool=pool,
                              source=source, source_split=source_split, source_revision=source_revision,
                              license=license, report_dir=report_dir, commit_message=commit_message)

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


def load_selection_folder(folder: str | os.PathLike) -> SelectionResult:
    """A :class:`~hf_select.selection.SelectionResult` from the folder ``hf-select select`` (or ``.save()``) wrote,
    checked whole: ``provenance.json`` of this format version, the subset and ``dropped/``, and their row counts.

    Raises:
        HFSelectError: one line naming the folder and the fix, for a folder that is missing, incomplete or written
            by another version.

    Example:
        >>> load_selection_folder("chosen/").row_ids[:3]  # doctest: +SKIP
        [0, 4, 9]
    """
    p = Path(folder)
    again = "run `hf-select select --dataset SCORED --output DIR ...` again to write it whole"
    if not p.is_dir():
        raise HFSelectError(f"{p}: no such selection folder; pass the --output folder of `hf-select select`.")
    meta = p / PROVENANCE_FILE
    if not meta.is_file():
        raise HFSelectError(f"{p}: not a selection folder (no {PROVENANCE_FILE}); pass the --output folder of "
                            "`hf-select select` (a recipe's output_dir is pushed with `hf-select push OUTPUT_DIR`).")
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except ValueError as err:
        raise HFSelectError(f"{meta}: not valid JSON ({err}); {again}.") from None
    if not isinstance(info, dict) or info.get("format") != SELECTION_FORMAT:
        raise HFSelectError(f"{p}: {PROVENANCE_FILE} was written by an older hf-select (no format "
                            f"{SELECTION_FORMAT!r}); {again}.")
    if info.get("format_version") != 1:
        raise HFSelectError(f"{p}: selection format version {info.get('format_version')!r} is not the one this "
                            f"hf-select reads (1); {again} with this version.")
    missing = [name for name, ok in (("the subset (dataset_info.json / state.json)", (p / "state.json").is_file()),
                                     (f"{DROPPED_DIR}/", (p / DROPPED_DIR / "state.json").is_file())) if not ok]
    if missing:
        raise HFSelectError(f"{p}: incomplete selection folder, {' and '.join(missing)} missing; {again}.")
    try:
        result = SelectionResult.load(p)
    except HFSelectError:
        raise
    except Exception as err:  # a damaged arrow file
        raise HFSelectError(f"{p}: the selection cannot be read ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); {again}.") from None
    counts = {"selected_rows": len(result.dataset), "dropped_rows": len(result.dropped)}
    wrong = [f"{k} {info.get(k)} recorded, {v} found" for k, v in counts.items() if info.get(k) != v]
    if wrong:
        raise HFSelectError(f"{p}: incomplete selection folder ({'; '.join(wrong)}); {again}.")
    return result


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


