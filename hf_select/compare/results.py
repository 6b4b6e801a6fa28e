"""What a comparison measured: :class:`MethodResult` (one trained subset), :class:`CompareResult` (the whole
comparison: the random baseline's mean and spread, the verdict of every method against it), and ``compare.json``
(written after every method, read back by :func:`load_compare`).

Example:
    >>> from hf_select.compare import CompareResult, MethodResult
    >>> runs = [MethodResult("random", f"random (seed {s})", seed=s, eval_loss={"e": v})
    ...         for s, v in enumerate([1.0, 1.2, 1.1])]
    >>> picked = MethodResult("ifd", "ifd", eval_loss={"e": 0.5})
    >>> result = CompareResult(output_dir="cmp", config={}, pool_rows=100, pool_composition={"a": 100},
    ...                        pool_mean_response_chars=50.0, pool_mean_response_tokens=None, budget_rows=10,
    ...                        eval_sets=[{"name": "e"}], base_loss={"e": 1.5}, methods=[*runs, picked])
    >>> result.verdict(picked, "e")
    'beats (+0.6000 > ±0.4968)'
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HFSelectError
from .markdown import render_markdown
from .stats import Verdict, expected_false_verdicts, mean_sd
from .stats import verdict as judge


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
    rows_trained: int | None = None
    supervised_tokens: int | None = None
    rows_truncated: int | None = None
    train_seed: int | None = None
    eval_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    dev_loss: float | None = None

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
    budget_tokens: int | None = None
    pool_tokens: dict[str, int] = field(default_factory=dict)
    eval_overlap: dict[str, int] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    dev: dict[str, Any] = field(default_factory=dict)

    def runs(self, method: str) -> list[MethodResult]:
        """The results of one method (several for ``random`` and for repeated methods)."""
        return [m for m in self.methods if m.method == method]

    def losses(self, method: str, eval_name: str) -> list[float]:
        """The finished runs' losses of ``method`` on one eval set."""
        return [m.eval_loss[eval_name] for m in self.runs(method) if m.status == "ok" and eval_name in m.eval_loss]

    def random_stats(self) -> dict[str, dict[str, float]]:
        """Per eval set: mean, sample standard deviation and count of the random draws' losses."""
        out: dict[str, dict[str, float]] = {}
        for spec in self.eval_sets:
            values = self.losses("random", spec["name"])
            if values:
                mean, sd = mean_sd(values)
                out[spec["name"]] = {"mean": mean, "sd": sd, "n": len(values)}
        return out

    def judge(self, method: str, eval_name: str) -> Verdict:
        """The :class:`~hf_select.compare.stats.Verdict` of ``method`` (all its finished runs) on one eval set."""
        return judge(self.losses("random", eval_name), self.losses(method, eval_name))

    def verdict(self, result: MethodResult | str, eval_name: str) -> str:
        """The verdict's table cell: ``beats`` / ``ties`` / ``loses`` random, with the margin (random mean - the
        method's mean loss) and the prediction interval's half-width it is compared with
        (:mod:`hf_select.compare.stats`); ``-`` for a failed run."""
        method = result if isinstance(result, str) else result.method
        if not isinstance(result, str) and (result.status != "ok" or eval_name not in result.eval_loss):
            return "-"
        return self.judge(method, eval_name).text()

    def judged_methods(self) -> list[str]:
        """The methods with a verdict: every finished method but random, in table order."""
        return list(dict.fromkeys(m.method for m in self.methods if m.method != "random" and m.status == "ok"))

    def verdict_count(self) -> tuple[int, float]:
        """How many verdicts the table makes (methods x eval sets, ``n/a`` left out), and how many of them are
        expected to be "beats" or "loses" by chance alone."""
        count = sum(1 for m in self.judged_methods() for e in self.eval_sets
                    if self.judge(m, e["name"]).outcome != "n/a")
        return count, expected_false_verdicts(count)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": self.output_dir, "config": self.config, "pool_rows": self.pool_rows,
            "pool_composition": self.pool_composition, "pool_mean_response_chars": self.pool_mean_response_chars,
            "pool_mean_response_tokens": self.pool_mean_response_tokens, "budget_rows": self.budget_rows,
            "eval_sets": self.eval_sets, "base_loss": self.base_loss, "random": self.random_stats(),
            "verdicts": {m: {e["name"]: self.judge(m, e["name"]).to_dict() for e in self.eval_sets}
                         for m in self.judged_methods()},
            "methods": [m.to_dict() for m in self.methods], "seconds": self.seconds, "files": self.files,
            "pool_corrupted": self.pool_corrupted, "scores_seconds": self.scores_seconds,
            "budget_tokens": self.budget_tokens, "pool_tokens": self.pool_tokens, "eval_overlap": self.eval_overlap,
            "plan": self.plan, "dev": self.dev,
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
        scores_seconds=data.get("scores_seconds", 0.0), budget_tokens=data.get("budget_tokens"),
        pool_tokens=data.get("pool_tokens") or {}, eval_overlap=data.get("eval_overlap") or {},
        plan=data.get("plan") or {}, dev=data.get("dev") or {},
    )
