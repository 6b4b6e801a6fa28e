"""The consistency gate of the Superfiltering and Cherry recipes: off by default, and when on it runs before the
IFD rule, the rule's budget keeps its paper's count base, and the scorer computes reverse IFD."""

from __future__ import annotations

from importlib import import_module

import numpy as np
import pytest
from datasets import Dataset

from hf_select.selection import select


def _scored(n: int = 40) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset.from_dict({"ifd": rng.uniform(0.3, 1.1, n), "ifd_ppl": rng.uniform(0.3, 1.1, n),
                              "ifd_status": ["ok"] * n, "ifd_reverse": rng.uniform(0.2, 1.0, n),
                              "ifd_reverse_status": ["ok"] * n})


def test_superfilter_gate_is_off_by_default_and_keeps_a_share_of_all_rows():
    mod = import_module("hf_select.recipes.superfilter")
    plain = mod.SuperfilterArguments(dataset="demo:40", output_dir="o")
    assert plain.consistency_gate is None and not mod.ifd_config(plain).reverse
    assert [s["step"] for s in mod.selection_steps(plain, 40)] == ["ifd_rule"]
    gated = mod.SuperfilterArguments(dataset="demo:40", output_dir="o", consistency_gate=0.5, ifd_fraction=0.1)
    assert mod.ifd_config(gated).reverse
    steps = mod.selection_steps(gated, 40)
    assert [s["step"] for s in steps] == ["consistency_gate", "ifd_rule"] and steps[1]["count"] == 4
    ds = _scored()
    result = select(ds, steps)
    median = float(np.median(ds["ifd_reverse"]))
    assert len(result.dataset) == 4 and all(r <= median for r in result.dataset["ifd_reverse"])
    with pytest.raises(ValueError, match="SuperfilterArguments.consistency_gate"):
        mod.SuperfilterArguments(dataset="demo:40", output_dir="o", consistency_gate=1.5)


def test_cherry_gate_runs_before_its_rule():
    mod = import_module("hf_select.recipes.cherry")
    assert [s["step"] for s in mod.selection_steps(mod.CherryArguments(dataset="demo:40", output_dir="o"))] == [
        "ifd_rule"]
    args = mod.CherryArguments(dataset="demo:40", output_dir="o", consistency_gate=0.5, ifd_fraction=0.25)
    steps = mod.selection_steps(args)
    assert [s["step"] for s in steps] == ["consistency_gate", "ifd_rule"] and steps[1]["of"] == "eligible"
    result = select(_scored(), steps)
    gate_out = result.provenance[0]["rows_out"]
    eligible = result.provenance[1]["info"]["eligible"]
    assert gate_out == 20 and len(result.dataset) == int(0.25 * eligible)
    with pytest.raises(ValueError, match="CherryArguments.consistency_gate"):
        mod.CherryArguments(dataset="demo:40", output_dir="o", consistency_gate=0)
