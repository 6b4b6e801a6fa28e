"""One size vocabulary across the selection steps (count / fraction, k only for kcenter), old names still running
with a FutureWarning, and the step registry exported from hf_select."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from datasets import Dataset

import hf_select
from hf_select.errors import HFSelectError
from hf_select.selection import STEPS, available_steps, ifd_rule, select
from hf_select.selection.steps import facility_location_step, kcenter_step

BUDGETED = ("top", "ifd_rule", "random", "longest", "facility_location", "kcenter", "length_stratified_top",
            "fused_diverse", "target_similarity")


def scored(n: int = 60, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset.from_dict({
        "ifd": rng.uniform(0.2, 1.2, size=n).tolist(),
        "ifd_status": ["ok" if i % 7 else "prompt_too_long" for i in range(n)],
        "source": [["a", "b", "c"][i % 3] for i in range(n)],
        "embedding": rng.normal(size=(n, 5)).astype(np.float32).tolist(),
    })


def test_every_budgeted_step_takes_count_and_fraction():
    for name in BUDGETED:
        assert {"count", "fraction"} <= set(STEPS[name].params), name
    with_k = sorted(name for name, spec in STEPS.items() if "k" in spec.params)
    assert with_k == ["kcenter"]
    assert not any("top" in spec.params for spec in STEPS.values())
    assert "k-center" in STEPS["kcenter"].function.__doc__ and "count" in STEPS["kcenter"].function.__doc__


def test_ifd_rule_top_is_fraction_with_a_future_warning():
    ds = scored()
    new = select(ds, [{"step": "ifd_rule", "fraction": 0.3, "of": "scored"}])
    with pytest.warns(FutureWarning, match=r"step 1 \(ifd_rule\): 'top' is deprecated; use 'fraction'"):
        old = select(ds, [{"step": "ifd_rule", "top": 0.3, "of": "scored"}])
    assert old.row_ids == new.row_ids and len(new) > 0
    assert old.provenance[0]["params"] == {"fraction": 0.3, "of": "scored"}  # recorded under the new name
    with pytest.warns(FutureWarning, match="ifd_rule: 'top' is deprecated"):
        direct = ifd_rule(ds, top=0.3, of="scored")
    assert direct.keep.tolist() == ifd_rule(ds, fraction=0.3, of="scored").keep.tolist()
    with pytest.raises(HFSelectError, match=r"step 1 \(ifd_rule\): give 'fraction' only; 'top' is its old name"):
        select(ds, [{"step": "ifd_rule", "top": 0.3, "fraction": 0.3}])


def test_facility_location_k_is_count_with_a_future_warning():
    ds = scored()
    new = select(ds, [{"step": "facility_location", "count": 7, "n_neighbors": 8}], seed=2)
    with pytest.warns(FutureWarning, match=r"step 1 \(facility_location\): 'k' is deprecated; use 'count'"):
        old = select(ds, [{"step": "facility_location", "k": 7, "n_neighbors": 8}], seed=2)
    assert old.row_ids == new.row_ids and len(new) == 7
    with pytest.warns(FutureWarning, match="facility_location: 'k' is deprecated"):
        direct = facility_location_step(ds, k=7, n_neighbors=8, seed=2)
    assert direct.keep.tolist() == facility_location_step(ds, count=7, n_neighbors=8, seed=2).keep.tolist()


def test_kcenter_takes_k_or_count_without_a_warning():
    ds = scored()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        by_k = select(ds, [{"step": "kcenter", "k": 9}], seed=4)
        by_count = select(ds, [{"step": "kcenter", "count": 9}], seed=4)
    assert by_k.row_ids == by_count.row_ids and len(by_k) == 9
    with pytest.raises(ValueError, match="give k or count"):
        kcenter_step(ds, k=3, count=3)


@pytest.mark.parametrize("budget", ["k", "count"])
def test_kcenter_with_quotas_by_either_name(budget):
    ds = scored(90)
    res = select(ds, [{"step": "kcenter", budget: 12, "stratify_by": "source"}], seed=1)
    kept = [ds["source"][i] for i in res.row_ids]
    assert len(res) == 12 and sorted(kept.count(s) for s in "abc") == [4, 4, 4]


def test_the_registry_and_select_are_exported_from_hf_select():
    assert hf_select.select is select and hf_select.STEPS is STEPS
    assert hf_select.available_steps() == sorted(STEPS) == available_steps()
    assert {"select", "SelectionResult", "STEPS", "available_steps", "register_step", "StepResult"} <= set(
        hf_select.__all__)
    res = hf_select.select(scored(10), [hf_select.Step("random", count=3)])
    assert isinstance(res, hf_select.SelectionResult) and len(res) == 3
