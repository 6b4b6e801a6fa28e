"""What a comparison measured: :class:`MethodResult` (one trained subset), :class:`CompareResult` (the whole
comparison: the random baseline's mean and spread, the verdict of every method against it), and ``compare.json``
(written after every method, read back by :func:`load_compare`).

Example:
    >>> from hf_select.compare import CompareResult, MethodResult
    >>> runs = [MethodResult("random", f"random (seed {s})", seed=s, eval_loss={"e": v})
    ...         for s, v in enumerate([1.0, 1.2])]
    >>> picked = MethodResult("ifd", "ifd", eval_loss={"e": 0.5})
    >>> result = CompareResult(output_dir="cmp", config={}, pool_rows=100, pool_composition={"a": 100},
    ...                        pool_mean_response_chars=50.0, pool_mean_response_tokens=None, budget_rows=10,
    ...                        eval_sets=[{"name": "e"}], base_loss={"e": 1.5}, methods=[*runs, picked])
    >>> result.verdict(picked, "e")
    'beats random (-4.2 sd)'
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HFSelectError
from .markdown import render_markdown


@dataclass
class MethodResult:
    """One trained subset: what was chosen and how the model did."""

    method: str
    label: str
    seed: int | None = None
    status: str = "ok"
    error: str | None = None
    rows: int | None = None
    composition: dict[str, int] = field(default_factory=dict)
    mean_response_chars: float | None = None
    mean_response_tokens: float | None = None
    eval_loss: dict[str, float] = field(default_factory=dict)
    delta_vs_base: dict[str, float] = field(default_factory=dict)
    train_loss: float | None = None
    seconds: float = 0.0
    compute_seconds: float = 0.0
    reused: bool = False
    output_dir: str | None = None
    model_dir: str | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    corrupted: dict[str, int] = field(default_factory=dict)
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CompareResult:
    """Everything :func:`run_compare` measured, plus where it wrote ``compare.json``/``.md``/``.png``."""

    output_dir: str
    config: dict[str, Any]
    pool_rows: int
    pool_composition: dict[str, int]
    pool_mean_response_chars: float
    pool_mean_response_tokens: float | None
    budget_rows: int
    eval_sets: list[dict[str, Any]]
    base_loss: dict[str, float]
    methods: list[MethodResult]
    seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)
    pool_corrupted: dict[str, int] = field(default_factory=dict)
    scores_seconds: float = 0.0

    def runs(self, method: str) -> list[MethodResult]:
        """The results of one method (several for ``random``)."""
        return [m for m in self.methods if m.method == method]

    def random_stats(self) -> dict[str, dict[str, float]]:
        """Per eval set: mean, sample standard deviation and count of the random subsets' losses."""
        out: dict[str, dict[str, float]] = {}
        ok = [m for m in self.runs("random") if m.status == "ok"]
        for spec in self.eval_sets:
            values = [m.eval_loss[spec["name"]] for m in ok if spec["name"] in m.eval_loss]
            if values:
                mean = sum(values) / len(values)
                sd = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1
                      else float("nan"))
                out[spec["name"]] = {"mean": mean, "sd": sd, "n": len(values)}
        return out

    def verdict(self, result: MethodResult, eval_name: str) -> str:
        """``beats random`` when the loss is below the random mean by more than 2 sd, ``worse than random`` when
        above by more than 2 sd, else ``within 2 sd``; with the distance in sd."""
        stats = self.random_stats().get(eval_name)
        loss = result.eval_loss.get(eval_name)
        if result.status != "ok" or loss is None:
            return "-"
        if not stats or stats["n"] < 2:
            return "n/a (needs >= 2 random seeds)"
        if not stats["sd"] > 0:
            return "n/a (the random losses do not vary)"
        z = (loss - stats["mean"]) / stats["sd"]
        if z < -2:
            return f"beats random ({z:+.1f} sd)"
        if z > 2:
            return f"worse than random ({z:+.1f} sd)"
        return f"within 2 sd ({z:+.1f} sd)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": self.output_dir, "config": self.config, "pool_rows": self.pool_rows,
            "pool_composition": self.pool_composition, "pool_mean_response_chars": self.pool_mean_response_chars,
            "pool_mean_response_tokens": self.pool_mean_response_tokens, "budget_rows": self.budget_rows,
            "eval_sets": self.eval_sets, "base_loss": self.base_loss, "random": self.random_stats(),
            "verdicts": {m.label: {e["name"]: self.verdict(m, e["name"]) for e in self.eval_sets}
                         for m in self.methods if m.method != "random"},
            "methods": [m.to_dict() for m in self.methods], "seconds": self.seconds, "files": self.files,
            "pool_corrupted": self.pool_corrupted, "scores_seconds": self.scores_seconds,
        }

    def markdown(self) -> str:
        """The comparison as markdown: settings, the table (random as mean ± sd) and the random seeds."""
        return render_markdown(self)


def write_json(result: CompareResult, out: Path) -> None:
    """Write ``out/compare.json`` atomically (a reader never sees half a file)."""
    tmp = out / ".compare.json.tmp"
    tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str, allow_nan=True), encoding="utf-8")
    os.replace(tmp, out / "compare.json")


def load_compare(output_dir: str | os.PathLike) -> CompareResult:
    """Read ``compare.json`` back into a :class:`CompareResult` (e.g. to re-render the table).

    Example:
        >>> print(load_compare("cmp/").markdown())  # doctest: +SKIP
    """
    path = Path(output_dir) / "compare.json"
    if not path.is_file():
        raise HFSelectError(f"{path}: no comparison there (run `hf-select compare` first).")
    data = json.loads(path.read_text(encoding="utf-8"))
    methods = [MethodResult(**m) for m in data["methods"]]
    return CompareResult(
        output_dir=data["output_dir"], config=data["config"], pool_rows=data["pool_rows"],
        pool_composition=data["pool_composition"], pool_mean_response_chars=data["pool_mean_response_chars"],
        pool_mean_response_tokens=data["pool_mean_response_tokens"], budget_rows=data["budget_rows"],
        eval_sets=data["eval_sets"], base_loss=data["base_loss"], methods=methods, seconds=data.get("seconds", 0.0),
        files=data.get("files", {}), pool_corrupted=data.get("pool_corrupted", {}),
        scores_seconds=data.get("scores_seconds", 0.0),
    )
