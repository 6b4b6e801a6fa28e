"""length_stratified_top: strata and residual modes against loop-based brute forces; length sources; bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import Dataset
from test_quotas import brute_largest_remainder  # the one brute force of largest-remainder quotas

from hf_select.errors import HFSelectError
from hf_select.selection import length_stratified_top, select
from hf_select.selection.length import length_bins

NAN = float("nan")


def rows(n: int = 80, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    length = rng.integers(1, 200, size=n)
    score = 0.004 * length + rng.normal(scale=0.2, size=n)  # a score that follows length, like IFD
    score[::9] = np.nan
    return Dataset.from_dict({"score": score.tolist(), "response_tokens": length.tolist(),
                              "instruction": ["q"] * n, "output": ["a" * int(x) for x in length]})




def test_length_bins_properties():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=200).astype(float)
    codes = length_bins(lengths, 5)
    for a in range(200):  # equal lengths share a bin; a longer row never sits in a lower bin
        for b in range(200):
            if lengths[a] == lengths[b]:
                assert codes[a] == codes[b]
            elif lengths[a] < lengths[b]:
                assert codes[a] <= codes[b]
    assert codes.max() <= 4
    sizes = np.bincount(codes)
    assert sizes.min() >= 200 / 5 / 3  # equal-frequency up to ties


@pytest.mark.parametrize("seed", range(6))
def test_strata_mode_matches_brute_force(seed):
    ds = rows(seed=seed)
    budget = 17
    res = length_stratified_top(ds, "score", count=budget, bins=4)
    score = ds["score"]
    length = ds["response_tokens"]
    eligible = [i for i in range(len(ds)) if not math.isnan(score[i])]
    codes = length_bins(np.asarray([length[i] for i in eligible], dtype=float), 4)
    labels = sorted(set(codes.tolist()))
    members = {b: [eligible[j] for j in range(len(eligible)) if codes[j] == b] for b in labels}
    quotas = brute_largest_remainder(budget, [len(members[b]) for b in labels])
    keep = []
    for b, q in zip(labels, quotas, strict=True):
        keep += sorted(members[b], key=lambda i: (-score[i], i))[:q]
    assert res.keep.tolist() == sorted(keep)
    assert res.dropped["nan_score"].tolist() == [i for i in range(len(ds)) if math.isnan(score[i])]


def ols(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


@pytest.mark.parametrize("standardise", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_residual_mode_matches_brute_force(seed, standardise):
    ds = rows(seed=seed)
    score, length = ds["score"], ds["response_tokens"]
    elig = [i for i in range(len(ds)) if not math.isnan(score[i]) and length[i] > 0]
    xs = [math.log(length[i]) for i in elig]
    slope, intercept = ols(xs, [score[i] for i in elig])
    resid = {i: score[i] - (intercept + slope * math.log(length[i])) for i in elig}
    if standardise:
        s_slope, s_intercept = ols(xs, [abs(resid[i]) for i in elig])
        resid = {i: r / (s_intercept + s_slope * math.log(length[i])) for i, r in resid.items()}
    want = sorted(sorted(elig, key=lambda i: (-resid[i], i))[:12])
    res = length_stratified_top(ds, "score", count=12, mode="residual", standardise=standardise)
    assert res.keep.tolist() == want
    assert res.info["slope"] == pytest.approx(slope)


def test_length_control_lowers_the_length_correlation_of_the_choice():
    ds = rows(n=400, seed=1)
    plain = select(ds, [{"step": "top", "column": "score", "fraction": 0.2}])
    for mode in ("strata", "residual"):
        res = select(ds, [{"step": "length_stratified_top", "column": "score", "fraction": 0.2, "mode": mode}])
        info = res.provenance[0]["info"]
        assert info["spearman_score_length"] > 0.5
        assert abs(info["spearman_key_length"]) < info["spearman_score_length"]
        assert info["mean_length_kept"] < info["mean_length_plain_top"]
        assert np.mean(res.dataset["response_tokens"]) < np.mean(plain.dataset["response_tokens"])
        assert len(res) == len(plain)


def test_length_from_characters_when_no_token_column():
    ds = Dataset.from_dict({"score": [1.0, 2.0, 3.0, 4.0], "instruction": ["q"] * 4,
                            "output": ["a", "bb", "cccccccc", "dddddddddd"]})
    res = length_stratified_top(ds, "score", count=2, bins=2)
    assert res.info["length"] == "response characters"
    assert res.keep.tolist() == [1, 3]


def test_no_length_reason_and_bad_input():
    ds = Dataset.from_dict({"score": [1.0, 2.0, 3.0], "response_tokens": [0, 5, None]})
    res = length_stratified_top(ds, "score", count=1, mode="residual")
    assert res.dropped["no_length"].tolist() == [0, 2]
    with pytest.raises(HFSelectError, match="mode must be one of"):
        select(ds, [{"step": "length_stratified_top", "column": "score", "count": 1, "mode": "bins"}])
    with pytest.raises(HFSelectError, match="bins must be a positive integer"):
        select(ds, [{"step": "length_stratified_top", "column": "score", "count": 1, "bins": 0}])
    with pytest.raises(HFSelectError, match="no column 'ifd'"):
        select(ds, [{"step": "length_stratified_top", "column": "ifd", "count": 1}])
