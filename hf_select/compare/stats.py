"""The verdict of a comparison: is a method's held-out loss outside what one more random draw would give?

Each random draw varies both the subset and the training seed, so the spread of the random losses holds the
training noise as well as the choice of rows. With ``n`` draws of mean ``m`` and sample standard deviation ``s``,
a new random draw falls, with 95% probability (normal errors), inside the prediction interval

    m ± t(0.975, n - 1) · s · sqrt(1 + 1/n)

(about ± 3.0 s at n = 5, ± 5.0 s at n = 3). A method trained with ``k`` seeds is judged by the mean of its ``k``
losses against ``m ± t(0.975, n - 1) · s · sqrt(1/k + 1/n)`` (``k = 1`` is the interval above). A method *beats*
random when its loss is below the interval, *loses* when above, and *ties* otherwise; the margin is
``m - loss`` (positive: lower loss than random). Under the null (a method no better than a random draw) a verdict
is "beats" 2.5% and "loses" 2.5% of the time, so a table of ``V`` verdicts holds about ``0.05 V`` false ones.

Example:
    >>> round(t_quantile(0.975, 4), 4)
    2.7764
    >>> v = verdict([1.00, 1.02, 0.98, 1.01, 0.99], [0.90])
    >>> v.outcome, round(v.margin, 3), round(v.half_width, 4)
    ('beats', 0.1, 0.0481)
    >>> verdict([1.0, 1.1], [0.5]).outcome
    'n/a'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

MIN_DRAWS = 3
CONFIDENCE = 0.95


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (scipy's, which scikit-learn brings)."""
    if df < 1:
        raise ValueError(f"t_quantile: df must be >= 1, got {df}")
    from scipy.stats import t

    return float(t.ppf(p, df))


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for fewer than 2 values).

    Example:
        >>> mean_sd([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd


@dataclass
class Verdict:
    """A method against the random draws on one eval set.

    ``outcome``: ``beats`` / ``ties`` / ``loses`` / ``n/a``; ``margin``: random mean - method mean (positive =
    lower loss than random); ``half_width``: the half-width of the interval the margin is compared with;
    ``reason``: why there is no verdict (``n/a``)."""

    outcome: str
    margin: float = float("nan")
    half_width: float = float("nan")
    random_mean: float = float("nan")
    random_sd: float = float("nan")
    draws: int = 0
    method_runs: int = 0
    reason: str | None = None

    def text(self) -> str:
        """One table cell, e.g. ``beats (+0.0123 > ±0.0081)`` or ``n/a (needs >= 3 random draws)``."""
        if self.outcome == "n/a":
            return f"n/a ({self.reason})"
        sign = ">" if abs(self.margin) > self.half_width else "<="
        return f"{self.outcome} ({self.margin:+.4f} {sign} ±{self.half_width:.4f})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(random_losses: Sequence[float], method_losses: Sequence[float], *,
            confidence: float = CONFIDENCE) -> Verdict:
    """Judge ``method_losses`` (one per training seed of the method) against ``random_losses`` (one per draw)."""
    n, k = len(random_losses), len(method_losses)
    if k == 0:
        return Verdict("n/a", reason="the method has no loss")
    if n < MIN_DRAWS:
        return Verdict("n/a", draws=n, method_runs=k, reason=f"needs >= {MIN_DRAWS} random draws, has {n}")
    mean, sd = mean_sd(random_losses)
    own = sum(method_losses) / k
    if not sd > 0:
        return Verdict("n/a", random_mean=mean, random_sd=sd, draws=n, method_runs=k,
                       reason="the random losses do not vary")
    half = half_width(sd, n, k, confidence=confidence)
    margin = mean - own
    outcome = "beats" if margin > half else "loses" if margin < -half else "ties"
    return Verdict(outcome, margin, half, mean, sd, n, k)


def half_width(sd: float, n: int, k: int = 1, *, confidence: float = CONFIDENCE) -> float:
    """Half-width of the interval a method's mean of ``k`` runs is compared with, from ``n`` random draws of sample
    standard deviation ``sd``: ``t(0.5 + confidence/2, n-1) * sd * sqrt(1/k + 1/n)``.

    Example:
        >>> round(half_width(1.0, 5), 2)
        3.04
    """
    return t_quantile(0.5 + confidence / 2, n - 1) * sd * math.sqrt(1.0 / k + 1.0 / n)


def expected_false_verdicts(verdicts: int, confidence: float = CONFIDENCE) -> float:
    """How many of ``verdicts`` are expected to be "beats" or "loses" by chance when no method differs from random.

    Example:
        >>> expected_false_verdicts(40)
        2.0
    """
    return round(verdicts * (1.0 - confidence), 2)
