"""k-center greedy with a per-row prior (``kcenter`` with ``weight_column``) against a brute-force version."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from hf_select.errors import HFSelectError
from hf_select.selection import select
from hf_select.selection.kcenter import k_center_greedy
from hf_select.selection.weighted_kcenter import weighted_k_center_greedy


def brute_weighted_kcenter(x, k, w, initial=(), metric="euclidean"):
    """The rule written out: every pick scans every row and every center with plain loops."""
    x = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)

    def dist(a, b):
        return max(0.0, 1.0 - float(x[a] @ x[b])) if metric == "cosine" else float(np.linalg.norm(x[a] - x[b]))

    centers = list(initial)
    picks: list[int] = []
    for _ in range(min(k, len(x) - len(initial))):
        best, best_score = None, -1.0
        for i in range(len(x)):
            if i in centers:
                continue
            score = w[i] if not centers else w[i] * min(dist(i, c) for c in centers)
            if score > best_score:  # strict: ties go to the lowest position
                best, best_score = i, score
        centers.append(best)
        picks.append(best)
    return picks


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_weighted_kcenter_matches_brute_force(seed, metric):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 40))
    x = rng.normal(size=(n, 3))
    w = np.round(rng.uniform(0.5, 3.0, size=n), 3)
    k = int(rng.integers(1, n))
    initial = [] if seed % 2 else sorted(rng.choice(n, size=2, replace=False).tolist())
    got = weighted_k_center_greedy(x, k, w, initial=initial, metric=metric)
    assert got.indices == brute_weighted_kcenter(x, k, w, initial, metric)
    assert len(got.radii) == len(got.indices)


def test_equal_weights_give_plain_kcenter_after_the_first_pick():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4))
    plain = k_center_greedy(x, 6, initial=[5], precision="float64")
    weighted = weighted_k_center_greedy(x, 6, np.ones(30), initial=[5]).indices
    assert weighted == plain


def test_length_prior_prefers_long_rows_at_equal_distance():
    # two tight clusters; in each, one long row: the prior picks the long row as each cluster's center
    x = np.array([[0.0, 0.0], [0.01, 0.0], [0.0, 0.01], [10.0, 10.0], [10.01, 10.0], [10.0, 10.01]])
    lengths = [5, 400, 5, 5, 5, 900]
    ds = Dataset.from_dict({"embedding": x.tolist(), "response_tokens": lengths})
    res = select(ds, [{"step": "kcenter", "count": 2, "weight_column": "response_tokens",
                       "weight_transform": "log1p"}])
    assert res.row_ids == [1, 5]
    plain = select(ds, [{"step": "kcenter", "count": 2}], seed=0)
    assert plain.row_ids != [1, 5]  # (the plain rule does not look at lengths)
    info = res.provenance[0]["info"]
    assert info["weight_column"] == "response_tokens" and info["weight_transform"] == "log1p"


def test_step_drops_rows_without_a_weight_and_checks_the_transform():
    ds = Dataset.from_dict({"embedding": [[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [9.0, 0.0]],
                            "w": [1.0, float("nan"), -2.0, 1.0]})
    res = select(ds, [{"step": "kcenter", "count": 2, "weight_column": "w"}])
    assert res.row_ids == [0, 3]
    assert res.provenance[0]["dropped"] == {"no_weight": 2}
    with pytest.raises(HFSelectError, match="weight_transform"):
        select(ds, [{"step": "kcenter", "count": 2, "weight_column": "w", "weight_transform": "sqrt"}])
    with pytest.raises(ValueError, match="finite"):
        weighted_k_center_greedy(np.zeros((2, 2)), 1, [1.0, -1.0])


def test_weighted_kcenter_with_initial_rows_and_stratify():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 3))
    w = rng.uniform(1, 2, size=24)
    ds = Dataset.from_dict({"embedding": x.tolist(), "w": w.tolist(), "seed_row": [1] + [0] * 23,
                            "source": ["a", "b"] * 12})
    res = select(ds, [{"step": "kcenter", "k": 4, "weight_column": "w", "initial_column": "seed_row"}])
    assert res.row_ids == sorted([0, *brute_weighted_kcenter(x, 4, w, [0])])
    strat = select(ds, [{"step": "kcenter", "count": 6, "weight_column": "w", "stratify_by": "source"}])
    assert len(strat) == 6 and strat.dataset["source"].count("a") == 3
