"""Composition quotas (stratify_by): exact budgets, pool shares, shortfalls moved and counted, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from datasets import Dataset

from hf_select.errors import HFSelectError
from hf_select.selection import largest_remainder, select, strata_labels

NAN = float("nan")


def pool(n: int = 90, seed: int = 0, nan_every: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    src = rng.choice(["alpaca", "code", "dolly", "gsm"], size=n, p=[0.5, 0.2, 0.2, 0.1]).tolist()
    score = rng.normal(size=n)
    if nan_every:
        score[::nan_every] = np.nan
    ifd = rng.uniform(0.3, 1.2, size=n)
    return Dataset.from_dict({
        "source": src,
        "score": score.tolist(),
        "ifd": ifd.tolist(),
        "ifd_status": ["ok"] * n,
        "response_tokens": rng.integers(1, 60, size=n).tolist(),
        "embedding": rng.normal(size=(n, 4)).astype(np.float32).tolist(),
    })


def brute_largest_remainder(total: int, weights: list[float]) -> list[int]:
    """One row at a time: floors first, then +1 to the largest remainder (earlier entry on ties)."""
    s = sum(weights)
    exact = [total * w / s for w in weights]
    out = [math.floor(e + 1e-12) for e in exact]
    rema = [e - o for e, o in zip(exact, out, strict=True)]
    while sum(out) < total:
        best = max(range(len(weights)), key=lambda i: (rema[i], -i))
        out[best] += 1
        rema[best] = -1.0
    return out


@pytest.mark.parametrize("seed", range(20))
def test_largest_remainder_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 50, size=int(rng.integers(1, 7))).tolist()
    total = int(rng.integers(0, sum(w) + 1))
    assert largest_remainder(total, w).tolist() == brute_largest_remainder(total, w)


@pytest.mark.parametrize("seed", range(10))
def test_largest_remainder_with_caps(seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 30, size=5)
    caps = rng.integers(0, 20, size=5)
    total = int(rng.integers(0, 60))
    q = largest_remainder(total, w, caps=caps)
    assert q.sum() == min(total, caps.sum())
    assert (q <= caps).all() and (q >= 0).all()
    if total <= caps.sum():  # uncapped entries get at least their floor share of the whole total
        uncapped = q < caps
        assert (q[uncapped] >= np.floor(total * w[uncapped] / w.sum())).all()


def brute_stratified_top(scores, strata, budget):
    """Per stratum: its largest-remainder share of the budget, then its highest scores (ties by position)."""
    labels = sorted(set(strata))
    sizes = [sum(1 for s in strata if s == lab) for lab in labels]
    quotas = brute_largest_remainder(budget, sizes)
    keep = []
    for lab, q in zip(labels, quotas, strict=True):
        rows = [i for i, s in enumerate(strata) if s == lab]
        rows.sort(key=lambda i: (-scores[i], i))
        keep += rows[:q]
    return sorted(keep)


@pytest.mark.parametrize("seed", range(8))
def test_stratified_top_matches_brute_force(seed):
    ds = pool(n=70, seed=seed)
    budget = int(np.random.default_rng(seed).integers(1, 40))
    res = select(ds, [{"step": "top", "column": "score", "count": budget, "stratify_by": "source"}])
    assert res.row_ids == brute_stratified_top(ds["score"], ds["source"], budget)
    info = res.provenance[0]["info"]["quotas"]
    assert info["budget"] == budget == len(res)
    assert sum(v["kept"] for v in info["strata"].values()) == budget


@pytest.mark.parametrize("step", [
    {"step": "top", "column": "score", "fraction": 0.2},
    {"step": "ifd_rule", "fraction": 0.2},
    {"step": "random", "fraction": 0.2},
    {"step": "longest", "fraction": 0.2},
    {"step": "kcenter", "fraction": 0.2},
    {"step": "fused_diverse", "scores": {"score": 1.0, "ifd": -1.0}, "fraction": 0.2, "min_distance": 0.01},
    {"step": "length_stratified_top", "column": "score", "fraction": 0.2},
])
def test_every_budgeted_step_keeps_its_budget_and_pool_shares(step):
    ds = pool(n=100, seed=3)
    plain = select(ds, [step], seed=1)
    strat = select(ds, [{**step, "stratify_by": "source"}], seed=1)
    assert len(strat) == len(plain)
    src = np.asarray(ds["source"])
    labels = sorted(set(src))
    quotas = brute_largest_remainder(len(plain), [int((src == lab).sum()) for lab in labels])
    kept = np.asarray(strat.dataset["source"])
    assert [int((kept == lab).sum()) for lab in labels] == quotas
    # every dropped row has a reason, and the provenance counts add up
    assert len(strat.dataset) + len(strat.dropped) == len(ds)
    assert sum(strat.provenance[0]["dropped"].values()) == len(strat.dropped)


def test_stratified_random_is_seeded():
    ds = pool(n=100, seed=4)
    steps = [{"step": "random", "count": 20, "stratify_by": "source"}]
    assert select(ds, steps, seed=5).row_ids == select(ds, steps, seed=5).row_ids
    assert select(ds, steps, seed=5).row_ids != select(ds, steps, seed=6).row_ids


def test_shortfall_moves_to_other_strata_and_is_counted():
    # stratum "b" holds 10 of 20 rows but only 2 scored rows: its quota of 5 cannot be met
    score = [float(i) for i in range(10)] + [100.0, 101.0] + [NAN] * 8
    ds = Dataset.from_dict({"score": score, "source": ["a"] * 10 + ["b"] * 10})
    res = select(ds, [{"step": "top", "column": "score", "count": 10, "stratify_by": "source"}])
    assert len(res) == 10  # the budget is kept
    q = res.provenance[0]["info"]["quotas"]
    assert q["strata"]["b"] == {"rows": 10, "quota": 5, "kept": 2}
    assert q["strata"]["a"]["kept"] == 8
    assert q["shortfall_moved"] == 3 and q["shortfall_unfilled"] == 0
    assert res.provenance[0]["dropped"]["nan_score"] == 8


def test_budget_larger_than_the_eligible_rows_is_counted_not_silent():
    ds = Dataset.from_dict({"score": [1.0, 2.0, NAN, NAN], "source": ["a", "a", "b", "b"]})
    with pytest.warns(UserWarning, match="only 2 qualify"):  # the unstratified budget rule warns as before
        res = select(ds, [{"step": "top", "column": "score", "count": 3, "stratify_by": "source"}])
    assert len(res) == 2
    assert res.provenance[0]["info"]["quotas"]["budget"] == 2


def test_min_share_floor():
    # the best rows are all in "a"; with min_share=0.5 stratum "b" still gets half its pool share
    ds = Dataset.from_dict({"score": [10.0 + i for i in range(10)] + [float(i) for i in range(10)],
                            "source": ["a"] * 10 + ["b"] * 10})
    free = select(ds, [{"step": "top", "column": "score", "count": 10, "stratify_by": "source", "min_share": 0.0}])
    assert sorted(set(free.dataset["source"])) == ["a"]
    half = select(ds, [{"step": "top", "column": "score", "count": 10, "stratify_by": "source", "min_share": 0.5}])
    assert half.dataset["source"].count("b") == 2  # floor(0.5 * 5)
    assert len(half) == 10
    with pytest.raises(HFSelectError, match="min_share"):
        select(ds, [{"step": "top", "column": "score", "count": 2, "stratify_by": "source", "min_share": 2}])


def brute_stratified_threshold(q, strata, lo):
    """The largest size whose largest-remainder quotas fit every stratum's passing rows, then its highest; a stratum
    with no passing row weighs nothing (it cannot fill any share)."""
    labels = sorted(set(strata))
    passing = {lab: sorted((i for i, s in enumerate(strata) if s == lab and q[i] >= lo), key=lambda i: (-q[i], i))
               for lab in labels}
    sizes = [strata.count(lab) if passing[lab] else 0 for lab in labels]
    if not any(sizes):
        return []
    for size in range(sum(len(v) for v in passing.values()), -1, -1):
        quotas = brute_largest_remainder(size, sizes)
        if all(qq <= len(passing[lab]) for lab, qq in zip(labels, quotas, strict=True)):
            return sorted(i for lab, qq in zip(labels, quotas, strict=True) for i in passing[lab][:qq])
    return []


@pytest.mark.parametrize("seed", range(12))
def test_stratified_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    q = np.round(rng.normal(size=n), 2).tolist()
    strata = rng.choice(["a", "b", "c"], size=n).tolist()
    ds = Dataset.from_dict({"q": q, "source": strata})
    res = select(ds, [{"step": "threshold", "column": "q", "min": 0.0, "stratify_by": "source"}])
    assert res.row_ids == brute_stratified_threshold(q, strata, 0.0)
    info = res.provenance[0]["info"]["quotas"]
    assert info["passing"] == sum(v >= 0 for v in q)
    assert info["cut_over_quota"] == res.provenance[0]["dropped"].get("over_quota", 0)


def test_stratified_threshold_with_an_empty_stratum_keeps_the_others_shares():
    # the case: strata of 2,600 and 400 rows, 2,000 and 0 passing: all 2,000 passing rows are kept (the
    # exact pool composition would keep 3), with a warning naming the empty stratum
    n_a, n_b = 2600, 400
    q = [1.0] * 2000 + [-1.0] * 600 + [-1.0] * n_b
    ds = Dataset.from_dict({"q": q, "source": ["a"] * n_a + ["b"] * n_b})
    with pytest.warns(UserWarning, match=r"no row of stratum 'b' \(400 rows\) passes"):
        res = select(ds, [{"step": "threshold", "column": "q", "min": 0.0, "stratify_by": "source"}])
    assert len(res) == 2000 and res.row_ids == list(range(2000))
    quotas = res.provenance[0]["info"]["quotas"]
    assert quotas["empty_strata"] == ["b"] and quotas["kept"] == 2000
    assert quotas["strata"]["b"] == {"rows": 400, "passing": 0, "quota": 0, "kept": 0}
    # three strata, one empty: the other two keep their pool shares among themselves (300 : 100 -> 3 : 1; at 162
    # rows the rounded quotas are 122 and 40)
    q3 = [1.0] * 300 + [1.0] * 40 + [-1.0] * 60 + [-1.0] * 200
    src3 = ["a"] * 300 + ["c"] * 100 + ["b"] * 200
    ds3 = Dataset.from_dict({"q": q3, "source": src3})
    with pytest.warns(UserWarning, match="'b'"):
        res3 = select(ds3, [{"step": "threshold", "column": "q", "min": 0.0, "stratify_by": "source"}])
    kept = res3.dataset["source"]
    assert kept.count("c") == 40 and kept.count("a") == 122 and kept.count("b") == 0
    assert res3.row_ids == brute_stratified_threshold(q3, src3, 0.0)


def test_stratified_threshold_cuts_the_over_represented_stratum():
    # pool: 4 "a" and 4 "b"; 4 "a" rows and 1 "b" row pass -> the largest fitting size is 3 (quotas 2 + 1)
    ds = Dataset.from_dict({"q": [1.0, 2.0, 3.0, 4.0, 5.0, -1.0, -1.0, -1.0], "source": ["a"] * 4 + ["b"] * 4})
    res = select(ds, [{"step": "threshold", "column": "q", "min": 0.0, "stratify_by": "source"}])
    assert res.row_ids == [2, 3, 4]  # the two highest "a" rows and the "b" row
    assert res.provenance[0]["dropped"] == {"below_min": 3, "over_quota": 2}
    with pytest.raises(HFSelectError, match="min_share applies"):
        select(ds, [{"step": "threshold", "column": "q", "min": 0.0, "stratify_by": "source", "min_share": 0.5}])
    # with only max, the lowest passing rows are kept first: 4 "a" and 3 "b" pass max 4.5 -> 4 + 3? quotas of 7
    # are 4/3, which fit: nothing cut; with max 2.5: "a" 2 pass, "b" 3 pass -> size 5 gives 3/2 (a lacks one),
    # size 4 gives 2/2: the two lowest "b" rows (-1.0 at positions 5 and 6) are kept
    res2 = select(ds, [{"step": "threshold", "column": "q", "max": 2.5, "stratify_by": "source"}])
    assert res2.row_ids == [0, 1, 5, 6]


def test_clusters_strata():
    rng = np.random.default_rng(0)
    centers = np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    labels = np.repeat([0, 1, 2], [30, 20, 10])
    emb = centers[labels] + rng.normal(scale=0.1, size=(60, 2))
    ds = Dataset.from_dict({"embedding": emb.tolist(), "score": rng.normal(size=60).tolist()})
    res = select(ds, [{"step": "top", "column": "score", "count": 12,
                       "stratify_by": {"clusters": 3, "column": "embedding"}}])
    kept = labels[np.asarray(res.row_ids)]
    assert sorted(np.bincount(kept, minlength=3).tolist()) == [2, 4, 6]
    info = res.provenance[0]["info"]["quotas"]
    assert info["clusters"] == 3 and info["rows_without_embedding"] == 0


def test_strata_labels_null_values_form_a_stratum():
    ds = Dataset.from_dict({"src": ["a", None, "b", None]})
    codes, labels, info = strata_labels(ds, "src", "top")
    assert labels == ["a", "b", "null"] and codes.tolist() == [0, 2, 1, 2] and info["null_rows"] == 2


def test_bad_stratum_column_errors_name_step_and_field():
    ds = pool(n=20)
    with pytest.raises(HFSelectError, match=r"step 1 \(top\).*stratify_by.*'category'"):
        select(ds, [{"step": "top", "column": "score", "count": 5, "stratify_by": "category"}])
    ds2 = ds.add_column("category", [None] * 20)
    with pytest.raises(HFSelectError, match=r"step 1 \(top\).*'category' is null in every row"):
        select(ds2, [{"step": "top", "column": "score", "count": 5, "stratify_by": "category"}])
    with pytest.raises(HFSelectError, match="stratify_by must be"):
        select(ds, [{"step": "top", "column": "score", "count": 5, "stratify_by": {"bins": 3}}])
    with pytest.raises(HFSelectError, match="needs a step with a row budget"):
        select(ds, [{"step": "dedup_exact", "column": "source", "stratify_by": "source"}])


def test_min_share_without_stratify_by_is_an_error():
    with pytest.raises(HFSelectError, match=r"step 1 \(top\): min_share .* needs stratify_by"):
        select(pool(n=10), [{"step": "top", "column": "score", "count": 2, "min_share": 0.5}])


def test_no_stratify_is_unchanged():
    ds = pool(n=50)
    a = select(ds, [{"step": "top", "column": "score", "count": 7}])
    b = select(ds, [{"step": "top", "column": "score", "count": 7, "stratify_by": None}])
    assert a.row_ids == b.row_ids


def test_yaml_round_trip(tmp_path):
    ds = pool(n=40)
    cfg = tmp_path / "s.yaml"
    cfg.write_text("steps:\n  - {step: ifd_rule, fraction: 0.25, stratify_by: source, min_share: 0.5}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = select(ds, str(cfg))
    assert len(res) == 10
    assert res.provenance[0]["params"]["stratify_by"] == "source"
