"""consistency_gate: reverse IFD, quality and forward-IFD tests against a row-by-row brute force; bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import Dataset

from hf_select.errors import HFSelectError
from hf_select.selection import consistency_gate, select

NAN = float("nan")


def rows(n: int = 60, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    rev = rng.uniform(0.2, 1.4, size=n)
    status = rng.choice(["ok", "ok", "ok", "prompt_too_long", "empty_instruction"], size=n).tolist()
    rev = [float(v) if s == "ok" else NAN for v, s in zip(rev, status, strict=True)]
    rev[3] = NAN  # NaN with an ok status
    status[3] = "ok"
    q = rng.normal(size=n).tolist()
    q[7] = NAN
    ifd = rng.uniform(0.2, 1.3, size=n).tolist()
    ifd[11] = NAN
    return Dataset.from_dict({"ifd_reverse": rev, "ifd_reverse_status": status, "judge": q, "ifd": ifd})


def brute_gate(ds, max_reverse=1.0, min_quality=None, max_ifd=None, keep_status=()):
    """Row by row: the first failing test names the reason, in the documented order."""
    keep, reasons = [], {}
    for i, r in enumerate(ds):
        reason = None
        if r["ifd_reverse_status"] in keep_status:
            pass  # passes the reverse test unjudged; the quality / IFD tests below still apply
        elif r["ifd_reverse_status"] != "ok":
            reason = f"ifd_reverse_status:{r['ifd_reverse_status']}"
        elif math.isnan(r["ifd_reverse"]):
            reason = "nan_score"
        elif max_reverse is not None and r["ifd_reverse"] >= max_reverse:
            reason = "reverse_ifd_high"
        if reason is not None:
            pass
        elif min_quality is not None and math.isnan(r["judge"]):
            reason = "quality_nan"
        elif min_quality is not None and r["judge"] < min_quality:
            reason = "quality_low"
        elif max_ifd is not None and math.isnan(r["ifd"]):
            reason = "ifd_nan"
        elif max_ifd is not None and r["ifd"] >= max_ifd:
            reason = "ifd_high"
        if reason is None:
            keep.append(i)
        else:
            reasons.setdefault(reason, []).append(i)
    return keep, reasons


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kw", [{}, {"max_reverse": 0.8}, {"max_reverse": None, "min_quality": 0.0},
                                {"max_reverse": 0.9, "min_quality": -0.5, "max_ifd": 1.0}])
def test_gate_matches_brute_force(seed, kw):
    ds = rows(seed=seed)
    params = {"max_reverse": kw.get("max_reverse", 1.0)}
    if "min_quality" in kw:
        params.update(quality_column="judge", min_quality=kw["min_quality"])
    if "max_ifd" in kw:
        params.update(ifd_column="ifd", max_ifd=kw["max_ifd"])
    res = consistency_gate(ds, **params)
    keep, reasons = brute_gate(ds, params["max_reverse"], kw.get("min_quality"), kw.get("max_ifd"))
    assert res.keep.tolist() == keep
    assert {k: v.tolist() for k, v in res.dropped.items()} == reasons


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kw", [{}, {"min_quality": 0.0}, {"max_ifd": 1.0}])
def test_keep_status_passes_unjudged_rows_matches_brute_force(seed, kw):
    ds = rows(seed=seed)
    params = {"max_reverse": 0.9, "keep_status": ["prompt_too_long"]}
    if "min_quality" in kw:
        params.update(quality_column="judge", min_quality=kw["min_quality"])
    if "max_ifd" in kw:
        params.update(ifd_column="ifd", max_ifd=kw["max_ifd"])
    res = consistency_gate(ds, **params)
    keep, reasons = brute_gate(ds, 0.9, kw.get("min_quality"), kw.get("max_ifd"), keep_status=("prompt_too_long",))
    assert res.keep.tolist() == keep
    assert {k: v.tolist() for k, v in res.dropped.items() if len(v)} == reasons
    long = [i for i, s in enumerate(ds["ifd_reverse_status"]) if s == "prompt_too_long"]
    assert res.info["kept_unjudged"] == len(set(long) & set(keep)) > 0


def test_keep_status_quantile_bound_over_judged_rows_and_bad_input():
    ds = rows(n=60, seed=4)
    plain = consistency_gate(ds, max_reverse=None, max_reverse_quantile=0.5)
    res = consistency_gate(ds, max_reverse=None, max_reverse_quantile=0.5, keep_status=["prompt_too_long"])
    assert res.info["reverse_quantile_bound"] == plain.info["reverse_quantile_bound"]
    long = {i for i, s in enumerate(ds["ifd_reverse_status"]) if s == "prompt_too_long"}
    assert set(res.keep.tolist()) == set(plain.keep.tolist()) | long
    with pytest.raises(ValueError, match="'ok' is not one"):
        consistency_gate(ds, keep_status=["ok"])
    with pytest.raises(ValueError, match="needs the status column"):
        consistency_gate(Dataset.from_dict({"ifd_reverse": [0.5]}), keep_status=["prompt_too_long"])


def test_gate_then_ifd_rule_pipeline_and_provenance():
    ds = rows(n=80, seed=1)
    res = select(ds, [{"step": "consistency_gate", "max_reverse": 1.0}, {"step": "ifd_rule", "count": 10}])
    gate = res.provenance[0]
    assert gate["step"] == "consistency_gate" and gate["info"]["max_reverse"] == 1.0
    assert sum(gate["dropped"].values()) + gate["rows_out"] == 80
    kept_rev = np.asarray(res.dataset["ifd_reverse"])
    assert (kept_rev < 1.0).all()
    assert len(res) == 10


def test_gate_without_status_column_and_with_ppl_column():
    ds = Dataset.from_dict({"ifd_reverse_ppl": [0.5, 1.0, NAN, 2.0]})
    res = consistency_gate(ds, column="ifd_reverse_ppl")
    assert res.keep.tolist() == [0]
    assert {k: v.tolist() for k, v in res.dropped.items()} == {"nan_score": [2], "reverse_ifd_high": [1, 3]}


def test_quantile_bound_matches_brute_force():
    ds = rows(n=60, seed=2)
    res = consistency_gate(ds, max_reverse=None, max_reverse_quantile=0.5)
    ok = [i for i, r in enumerate(ds) if r["ifd_reverse_status"] == "ok" and not math.isnan(r["ifd_reverse"])]
    vals = sorted(ds[i]["ifd_reverse"] for i in ok)
    m = len(vals)  # numpy's default (linear) quantile, by hand
    pos = 0.5 * (m - 1)
    lo = int(math.floor(pos))
    bound = vals[lo] + (vals[min(lo + 1, m - 1)] - vals[lo]) * (pos - lo)
    assert res.info["reverse_quantile_bound"] == pytest.approx(bound)
    assert res.keep.tolist() == [i for i in ok if ds[i]["ifd_reverse"] <= bound]
    both = consistency_gate(ds, max_reverse=0.5, max_reverse_quantile=0.9)
    assert both.keep.tolist() == [i for i in ok if ds[i]["ifd_reverse"] < 0.5]
    with pytest.raises(ValueError, match="max_reverse_quantile must be in"):
        consistency_gate(ds, max_reverse_quantile=0.0)


def test_gate_bad_input():
    ds = rows(n=20)
    with pytest.raises(HFSelectError, match=r"step 1 \(consistency_gate\).*no column 'quality'"):
        select(ds, [{"step": "consistency_gate", "quality_column": "quality", "min_quality": 0.0}])
    with pytest.raises(HFSelectError, match="quality_column and min_quality go together"):
        select(ds, [{"step": "consistency_gate", "quality_column": "judge"}])
    with pytest.raises(HFSelectError, match="give column"):
        select(ds, [{"step": "consistency_gate", "column": None}])
    with pytest.raises(HFSelectError, match="no column 'ifd_reverse'"):
        select(Dataset.from_dict({"ifd": [0.5]}), [{"step": "consistency_gate"}])
