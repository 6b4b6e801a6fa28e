"""fused_diverse: normalisation, combination and the diversity walk against loop-based brute forces; bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import Dataset

from hf_select.errors import HFSelectError
from hf_select.selection import fused_diverse, fused_scores, select

NAN = float("nan")


def rows(n: int = 50, seed: int = 0, d: int = 3) -> Dataset:
    rng = np.random.default_rng(seed)
    ifd = rng.uniform(0.2, 1.0, size=n)
    judge = rng.integers(1, 6, size=n).astype(float)  # ties on purpose
    ifd[4] = np.nan
    judge[9] = np.nan
    emb = rng.normal(size=(n, d))
    emb[1] = emb[0] * 1.001  # near duplicates
    emb[2] = emb[0] * 0.999
    return Dataset.from_dict({"ifd": ifd.tolist(), "judge": judge.tolist(), "embedding": emb.tolist()})


def brute_percentile(values):
    """Average-rank percentile by counting: (#smaller + (#equal + 1) / 2) / m."""
    m = len(values)
    return [(sum(w < v for w in values) + (sum(w == v for w in values) + 1) / 2) / m for v in values]


def brute_fused(ds, weights, combine="sum"):
    cols = list(weights)
    ok = [i for i in range(len(ds)) if all(not math.isnan(ds[c][i]) for c in cols)]
    norm = {}
    for c in cols:
        sign = 1.0 if weights[c] > 0 else -1.0
        norm[c] = dict(zip(ok, brute_percentile([sign * ds[c][i] for i in ok]), strict=True))
    total = {}
    for i in ok:
        if combine == "sum":
            total[i] = sum(abs(weights[c]) * norm[c][i] for c in cols)
        else:
            total[i] = math.prod(norm[c][i] ** abs(weights[c]) for c in cols)
    return total


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def brute_walk(ds, weights, count, min_distance, combine="sum"):
    total = brute_fused(ds, weights, combine)
    order = sorted(total, key=lambda i: (-total[i], i))
    emb = ds["embedding"]
    chosen, skipped = [], []
    for i in order:
        if len(chosen) == count:
            break
        if all(1 - cosine(emb[i], emb[j]) > min_distance for j in chosen):
            chosen.append(i)
        else:
            skipped.append(i)
    filled = skipped[: count - len(chosen)]
    return sorted(chosen + filled), len(filled)


@pytest.mark.parametrize("combine", ["sum", "product"])
@pytest.mark.parametrize("seed", range(4))
def test_fused_scores_match_brute_force(seed, combine):
    ds = rows(seed=seed)
    weights = {"ifd": 1.0, "judge": -0.5}
    got, reasons = fused_scores(ds, weights, combine=combine)
    want = brute_fused(ds, weights, combine)
    for i in range(len(ds)):
        if i in want:
            assert got[i] == pytest.approx(want[i])
        else:
            assert math.isnan(got[i])
    assert reasons["nan_score:ifd"].tolist()[4] and reasons["nan_score:judge"].tolist()[9]


@pytest.mark.parametrize("min_distance", [0.0001, 0.3, 0.9, 1.2])
@pytest.mark.parametrize("seed", range(4))
def test_walk_matches_brute_force(seed, min_distance):
    ds = rows(seed=seed)
    weights = {"ifd": 1.0, "judge": 1.0}
    res = fused_diverse(ds, scores=weights, count=15, min_distance=min_distance, block_size=4)
    keep, filled = brute_walk(ds, weights, 15, min_distance)
    assert res.keep.tolist() == keep
    assert res.info["filled"] == filled
    assert len(res.keep) == 15  # never fewer than the budget


def test_min_distance_off_is_plain_top_of_the_combination():
    ds = rows(seed=5)
    weights = {"ifd": 2.0, "judge": 1.0}
    total = brute_fused(ds, weights)
    want = sorted(sorted(total, key=lambda i: (-total[i], i))[:10])
    res = select(ds, [{"step": "fused_diverse", "scores": weights, "count": 10, "min_distance": 0}])
    assert res.row_ids == want


def test_near_duplicates_are_skipped_and_counted():
    ds = Dataset.from_dict({"q": [3.0, 2.9, 2.8, 1.0], "embedding": [[1.0, 0.0], [1.0, 0.001], [0.0, 1.0], [1, 1]]})
    res = select(ds, [{"step": "fused_diverse", "scores": {"q": 1.0}, "count": 2, "min_distance": 0.01}])
    assert res.row_ids == [0, 2]
    assert res.provenance[0]["dropped"] == {"too_close": 1, "not_top": 1}
    assert res.provenance[0]["info"]["skipped_too_close"] == 1 and res.provenance[0]["info"]["filled"] == 0


def test_fill_best_and_fill_error():
    ds = Dataset.from_dict({"q": [3.0, 2.0, 1.0], "embedding": [[1.0, 0.0], [1.0, 0.0001], [1.0, 0.0002]]})
    res = select(ds, [{"step": "fused_diverse", "scores": {"q": 1.0}, "count": 2, "min_distance": 0.5}])
    assert res.row_ids == [0, 1] and res.provenance[0]["info"]["filled"] == 1
    with pytest.raises(HFSelectError, match=r"step 1 \(fused_diverse\).*chose 1 of 2 rows"):
        select(ds, [{"step": "fused_diverse", "scores": {"q": 1.0}, "count": 2, "min_distance": 0.5,
                     "fill": "error"}])


def test_nan_and_status_reasons_name_the_column():
    ds = Dataset.from_dict({"ifd": [0.5, NAN, 0.7, 0.2], "ifd_status": ["ok", "prompt_too_long", "ok", "ok"],
                            "judge": [1.0, 2.0, NAN, 3.0], "embedding": [[1.0, 0.0], [0.0, 1.0], [1, 1], [-1, 0]]})
    res = select(ds, [{"step": "fused_diverse", "scores": {"ifd": 1.0, "judge": 1.0}, "count": 2}])
    assert res.provenance[0]["dropped"] == {"ifd_status:prompt_too_long": 1, "nan_score:judge": 1}
    assert res.row_ids == [0, 3]


def test_bad_input():
    ds = rows(n=12)
    with pytest.raises(HFSelectError, match="scores must be a mapping"):
        select(ds, [{"step": "fused_diverse", "scores": [], "count": 2}])
    with pytest.raises(HFSelectError, match="scores.ifd weight must be a non-zero number"):
        select(ds, [{"step": "fused_diverse", "scores": {"ifd": 0}, "count": 2}])
    with pytest.raises(HFSelectError, match="needs non-negative scores"):
        select(ds, [{"step": "fused_diverse", "scores": {"ifd": 1}, "count": 2, "combine": "product",
                     "normalise": "zscore"}])
    with pytest.raises(HFSelectError, match="no column 'quality'"):
        select(ds, [{"step": "fused_diverse", "scores": {"quality": 1}, "count": 2}])
    with pytest.raises(HFSelectError, match="min_distance is a cosine distance"):
        select(ds, [{"step": "fused_diverse", "scores": {"ifd": 1}, "count": 2, "min_distance": 3}])


def test_zscore_and_minmax_sum():
    ds = Dataset.from_dict({"a": [1.0, 2.0, 3.0], "b": [3.0, 3.0, 0.0]})
    z, _ = fused_scores(ds, {"a": 1.0, "b": 1.0}, method="zscore")
    a, b = np.array([1.0, 2.0, 3.0]), np.array([3.0, 3.0, 0.0])
    assert z.tolist() == pytest.approx(((a - a.mean()) / a.std() + (b - b.mean()) / b.std()).tolist())
    mm, _ = fused_scores(ds, {"a": 1.0, "b": 1.0}, method="minmax")
    assert mm.tolist() == pytest.approx([1.0, 1.5, 1.0])
