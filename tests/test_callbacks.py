"""TrainerCallbacks: selection provenance in the card and logs, probe IFD at each evaluation, per-row losses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset

from hf_select.callbacks import PerRowLossCallback, ProbeEvalCallback, RowIdCollator, SelectionProvenanceCallback
from hf_select.training import TrainConfig, train_sft

PROVENANCE = [
    {"step": "threshold", "params": {"column": "quality", "min": 0.0}, "seed": 0, "rows_in": 40, "rows_out": 30,
     "dropped": {"below_min": 7, "nan": 3}},
    {"step": "kcenter", "params": {"k": 12}, "seed": 0, "rows_in": 30, "rows_out": 12, "dropped": {"kcenter": 18}},
]
TINY = dict(num_train_epochs=2, per_device_train_batch_size=4, per_device_eval_batch_size=4, max_length=96,
            learning_rate=1e-3, logging_steps=1, precision="fp32")


def _rows(n: int) -> Dataset:
    return Dataset.from_list([{"instruction": f"Double {i}.", "input": "", "output": f"{2 * i}", "_row_id": 100 + i}
                              for i in range(n)])


def test_provenance_callback_validates():
    with pytest.raises(TypeError, match="SelectionResult"):
        SelectionProvenanceCallback(42)
    with pytest.raises(ValueError, match="no 'step' key"):
        SelectionProvenanceCallback([{"params": {}}])
    cb = SelectionProvenanceCallback({"provenance": PROVENANCE, "row_ids": [3, 1]}, method="mods")
    assert (cb.rows_in, cb.rows_out, cb.row_ids) == (40, 12, [3, 1])
    section = cb.card_section()
    assert "| threshold |" in section and "below_min: 7, nan: 3" in section and "Rows: 40 -> 12." in section
    assert "threshold(40->30) -> kcenter(30->12)" in cb.summary()


def test_callbacks_in_training(tiny_lm_path, tmp_path, caplog):
    ds = _rows(12)
    probe = ProbeEvalCallback(ds.select(range(4)), max_length=64)
    prov = SelectionProvenanceCallback({"provenance": PROVENANCE, "row_ids": list(range(12))}, method="mods",
                                       dataset_link="me/subset")
    with caplog.at_level("INFO", logger="hf_select.callbacks"):
        result = train_sft(ds, TrainConfig(**TINY), tmp_path / "m", model_name_or_path=str(tiny_lm_path),
                           eval_dataset=ds.select(range(4)), callbacks=[probe, prov], record_row_losses=True)
    # provenance: logs, json beside the model, model card section, tags
    assert "selection[mods]: 40 -> 12 rows" in caplog.text
    saved = json.loads((tmp_path / "m" / "selection_provenance.json").read_text())
    assert saved["provenance"] == PROVENANCE and saved["dataset"] == "me/subset"
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.count("## Data selection (hf-select)") == 1 and "| kcenter | `{\"k\": 12}` | 30 | 12 |" in card
    header = card.split("---")[1]
    assert "- hf-select" in header and "- mods" in header  # tags in the card metadata
    # probe: one entry per evaluation (2 epochs + the final evaluate), in the eval metrics
    assert len(probe.history) == 3
    assert np.isfinite(result.metrics["eval_probe_ifd"]) and np.isfinite(result.metrics["eval_probe_loss"])
    assert result.metrics["eval_probe_rows"] == 4
    state = json.loads((tmp_path / "m" / "row_losses.json").read_text())
    assert set(result.row_losses) == set(range(100, 112))
    assert len(state["records"]) == 24  # 12 rows x 2 epochs


def test_per_row_losses_match_the_model(tiny_lm_path, tmp_path):
    """The first step's recorded losses are the initial model's completion losses of exactly those rows."""
    from hf_select.scoring.ifd import IFDConfig, IFDScorer

    ds = _rows(8)
    cfg = TrainConfig(**{**TINY, "num_train_epochs": 1, "per_device_train_batch_size": 2, "warmup_steps": 0})
    train_sft(ds, cfg, tmp_path / "m", model_name_or_path=str(tiny_lm_path), record_row_losses=True)
    records = json.loads((tmp_path / "m" / "row_losses.json").read_text())["records"]
    assert sorted(r[1] for r in records) == list(range(100, 108))  # each row once, by its _row_id
    first = [r for r in records if r[0] == 0]
    assert len(first) == 2
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template="chat", max_length=96,
                                 dtype="float32", device="cpu"))
    expected = scorer(ds[:])["loss_conditioned"]
    for _, rid, loss, _ in first:
        assert loss == pytest.approx(expected[rid - 100], rel=1e-4)


def test_row_id_collator_and_probe_validation():
    with pytest.raises(TypeError):
        RowIdCollator("not callable")
    with pytest.raises(KeyError, match="_row_id"):
        RowIdCollator(lambda rows: {})([{"input_ids": [1]}])
    batch = RowIdCollator(lambda rows: {"seen": sorted(rows[0])})([{"input_ids": [1], "prompt": "x", "_row_id": 5}])
    assert batch["seen"] == ["input_ids"] and batch["_row_id"].tolist() == [5]
    with pytest.raises(ValueError, match="empty"):
        ProbeEvalCallback(Dataset.from_list([]))
    with pytest.raises(ValueError, match="template"):
        ProbeEvalCallback(_rows(2), template="nope")
    with pytest.raises(TypeError):
        PerRowLossCallback(save="yes")
