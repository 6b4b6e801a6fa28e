"""`hf-select demo`: both recipes on the demo rows, one output folder, the IFD separation numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

from hf_select.commands.demo import DemoConfig, corrupted_share, ifd_separation, run_demo
from hf_select.stages import load_stage_dataset


def test_ifd_separation_numbers():
    ds = Dataset.from_dict({
        "ifd": [0.2, 0.4, 0.6, 1.1, 0.5, float("nan"), 1.3, 0.9],
        "corruption": ["none", "none", "none", "none", "swapped", "emptied", "swapped", "wrong"],
    })
    sep = ifd_separation(ds)
    # corrupted (with an IFD): 0.5, 1.3, 0.9 vs clean 0.2, 0.4, 0.6, 1.1 -> 2 + 4 + 3 = 9 of 12 pairs ordered right
    assert sep["auroc"] == pytest.approx(9 / 12)
    assert sep["swapped_ifd_ge1"] == 0.5 and sep["clean_ifd_ge1"] == 0.25
    assert sep["no_ifd"] == {"emptied": 1} and sep["rows_with_ifd"] == 7
    assert corrupted_share(ds) == 0.5
    assert ifd_separation(ds.select([0, 1]))["auroc"] is None  # one class only


def test_demo_config_validation():
    with pytest.raises(ValueError, match="mods_rows"):
        DemoConfig(rows=10, mods_rows=20)
    with pytest.raises(ValueError, match="ifd_fraction"):
        DemoConfig(ifd_fraction=0)


def test_demo_cli_flags():
    from hf_select.cli import build_parser

    args = build_parser().parse_args(["demo", "--output", "x", "--rows", "50", "--mods-rows", "20", "--fresh"])
    assert (args.output, args.rows, args.mods_rows, args.fresh) == ("x", 50, 20, True)


def test_demo_end_to_end_on_tiny_models(tmp_path, tiny_lm_path):
    lines: list[str] = []
    config = DemoConfig(output_dir=str(tmp_path / "demo"), rows=40, mods_rows=24, eval_rows=6,
                        model_name_or_path=str(tiny_lm_path), embed_model_name_or_path=str(tiny_lm_path),
                        seed_count=5, necessity_count=4, max_new_tokens=4, max_length=512, ifd_fraction=0.2)
    summary = run_demo(config, echo=lines.append)
    out = Path(config.output_dir)
    # one folder: both runs with their subset, report, cards and model
    for recipe in ("superfiltering", "mods"):
        for part in ("hub/dataset/README.md", "hub/dataset/data/train.parquet", "hub/model/README.md",
                     "hub/model/model.safetensors", "report/report.md", "train/config.json"):
            assert (out / recipe / part).is_file(), (recipe, part)
    saved = json.loads((out / "demo_summary.json").read_text())
    assert saved["superfiltering"]["rows_out"] == 8 and saved["superfiltering"]["rows_in"] == 40
    assert saved["mods"]["rows_in"] == 24
    sep = saved["superfiltering"]["ifd_separation"]
    assert sep["rows"] == 40 and (sep["auroc"] is None or 0 <= sep["auroc"] <= 1)
    text = "\n".join(lines)
    assert f"everything is under {out.resolve()}" in text
    assert "AUROC of IFD for corruption != 'none':" in text and "swapped rows with IFD >= 1:" in text
    assert summary["mods"]["eval_loss"] > 0
    # the recommended preset beside them: at the Superfiltering subset's supervised tokens, trained and evaluated
    from hf_select.compare.budget import count_pool_tokens, subset_tokens
    from hf_select.selection import SelectionResult
    from hf_select.selection.presets import RECOMMENDED

    rec = saved["recommended"]
    assert rec["preset"] == RECOMMENDED and rec["eval_loss"] > 0 and 0 < rec["rows_out"] < 40
    scored = load_stage_dataset(out / "superfiltering" / "ifd")
    counts = count_pool_tokens(scored, str(tiny_lm_path), 512)
    sf_ids = SelectionResult.load(out / "superfiltering" / "selection" / "selection").row_ids
    rec_ids = SelectionResult.load(out / "recommended" / "selection" / "selection").row_ids
    assert rec["budget_tokens"] == subset_tokens(sf_ids, counts)["supervised_tokens"]
    got = subset_tokens(rec_ids, counts)["supervised_tokens"]
    assert got == rec["supervised_tokens"] >= rec["budget_tokens"]  # reaches the budget
    assert f"Recommended preset {RECOMMENDED}" in text and (out / "recommended" / "train" / "config.json").is_file()
    # the demo rows of MoDS are the first rows of the Superfiltering ones
    a, b = load_stage_dataset(out / "superfiltering" / "data"), load_stage_dataset(out / "mods" / "data")
    assert b["instruction"] == a["instruction"][:24]
    # started again: every stage is reused
    again = run_demo(config, echo=lambda *_: None)
    assert set(again["superfiltering"]["stages"].values()) == {"reused"}
    assert set(again["mods"]["stages"].values()) == {"reused"}
    assert again["recommended"] == summary["recommended"]
