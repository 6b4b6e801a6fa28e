"""The built-in demo dataset: correct answers, labelled corruptions, every family present, reproducible."""

from __future__ import annotations

import re
from collections import Counter

from hf_select.demo import CORRUPTIONS, FAMILIES, make_demo_dataset


def test_shape_families_and_corruption_share():
    ds = make_demo_dataset(n=1000, seed=0)
    assert len(ds) == 1000 and len(FAMILIES) >= 20
    assert set(ds["family"]) == set(FAMILIES)
    counts = Counter(ds["corruption"])
    assert set(counts) == {"none", *CORRUPTIONS}
    assert 0.12 <= 1 - counts["none"] / 1000 <= 0.16
    assert all(row["output"] == "" for row in ds if row["corruption"] == "emptied")


def test_clean_arithmetic_rows_are_correct():
    ds = make_demo_dataset(n=500, seed=3)
    checked = 0
    for row in ds:
        if row["corruption"] != "none":
            continue
        m = re.fullmatch(r"What is (\d+) plus (\d+)\?", row["instruction"])
        if m:
            assert row["output"] == f"{m[1]} + {m[2]} = {int(m[1]) + int(m[2])}."
            checked += 1
        if row["family"] == "reverse_word":
            assert row["output"].endswith(row["input"][::-1])
            checked += 1
    assert checked > 20


def test_reproducible_and_seed_dependent():
    assert make_demo_dataset(n=100, seed=1)["output"] == make_demo_dataset(n=100, seed=1)["output"]
    assert make_demo_dataset(n=100, seed=1)["output"] != make_demo_dataset(n=100, seed=2)["output"]
