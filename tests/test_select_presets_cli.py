"""`hf-select select` presets: --list-presets, --preset with a fraction of all rows, and no steps = recommended."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset, load_from_disk

from hf_select.cli import main
from hf_select.selection import select
from hf_select.selection.presets import PRESETS, RECOMMENDED, preset_steps


@pytest.fixture()
def scored(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    ds = Dataset.from_dict({"instruction": [f"q{i}" for i in range(n)], "input": [""] * n,
                            "output": ["x" * (i + 1) for i in range(n)], "ifd": rng.uniform(0.2, 1.2, n),
                            "ifd_ppl": rng.uniform(0.2, 1.2, n), "ifd_status": ["ok"] * n,
                            "ifd_reverse": rng.uniform(0.2, 1.2, n), "ifd_reverse_status": ["ok"] * n})
    path = tmp_path / "scored"
    ds.save_to_disk(str(path))
    return path


def test_list_presets_names_the_recommended_one(capsys):
    assert main(["select", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert f"{RECOMMENDED} (recommended)" in out
    for name in PRESETS:
        assert f"{name}" in out


def test_no_steps_runs_the_recommended_preset(scored, tmp_path, capsys):
    out = tmp_path / "chosen"
    assert main(["select", "--dataset", str(scored), "--output", str(out)]) == 0
    chosen = load_from_disk(str(out))
    assert len(chosen) == 4  # 10% of all 40 rows
    rows = load_from_disk(str(scored))
    options = {} if "source" in rows.column_names else {"stratify_by": None}
    expected = select(rows, preset_steps(RECOMMENDED, count=4, **options)).dataset
    assert chosen["output"] == expected["output"] and chosen["instruction"] == expected["instruction"]
    assert f"preset {RECOMMENDED!r}, 4 of 40 rows" in capsys.readouterr().out


def test_random_per_source_keeps_each_sources_share(tmp_path, capsys):
    path = tmp_path / "sourced"
    Dataset.from_dict({"instruction": [f"q{i}" for i in range(40)], "output": ["a"] * 40,
                       "source": ["x"] * 30 + ["y"] * 10}).save_to_disk(str(path))
    assert main(["select", "--dataset", str(path), "--output", str(tmp_path / "o"), "--preset", "random_per_source",
                 "--count", "8"]) == 0
    chosen = load_from_disk(str(tmp_path / "o"))
    assert sorted(chosen["source"]) == ["x"] * 6 + ["y"] * 2
    assert "plain random" not in capsys.readouterr().out


def test_a_preset_names_the_scores_the_rows_lack(tmp_path, capsys):
    path = tmp_path / "plain"
    Dataset.from_dict({"instruction": ["a", "b"], "output": ["x", "yy"], "ifd": [0.5, 0.6]}).save_to_disk(str(path))
    assert main(["select", "--dataset", str(path), "--output", str(tmp_path / "o"), "--preset", "longest_gated",
                 "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert "'ifd_reverse'" in err and "--set reverse=true" in err and "'ifd'" not in err.split("lack:")[1]


def test_preset_fraction_counts_all_rows_even_after_a_gate(scored, tmp_path):
    out = tmp_path / "gated"
    assert main(["select", "--dataset", str(scored), "--output", str(out), "--preset", "longest_gated",
                 "--fraction", "0.25"]) == 0
    chosen = load_from_disk(str(out))
    assert len(chosen) == 10 and all(v < 1.0 for v in chosen["ifd"])


def test_preset_errors_are_one_line(scored, tmp_path, capsys):
    assert main(["select", "--dataset", str(scored), "--output", str(tmp_path / "a"), "--preset", "magic"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["select", "--dataset", str(scored), "--output", str(tmp_path / "b"), "--preset", "longest",
                 "--step", "{step: random, count: 3}"]) == 2
    assert main(["select", "--dataset", str(scored), "--output", str(tmp_path / "c"), "--preset", "target"]) == 2
    assert "--target" in capsys.readouterr().err
