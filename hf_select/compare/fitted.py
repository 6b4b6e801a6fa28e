"""InstructMining fitted as its paper does it, inside a comparison (method ``instructmining_fit``).

The paper fits a linear rule ``log(loss) = a + sum(b_i * mean indicator_i)`` on fine-tuning experiments: each
experiment trains a model on one subset and measures its eval loss. A comparison runs exactly such experiments, so
this method runs after every other method of the comparison and:

1. computes per-row indicators from the shared scores (no extra model pass), :data:`FIT_COLUMNS`:
   ``ind_response_len`` (the response's tokens, IFD's ``response_tokens``), ``ind_ppl`` (``exp`` of the
   response's mean token loss given its prompt, IFD's ``loss_conditioned``: the paper's perplexity), ``ind_mtld``
   (lexical diversity of the response) and ``ind_knn6`` (distance to the 6th nearest other row in sentence-embedding
   space); the paper's reward and UniEval indicators need models the comparison does not load;
2. takes every finished run of the comparison (random draws included, ``full`` and fitted methods excluded) as one
   experiment: the subset's mean indicators and the trained model's loss on the **dev** set
   (``CompareConfig.dev``), never on a reported eval set;
3. fits the rule by least squares (:func:`~hf_select.scoring.rule.fit_rule`), ranks the pool by its predicted log
   loss (lower first) and keeps rows in that order up to the comparison's budget, like every other method.

The fit (coefficients, R-squared, experiments) is written to ``<method folder>/fit/rule.json`` and shown under the
comparison's table. The published coefficients (``InstructMiningRule.preset("instructmining")``) are not used here:
they were fitted on the paper's own indicator models, whose scales these indicators do not share.

Example:
    >>> import numpy as np
    >>> ind = {"ind_response_len": np.array([10.0, 20.0, 30.0, 40.0])}
    >>> subset_means(ind, [0, 3])
    {'ind_response_len': 25.0}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import HFSelectError

logger = logging.getLogger(__name__)

FITTED_METHODS = ("instructmining_fit",)
FIT_COLUMNS = ("ind_response_len", "ind_ppl", "ind_mtld", "ind_knn6")
FIT_NEEDS = ("ifd", "embedding")  # the shared scores the indicators are computed from
KNN_K = 6
# runs that are not experiments of the fit: the whole pool (not a subset) and the fitted methods themselves
NOT_EXPERIMENTS = ("full", *FITTED_METHODS)


def pool_indicators(scored: Any) -> dict[str, np.ndarray]:
    """The :data:`FIT_COLUMNS` of every pool row, from the shared scores (columns ``response_tokens``,
    ``loss_conditioned`` and ``embedding``, and the rows' responses); NaN where a score is missing.

    Raises:
        HFSelectError: when a needed score column is missing (the shared scoring did not run IFD or the embedder).
    """
    from ..formats import detect_format, row_to_messages
    from ..scoring.diversity import knn_distance, mtld

    missing = [c for c in ("response_tokens", "loss_conditioned", "embedding") if c not in scored.column_names]
    if missing:
        raise HFSelectError(f"instructmining_fit needs the shared score columns {missing}; they come from the IFD "
                            "scorer and the sentence embedder (the comparison adds both when this method is asked)")
    tokens = np.asarray([math.nan if v is None else v for v in scored["response_tokens"]], dtype=np.float64)
    loss = np.asarray([math.nan if v is None else v for v in scored["loss_conditioned"]], dtype=np.float64)
    fmt = detect_format(scored.column_names)
    texts = []
    for row in scored.select_columns([c for c in scored.column_names if c not in ("embedding",)]):
        try:
            messages = row_to_messages(row, fmt)
            texts.append(next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), ""))
        except Exception:  # an unreadable row has no indicators
            texts.append("")
    lexical = np.asarray([mtld(t) if t.strip() else math.nan for t in texts], dtype=np.float64)
    embeddings = scored["embedding"]
    ok = [i for i, e in enumerate(embeddings) if e is not None]
    knn = np.full(len(scored), math.nan)
    if len(ok) > KNN_K:
        knn[ok] = knn_distance(np.asarray([embeddings[i] for i in ok], dtype=np.float32), KNN_K)
    return {"ind_response_len": tokens, "ind_ppl": np.exp(loss), "ind_mtld": lexical, "ind_knn6": knn}


def subset_means(indicators: Mapping[str, np.ndarray], ids: Sequence[int]) -> dict[str, float]:
    """Mean of each indicator over the rows ``ids``, ignoring NaN (NaN when none of them has a value)."""
    out = {}
    for name, values in indicators.items():
        chosen = values[np.asarray(list(ids), dtype=np.int64)] if len(ids) else np.asarray([])
        finite = chosen[np.isfinite(chosen)]
        out[name] = float(finite.mean()) if finite.size else math.nan
    return out


def experiments(runs: Sequence[Any], row_ids: Mapping[str, Sequence[int]], indicators: Mapping[str, np.ndarray]
                ) -> list[dict[str, Any]]:
    """One experiment per finished run with a dev loss: ``{"label", "means", "dev_loss"}`` (runs of
    :data:`NOT_EXPERIMENTS` and failed runs are left out)."""
    out = []
    for run in runs:
        if run.method in NOT_EXPERIMENTS or run.status != "ok" or run.dev_loss is None or run.label not in row_ids:
            continue
        out.append({"label": run.label, "means": subset_means(indicators, row_ids[run.label]),
                    "dev_loss": float(run.dev_loss)})
    return out


def fit_from_experiments(found: Sequence[Mapping[str, Any]], columns: Sequence[str] = FIT_COLUMNS) -> Any:
    """The rule fitted on ``found`` (:func:`experiments`): log dev loss from the subsets' mean indicators.

    Raises:
        HFSelectError: with fewer experiments than coefficients + 1 (naming how many more runs it needs).

    Example:
        >>> found = [{"label": str(i), "means": {"a": float(i), "b": float(i * i)}, "dev_loss": math.exp(1 - 0.1 * i)}
        ...          for i in range(4)]
        >>> rule = fit_from_experiments(found, ["a", "b"])
        >>> round(rule.intercept, 6), round(rule.coefficients["a"], 6), rule.fit["n_experiments"]
        (1.0, -0.1, 4)
    """
    from ..scoring.rule import fit_rule

    need = len(columns) + 1
    if len(found) < need:
        raise HFSelectError(f"instructmining_fit: {len(found)} finished runs with a dev loss cannot fit "
                            f"{len(columns)} coefficients and an intercept; it needs at least {need}: compare more "
                            "methods or raise CompareConfig.random_seeds")
    try:
        rule = fit_rule([dict(e["means"]) for e in found], [e["dev_loss"] for e in found], list(columns),
                        name="instructmining_fit")
    except ValueError as err:
        raise HFSelectError(str(err)) from err
    rule.description = (f"fitted by least squares on {len(found)} fine-tunes of this comparison: log dev loss from "
                        "the subsets' mean indicators")
    rule.fit = {**(rule.fit or {}), "experiments": [e["label"] for e in found]}
    return rule


def rule_text(fit: Mapping[str, Any]) -> str:
    """One line for the comparison's markdown: the fitted rule, its R-squared and its experiments.

    Example:
        >>> rule_text({"intercept": 1.0, "coefficients": {"ind_ppl": -0.25}, "fit": {"r2": 0.5, "n_experiments": 9}})
        'log dev loss = 1.000 - 0.25 ind_ppl (R² 0.50 over 9 fine-tunes)'
    """
    terms = "".join(f" {'-' if v < 0 else '+'} {abs(v):.3g} {k}" for k, v in fit["coefficients"].items())
    stats = fit.get("fit") or {}
    return (f"log dev loss = {fit['intercept']:.3f}{terms} (R² {stats.get('r2', float('nan')):.2f} over "
            f"{stats.get('n_experiments', '?')} fine-tunes)")
