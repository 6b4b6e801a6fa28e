"""InstructMining's linear rule: predict the log eval loss of a fine-tune from a subset's indicator means, apply a
rule to rank rows (``instructmining_pred``, lower is better), and fit a new rule from fine-tuning experiments.

It lives in ``scoring`` rather than ``selection`` because applying it writes a column (like a scorer, only without a
model), and fitting it reads indicator columns a scorer wrote; a selection step then ranks by that column
(``{"step": "top", "column": "instructmining_pred", "descending": False}``).

Example:
    >>> rule = InstructMiningRule.preset("instructmining")
    >>> rule.columns
    ['ind_reward', 'ind_response_len', 'ind_knn6']
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

PRED_COLUMN = "instructmining_pred"

_PRESETS: dict[str, dict[str, Any]] = {
    "instructmining": {
        "name": "instructmining",
        "intercept": 1.0694,
        "coefficients": {"ind_reward": -0.1498, "ind_response_len": 8.257e-5, "ind_knn6": -0.9350},
        "description": (
            "InstructMining (Cao et al., arXiv 2307.06290): log L = 1.0694 - 0.1498 Rew + 8.257e-5 Len - 0.9350 Knn6. "
            "Rew: reward-model score (ind_reward); Len: read here as the response length in tokens "
            "(ind_response_len); "
            "Knn6: distance to the 6th nearest neighbour in sentence-embedding space (ind_knn6). Fitted in the paper "
            "with its own indicator models: with other reward models or embedders the values are on other scales, so "
            "use it to rank rows, not as a loss estimate."
        ),
    }
}


@dataclass
class InstructMiningRule:
    """A linear rule that predicts log eval loss from indicator columns: ``intercept + sum(coef[c] * row[c])``.

    - :meth:`preset` gives the published rule (``"instructmining"``), which needs the columns ``ind_reward``,
      ``ind_response_len`` and ``ind_knn6`` (:class:`IndicatorScorer` with ``quality`` set to a reward model, on a
      dataset with an embedding column); :func:`fit_rule` fits a new one.
    - :meth:`apply` adds ``instructmining_pred`` (the predicted log loss) to a dataset. Rows are ranked by it in
      ascending order: *lower predicted loss is better*, e.g. ``ds.sort("instructmining_pred").select(range(n))``.
      A row missing any indicator (NaN) gets NaN.
    - Serialisable: :meth:`to_dict` / :meth:`from_dict`, :meth:`to_json` / :meth:`from_json`.

    Example:
        >>> rule = InstructMiningRule(intercept=1.0, coefficients={"ind_reward": -0.5})
        >>> rule.predict({"ind_reward": [0.0, 2.0]}).tolist()
        [1.0, 0.0]
        >>> InstructMiningRule.from_json(rule.to_json()) == rule
        True
    """

    intercept: float = field(metadata={"help": "The rule's constant term (log loss)."})
    coefficients: dict[str, float] = field(metadata={"help": "Indicator column -> coefficient."})
    name: str = field(default="custom", metadata={"help": "A name for the rule (model cards, logs)."})
    description: str = field(default="", metadata={"help": "Where the rule comes from."})
    fit: dict[str, Any] | None = field(
        default=None, metadata={"help": "How it was fitted (experiments, R^2), for fitted rules."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.coefficients, Mapping) or not self.coefficients:
            raise ValueError("InstructMiningRule.coefficients must be a non-empty mapping of column -> coefficient")
        coefs = {}
        for col, value in self.coefficients.items():
            if not isinstance(col, str) or not col:
                raise ValueError(f"InstructMiningRule.coefficients: column names must be strings, got {col!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"InstructMiningRule.coefficients[{col!r}] must be a finite number, got {value!r}")
            coefs[col] = float(value)
        self.coefficients = coefs
        if isinstance(self.intercept, bool) or not isinstance(self.intercept, (int, float)) or not math.isfinite(
            self.intercept
        ):
            raise ValueError(f"InstructMiningRule.intercept must be a finite number, got {self.intercept!r}")
        self.intercept = float(self.intercept)

    PRESETS: ClassVar[tuple[str, ...]] = tuple(_PRESETS)

    @classmethod
    def preset(cls, name: str) -> InstructMiningRule:
        """A published rule by name: ``"instructmining"``.

        Example:
            >>> InstructMiningRule.preset("instructmining").coefficients["ind_knn6"]
            -0.935
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown InstructMiningRule preset {name!r}; expected one of {sorted(_PRESETS)}")
        return cls.from_dict(_PRESETS[name])

    @property
    def columns(self) -> list[str]:
        """The indicator columns the rule reads."""
        return list(self.coefficients)

    def predict(self, values: Mapping[str, Any]) -> np.ndarray:
        """Predicted log loss for column values (scalars or equal-length sequences); NaN where any input is NaN/None.

        Example:
            >>> InstructMiningRule(intercept=1.0, coefficients={"a": 2.0}).predict({"a": [0.5, None]}).tolist()
            [2.0, nan]
        """
        missing = [c for c in self.columns if c not in values]
        if missing:
            raise KeyError(f"the rule {self.name!r} needs the columns {missing}, which are missing")
        total = np.asarray(self.intercept, dtype=np.float64)
        for col, coef in self.coefficients.items():
            total = total + coef * _floats(values[col])
        return np.atleast_1d(total)

    def apply(self, dataset: Any, column: str = PRED_COLUMN) -> Any:
        """Return ``dataset`` with the predicted log loss in ``column`` (replaced if present). Rank ascending.

        Raises:
            KeyError: naming the indicator columns the dataset lacks (and what makes them).

        Example:
            >>> from datasets import Dataset
            >>> rule = InstructMiningRule(intercept=0.0, coefficients={"ind_reward": -1.0})
            >>> list(rule.apply(Dataset.from_dict({"ind_reward": [0.5, 2.0]}))["instructmining_pred"])
            [-0.5, -2.0]
        """
        missing = [c for c in self.columns if c not in dataset.column_names]
        if missing:
            raise KeyError(
                f"the rule {self.name!r} needs the columns {missing}, which the dataset lacks: IndicatorScorer makes "
                "ind_prompt_len/ind_response_len/ind_mtld/ind_ppl, ind_reward (with quality=...), and ind_knn{k} "
                "(with an embedding column, via .score())"
            )
        pred = self.predict({c: dataset[c] for c in self.columns}) if len(dataset) else np.zeros(0)
        if column in dataset.column_names:
            dataset = dataset.remove_columns(column)
        return dataset.add_column(column, [float(x) for x in pred])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (``from_dict`` reads it back)."""
        out: dict[str, Any] = {"name": self.name, "target": "log_eval_loss", "intercept": self.intercept,
                               "coefficients": dict(self.coefficients), "description": self.description}
        if self.fit is not None:
            out["fit"] = self.fit
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstructMiningRule:
        """Build a rule from :meth:`to_dict`'s output (unknown keys are an error)."""
        known = {"name", "target", "intercept", "coefficients", "description", "fit"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"InstructMiningRule.from_dict: unknown keys {unknown}; expected some of {sorted(known)}")
        if data.get("target", "log_eval_loss") != "log_eval_loss":
            raise ValueError(f"InstructMiningRule target must be 'log_eval_loss', got {data['target']!r}")
        if "intercept" not in data or "coefficients" not in data:
            raise ValueError("InstructMiningRule.from_dict needs 'intercept' and 'coefficients'")
        return cls(intercept=data["intercept"], coefficients=dict(data["coefficients"]),
                   name=data.get("name", "custom"), description=data.get("description", ""), fit=data.get("fit"))

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The rule as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> InstructMiningRule:
        """Read a rule from JSON text or from a file holding it."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))


def _floats(value: Any) -> np.ndarray:
    """A float array from a number, a list, an array or a ``datasets`` column; None becomes NaN."""
    if value is None:
        return np.asarray(math.nan)
    if isinstance(value, (int, float, np.number)):
        return np.asarray(float(value))
    return np.asarray([math.nan if x is None else x for x in value], dtype=np.float64)


def indicator_means(dataset: Any, columns: Sequence[str]) -> dict[str, float]:
    """Mean of each indicator column over a (selected) dataset, ignoring NaN/null: one experiment's row for
    :func:`fit_rule`.

    Example:
        >>> from datasets import Dataset
        >>> indicator_means(Dataset.from_dict({"ind_reward": [1.0, 3.0, None]}), ["ind_reward"])
        {'ind_reward': 2.0}
    """
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise KeyError(f"indicator_means: the dataset lacks the columns {missing}")
    out = {}
    for c in columns:
        v = _floats(dataset[c])
        out[c] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
    return out


def fit_rule(
    indicator_means: list[dict[str, float]],
    eval_losses: list[float],
    columns: list[str],
    *,
    name: str = "fitted",
) -> InstructMiningRule:
    """Fit a rule by least squares (scikit-learn ``LinearRegression``) from fine-tuning experiments.

    Each experiment fine-tunes a model on one subset: ``indicator_means[i]`` holds the subset's mean indicators (see
    :func:`indicator_means`) and ``eval_losses[i]`` the eval loss measured after fine-tuning on it. The rule predicts
    ``log(eval_loss)`` from the ``columns``.

    Raises:
        ValueError: with fewer experiments than ``len(columns) + 1``, non-positive or non-finite losses, or a missing
            or non-finite indicator mean (naming the experiment and the column).

    Example:
        >>> means = [{"ind_reward": r, "ind_knn6": d} for r, d in [(0, 0), (1, 0), (0, 1), (1, 1), (2, 1)]]
        >>> losses = [math.exp(1.0 - 0.2 * m["ind_reward"] - 0.5 * m["ind_knn6"]) for m in means]
        >>> rule = fit_rule(means, losses, ["ind_reward", "ind_knn6"])
        >>> [round(v, 6) for v in (rule.intercept, *rule.coefficients.values())]
        [1.0, -0.2, -0.5]
    """
    from sklearn.linear_model import LinearRegression

    if not columns:
        raise ValueError("fit_rule: columns must name at least one indicator column")
    if len(set(columns)) != len(columns):
        raise ValueError(f"fit_rule: columns has duplicates: {columns}")
    if len(indicator_means) != len(eval_losses):
        raise ValueError(
            f"fit_rule: {len(indicator_means)} indicator_means but {len(eval_losses)} eval_losses; "
            "give one of each per experiment"
        )
    n = len(eval_losses)
    if n < len(columns) + 1:
        raise ValueError(
            f"fit_rule: {n} experiments cannot determine {len(columns)} coefficients and an intercept; "
            f"run at least {len(columns) + 1}"
        )
    x = np.empty((n, len(columns)), dtype=np.float64)
    for i, means in enumerate(indicator_means):
        for j, col in enumerate(columns):
            if col not in means:
                raise ValueError(f"fit_rule: experiment {i} has no mean for the column {col!r}")
            value = means[col]
            if value is None or not math.isfinite(float(value)):
                raise ValueError(f"fit_rule: experiment {i} has a non-finite mean for the column {col!r}: {value!r}")
            x[i, j] = float(value)
    losses = np.asarray(eval_losses, dtype=np.float64)
    if not np.isfinite(losses).all() or (losses <= 0).any():
        raise ValueError(
            f"fit_rule: eval_losses must be finite and > 0 (the rule predicts their log), got {eval_losses}"
        )
    y = np.log(losses)
    reg = LinearRegression().fit(x, y)
    residual = y - reg.predict(x)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else math.nan
    return InstructMiningRule(
        intercept=float(reg.intercept_),
        coefficients={c: float(v) for c, v in zip(columns, reg.coef_, strict=True)},
        name=name,
        description=f"fitted by least squares on {n} fine-tuning experiments (target: log eval loss)",
        fit={"n_experiments": n, "r2": r2, "rmse_log_loss": float(np.sqrt((residual**2).mean()))},
    )
