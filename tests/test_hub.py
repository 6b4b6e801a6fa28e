"""Dataset and model cards (rendered from model_cards/ through huggingface_hub), local folders, and pushing."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from datasets import Dataset
from huggingface_hub import DatasetCard, ModelCard

from hf_select import hub
from hf_select.errors import HFSelectError

TOKEN = "hf_" + "a1B2c3D4e5F6g7H8i9J0kLmNoPqR"
SELECTION = {
    "provenance": [
        {"step": "threshold", "params": {"column": "judge_score", "min": 3.0}, "seed": 0, "rows_in": 50,
         "rows_out": 20, "dropped": {"below_min": 27, "nan": 3}},
        {"step": "kcenter", "params": {"k": 6, "column": "embedding"}, "seed": 0, "rows_in": 20, "rows_out": 6,
         "dropped": {"not_selected": 14}},
    ],
    "row_ids": [41, 2, 17, 5, 30, 8],
}


def _png(path):
    """A valid 1x1 PNG."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    raw += chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")
    path.write_bytes(raw)


def _context(**kw):
    scored = Dataset.from_dict({"judge_score": [1.0, 2.0, 3.0, float("nan")], "instruction": list("abcd")})
    base = dict(selection=SELECTION, source="tatsu-lab/alpaca", method="mods", rows_in=50,
                base_model="HuggingFaceTB/SmolLM2-135M-Instruct", training={"learning_rate": 2e-5, "max_length": 512},
                train_loss=1.2345, eval_result={"dataset": "alpaca_eval_gpt4_805.json", "loss": 1.8765, "rows": 805},
                stages=[{"name": "quality", "params": {"backend": "judge"}, "meta": {"rows": 50}}], scored=scored,
                score_columns=["judge_score"], reproduce="accelerate launch recipes/mods.py --config x.yaml")
    base.update(kw)
    return hub.build_card_context(**base)


def test_dataset_card_numbers():
    ctx = _context()
    card = hub.render_dataset_card(ctx, dataset_id="me/alpaca-mods", model_link="https://huggingface.co/me/m")
    text = str(card)
    assert isinstance(card, DatasetCard)
    assert card.data.size_categories == ["n<1K"] and "mods" in card.data.tags
    assert card.data.source_datasets == ["tatsu-lab/alpaca"]
    assert "6 of 50 rows of **tatsu-lab/alpaca**" in text and "MoDS" in text
    params = '`{"column": "judge_score", "min": 3.0}`'
    assert f"| 1 | `threshold` | {params} | 0 | 50 | 20 | below_min: 27, nan: 3 |" in text
    assert "| 2 | `kcenter` |" in text and "not_selected: 14" in text
    assert "| below_min | 27 |" in text and "| nan | 3 |" in text and "| not_selected | 14 |" in text
    assert "41, 2, 17, 5, 30, 8" in text and "row_ids.json" in text
    assert "| `judge_score` | 3 | 1 | 2 | 3 |" in text  # NaN rows are not counted
    assert "**quality**" in text and "accelerate launch recipes/mods.py" in text
    # the rendered card parses back with its metadata
    again = DatasetCard(text)
    assert again.data.pretty_name == ctx["pretty_name"]


def test_model_card_numbers():
    ctx = _context()
    card = hub.render_model_card(ctx, model_id="me/smollm2-mods", dataset_link="me/alpaca-mods")
    text = str(card)
    assert isinstance(card, ModelCard)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.datasets == ["me/alpaca-mods"]
    assert "[me/alpaca-mods](https://huggingface.co/datasets/me/alpaca-mods)" in text
    assert "| `alpaca_eval_gpt4_805.json` | 805 | 1.8765 |" in text
    assert "Final training loss: 1.2345" in text
    assert "| `learning_rate` | `2e-05` |" in text and "| `max_length` | `512` |" in text
    assert 'model="me/smollm2-mods"' in text
    local = str(hub.render_model_card(_context(eval_result=None), dataset_link="../dataset"))
    assert "No held-out evaluation was run." in local
    # no relative link that breaks on the Hub: a placeholder that `hf-select push` fills in
    assert "../dataset" not in local and "`<hub-dataset-id>` (filled in by `hf-select push --hub_dataset_id`)" in local


def _write_hub_folders(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    _png(report / "score_hist.png")
    _png(report / "not_listed.png")
    (report / "report.json").write_text(json.dumps({"figures": [{"file": "score_hist.png", "kind": "score_histogram",
                                                                 "caption": "judge score: all vs selected"}]}))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(b"weights")
    (model_dir / "README.md").write_text("trainer card")
    subset = Dataset.from_dict({"instruction": list("abcdef"), "_row_id": SELECTION["row_ids"]})
    out = hub.write_hub_folders(tmp_path / "hub", subset=subset, context=_context(), model_dir=str(model_dir),
                                report_dir=str(report), selection=SELECTION)
    d = out / "dataset"
    assert json.loads((d / "row_ids.json").read_text()) == SELECTION["row_ids"]
    assert Dataset.from_parquet(str(d / "data" / "train.parquet"))["_row_id"] == SELECTION["row_ids"]
    assert sorted(p.name for p in (d / "plots").iterdir()) == ["score_hist.png"]
    card = (d / "README.md").read_text()
    assert "![judge score: all vs selected](plots/score_hist.png)" in card
    assert "../model" not in card and "`<hub-model-id>` (filled in by `hf-select push --hub_model_id`)" in card
    assert json.loads((d / "selection.json").read_text())["steps"] == SELECTION["provenance"]
    m = out / "model"
    assert (m / "model.safetensors").read_bytes() == b"weights"
    assert "fine-tuned with TRL" in (m / "README.md").read_text()
    assert (out / "card_context.json").is_file()
    return out


def test_write_hub_folders(tmp_path):
    assert _write_hub_folders(tmp_path).name == "hub"


class FakeApi:
    calls: list = []
    public_existing = False

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
        FakeApi.calls.append(("create", repo_id, repo_type, private))

    def repo_info(self, repo_id, repo_type=None):
        class Info:
            private = not FakeApi.public_existing and FakeApi.calls[-1][3]

        return Info()

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None):
        FakeApi.calls.append(("upload", repo_id, repo_type, folder_path))


@pytest.fixture
def hub_folder(tmp_path):
    return _write_hub_folders(tmp_path)


def test_push_without_token_or_network_names_the_local_copy(hub_folder, monkeypatch):
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(HFSelectError, match=r"no Hugging Face token.*local copy is at .*hub"):
        hub.push_outputs(hub_folder.parent, dataset_id="me/d", model_id="me/m")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: TOKEN)
    with pytest.raises(HFSelectError, match=r"unreachable.*local copy is at") as err:  # HF_HUB_OFFLINE=1 in tests
        hub.push_outputs(hub_folder, dataset_id="me/d")
    assert TOKEN not in str(err.value)
    with pytest.raises(HFSelectError, match="owner/name"):
        hub.push_outputs(hub_folder, dataset_id="not a repo id")
    with pytest.raises(HFSelectError, match="nothing to push"):
        hub.push_outputs(hub_folder)


def test_push_private_by_default_and_token_redacted(hub_folder, monkeypatch):
    import hf_select.models

    monkeypatch.setattr(hf_select.models, "hub_is_offline", lambda: False)
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    FakeApi.calls = []
    urls = hub.push_outputs(hub_folder, dataset_id="me/d", model_id="me/m", token=TOKEN)
    assert urls == {"dataset": "https://huggingface.co/datasets/me/d", "model": "https://huggingface.co/me/m"}
    assert ("create", "me/d", "dataset", True) in FakeApi.calls and ("create", "me/m", "model", True) in FakeApi.calls
    # both cards now link the Hub repos
    assert "(https://huggingface.co/datasets/me/d)" in (hub_folder / "model" / "README.md").read_text()
    assert "https://huggingface.co/me/m" in (hub_folder / "dataset" / "README.md").read_text()
    FakeApi.calls = []
    hub.push_outputs(hub_folder, dataset_id="me/d", token=TOKEN, allow_public=True)
    assert FakeApi.calls[0] == ("create", "me/d", "dataset", False)
    FakeApi.public_existing = True
    try:
        with pytest.raises(HFSelectError, match="public.*--allow_public"):
            hub.push_outputs(hub_folder, dataset_id="me/d", token=TOKEN)
    finally:
        FakeApi.public_existing = False

    class Failing(FakeApi):
        def upload_folder(self, **kw):
            raise RuntimeError(f"401 Unauthorized for token {TOKEN}")

    monkeypatch.setattr("huggingface_hub.HfApi", Failing)
    with pytest.raises(HFSelectError) as err:
        hub.push_outputs(hub_folder, model_id="me/m", token=TOKEN)
    assert TOKEN not in str(err.value) and "hf_***" in str(err.value) and "local copy is at" in str(err.value)


def test_push_command(hub_folder, monkeypatch, capsys):
    from hf_select.cli import main

    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert main(["push", str(hub_folder.parent), "--hub_dataset_id", "me/d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-select: error: no Hugging Face token") and str(hub_folder.resolve()) in err
    assert len(err.strip().splitlines()) == 1


def test_helpers():
    assert hub.size_category(999) == "n<1K" and hub.size_category(52_000) == "10K<n<100K"
    assert hub.is_hub_id("me/x") and not hub.is_hub_id("data/x.json") and not hub.is_hub_id("demo")
