"""Cards ready for the Hub: no local or temporary path, links that work on the Hub (or a placeholder push fills in),
method text from the steps that ran, only the settings that applied in Reproduce, the same sections on every card
of every recipe, and the corrupted shares of a labelled demo pool. ``assert_hub_ready`` is also run on the cards
the recipes' end-to-end tests write (tests/test_recipes.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from datasets import Dataset

from hf_select import hub
from hf_select.card_text import describe_step, hub_safe

# a path that starts a token (after a space, quote, bracket, '=' or the line's start): /tmp/..., /home/..., ~/...
ABS_PATH = re.compile(r"(?:^|[\s`'\"(=\[{,|])~?/\w", re.MULTILINE)


def assert_hub_ready(text: str) -> None:
    """No local or temporary path and no relative link between the cards."""
    found = [text[max(0, m.start() - 30): m.end() + 30] for m in ABS_PATH.finditer(text)]
    assert not found, found
    assert ".hub.tmp" not in text and ".tmp/" not in text
    assert "../" not in text  # ../model and ../dataset break on the Hub


def sections(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("## ")]


def _demo_pool(n: int) -> Dataset:
    kinds = ["none"] * (n - n // 5) + ["swapped", "wrong"] * (n // 10)
    return Dataset.from_dict({"instruction": [f"task {i}" for i in range(n)], "output": ["x"] * n,
                              "corruption": kinds[:n], "_row_id": list(range(n))})


class _Selection:
    """A SelectionResult-like object (provenance, row ids, the subset) as the recipes pass it."""

    def __init__(self, pool: Dataset, provenance: list[dict], row_ids: list[int]):
        self.provenance, self.row_ids = provenance, row_ids
        self.dataset = pool.select(row_ids)


def _recipe_context(method: str, run: Path, *, eval_base: bool, pool: Dataset | None = None) -> dict:
    """Stage data as a recipe leaves it: absolute model paths, the run folder, the seed model inside it."""
    tiny = "/tmp/pytest-of-me/pytest-1/tiny-lm0/model"
    provenance = {
        "mods": [
            {"step": "top", "stage": "quality", "params": {"column": "judge_score", "fraction": 0.5}, "rows_in": 160,
             "rows_out": 80, "dropped": {"not_top": 80}},
            {"step": "kcenter", "stage": "seed", "params": {"column": "embedding", "k": 16}, "seed": 0,
             "rows_in": 80, "rows_out": 16, "dropped": {"not_selected": 64}},
            {"step": "top", "stage": "necessary", "params": {"column": "necessity", "fraction": 0.5,
                                                             "descending": False}, "rows_in": 64, "rows_out": 32},
            {"step": "kcenter", "stage": "necessary", "params": {"column": "embedding", "k": 24}, "rows_in": 32,
             "rows_out": 24},
            {"step": "union", "stage": "seed+necessary", "params": {"of": ["seed", "necessary"]}, "rows_in": 40,
             "rows_out": 40, "dropped": {"duplicate": 0}},
        ],
        "superfiltering": [{"step": "ifd_rule", "params": {"column": "ifd_ppl", "fraction": 0.1, "of": "all"},
                            "rows_in": 160, "rows_out": 16, "info": {"cutoff": 0.97}}],
        "cherry": [{"step": "ifd_rule", "params": {"column": "ifd", "count": 16, "of": "eligible"}, "rows_in": 160,
                    "rows_out": 16}],
        "instruct_mining": [{"step": "top", "params": {"column": "instructmining_pred", "count": 16,
                                                       "descending": False}, "rows_in": 160, "rows_out": 16}],
    }[method]
    pool = pool if pool is not None else _demo_pool(160)
    ids = list(range(0, 160, 4))[: provenance[-1]["rows_out"]]
    stages = [{"name": "data", "params": {"dataset": "demo:500", "limit": 160}, "meta": {"rows": 160}},
              {"name": "necessity", "params": {"config": {"model_name_or_path": str(run / "seed_model")}}},
              {"name": "train", "params": {"model": tiny, "rows": len(ids)}}]
    ev = {"dataset": "demo:40", "rows": 40, "loss": 1.5}
    if eval_base:
        ev["loss_base"] = 1.9
    return hub.build_card_context(
        selection=_Selection(pool, provenance, ids), source="demo:500", method=method, rows_in=len(pool),
        base_model=tiny, training={"learning_rate": 1e-4}, train_loss=1.2, eval_result=ev, stages=stages,
        scored=pool, reproduce=f"accelerate launch recipes/{method}.py --output_dir {run} --model_name_or_path {tiny}",
        extra_models=[{"name": "seed model", "description": f"fine-tuned on 16 rows ({run / 'seed_model'})"}])


def _write(tmp_path: Path, method: str, **kw) -> tuple[str, str]:
    run = tmp_path / method
    model = run / "train"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    ctx = _recipe_context(method, run.resolve(), **kw)
    subset = Dataset.from_dict({"instruction": ["a"] * len(ctx["row_ids"]), "_row_id": ctx["row_ids"]})
    out = hub.write_hub_folders(run / ".hub.tmp", subset=subset, context=ctx, model_dir=str(model))
    return (out / "dataset" / "README.md").read_text(), (out / "model" / "README.md").read_text()


@pytest.mark.parametrize("method", ["mods", "superfiltering", "cherry", "instruct_mining"])
def test_each_recipes_cards_are_hub_ready(tmp_path, method):
    data_card, model_card = _write(tmp_path, method, eval_base=method == "superfiltering")
    for text in (data_card, model_card):
        assert_hub_ready(text)
        assert "<local>/model" in text  # the base model's local folder, by name only
    assert 'model="<hub-model-id>"' in model_card and "`<hub-dataset-id>` (filled in by `hf-select push" in model_card
    assert "`<hub-model-id>` (filled in by `hf-select push --hub_model_id`)" in data_card
    # the 160 rows read are named as the first 160 of demo:500, in the title too
    assert "of 160 rows of **demo:500** (its first 160 rows)" in data_card
    assert "# demo (" in data_card and "of 160 rows)" in data_card
    # the labelled pool: corrupted share of the pool and of the subset, in both cards
    assert "| the source rows read | 32 of 160 | 20.0% | swapped 16, wrong 16 |" in data_card
    assert "of the source rows read" in model_card


def test_every_card_has_the_same_sections(tmp_path):
    cards = {m: _write(tmp_path, m, eval_base=m == "superfiltering")
             for m in ("mods", "superfiltering", "cherry", "instruct_mining")}
    data_sections = {m: sections(d) for m, (d, _) in cards.items()}
    model_sections = {m: sections(c) for m, (_, c) in cards.items()}
    assert len({tuple(s) for s in data_sections.values()}) == 1, data_sections
    assert len({tuple(s) for s in model_sections.values()}) == 1, model_sections
    assert "## Rows corrupted on purpose" in data_sections["mods"]
    # the base model's loss: a number where it was measured, "not measured" where not
    assert "| base model | `demo:40` | 40 | 1.9000 |" in cards["superfiltering"][1]
    assert "| base model | `demo:40` | 40 | not measured" in cards["mods"][1]


def test_unlabelled_pool_leaves_the_corrupted_section_out(tmp_path):
    pool = Dataset.from_dict({"instruction": [f"t{i}" for i in range(160)], "_row_id": list(range(160))})
    ctx = _recipe_context("cherry", tmp_path, eval_base=False, pool=pool)
    assert ctx["corrupted"] is None
    text = str(hub.render_dataset_card(ctx))
    assert "corrupted on purpose" not in text.lower() and "corruption" not in text
    assert "corrupted on purpose" not in str(hub.render_model_card(ctx)).lower()


def test_method_text_follows_the_steps_that_ran():
    frac = describe_step({"step": "top", "stage": "quality", "params": {"column": "judge_score", "fraction": 0.5}})
    thr = describe_step({"step": "threshold", "stage": "quality",
                         "params": {"column": "judge_score", "min": 3.0, "strict": True}})
    assert frac == "quality: keep the 50% of rows with the highest `judge_score`" and "threshold" not in frac
    assert thr == "quality: keep rows with `judge_score` > 3 (a threshold)"
    low = describe_step({"step": "top", "params": {"column": "necessity", "fraction": 0.5, "descending": False}})
    assert "lowest `necessity`" in low
    ctx = hub.build_card_context(selection={"provenance": [{"step": "top", "params": {"column": "q", "count": 3},
                                                            "rows_in": 9, "rows_out": 3}], "row_ids": [1, 2, 3]},
                                 source="demo:9", method="mods", rows_in=9, base_model="HuggingFaceTB/x")
    text = str(hub.render_dataset_card(ctx))
    assert "1. keep the 3 rows with the highest `q` (9 -> 3 rows)" in text
    assert "passes a threshold" not in text  # the old fixed MoDS text


def test_reproduce_has_only_the_settings_that_applied():
    from hf_select.recipes.cherry import CherryArguments
    from hf_select.recipes.finish import reproduce_command
    from hf_select.recipes.mods import MoDSArguments

    frac = reproduce_command("mods", MoDSArguments(dataset="demo:500", output_dir="/tmp/r", quality_fraction=0.5,
                                                   necessity_fraction=0.5))
    assert "--quality_fraction 0.5" in frac and "--necessity_fraction 0.5" in frac
    assert "--quality_threshold" not in frac and "--necessity_threshold" not in frac
    thr = reproduce_command("mods", MoDSArguments(dataset="demo:500", output_dir="/tmp/r", quality_threshold=4.0))
    assert "--quality_threshold 4.0" in thr and "--quality_fraction" not in thr
    count = reproduce_command("cherry", CherryArguments(dataset="demo:50", output_dir="/tmp/r", ifd_count=5))
    assert "--ifd_count 5" in count and "--ifd_fraction" not in count
    # the card's copy: no local path, the output folder a placeholder (relative ones too)
    ctx = hub.build_card_context(selection={"provenance": [], "row_ids": [0]}, source="demo:5", method="mods",
                                 rows_in=5, base_model="HuggingFaceTB/x",
                                 reproduce=frac.replace("/tmp/r", "runs/mods"))
    text = str(hub.render_dataset_card(ctx))
    assert "--output_dir OUTPUT_DIR" in text and "runs/mods" not in text


def test_push_fills_the_placeholders(tmp_path, monkeypatch):
    import hf_select.models

    _write(tmp_path, "mods", eval_base=False)
    folder = tmp_path / "mods" / ".hub.tmp"
    calls = []

    class Api:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
            calls.append(repo_id)

        def repo_info(self, repo_id, repo_type=None):
            return type("Info", (), {"private": True})()

        def upload_folder(self, **kw):
            pass

    monkeypatch.setattr(hf_select.models, "hub_is_offline", lambda: False)
    monkeypatch.setattr("huggingface_hub.HfApi", Api)
    provenance = folder / "model" / "selection_provenance.json"  # as a recipe without --hub_dataset_id writes it
    provenance.parent.mkdir(parents=True, exist_ok=True)
    provenance.write_text(json.dumps({"method": "mods", "dataset": "<hub-dataset-id>", "provenance": []}))
    hub.push_outputs(folder, dataset_id="me/demo-mods", model_id="me/smollm2-mods", token="hf_x")
    assert json.loads(provenance.read_text())["dataset"] == "me/demo-mods"
    data_card = (folder / "dataset" / "README.md").read_text()
    model_card = (folder / "model" / "README.md").read_text()
    for text in (data_card, model_card):
        assert_hub_ready(text)
        assert "<hub-model-id>" not in text and "<hub-dataset-id>" not in text
    assert "[me/smollm2-mods](https://huggingface.co/me/smollm2-mods)" in data_card
    assert "[me/demo-mods](https://huggingface.co/datasets/me/demo-mods)" in model_card
    assert 'model="me/smollm2-mods"' in model_card
    assert json.loads((folder / "card_context.json").read_text())["method"] == "mods"


def test_hub_safe_keeps_urls_and_ids():
    text = "see https://huggingface.co/datasets/me/d and HuggingFaceTB/SmolLM2 at /home/u/x/model, ~/.cache/y"
    assert hub_safe(text) == ("see https://huggingface.co/datasets/me/d and HuggingFaceTB/SmolLM2 at <local>/model, "
                              "<local>/y")
    assert hub_safe("/r/.hub.tmp/model", run_dir="/r") == "OUTPUT_DIR/hub/model"
    assert not hub.is_hub_id("<local>/model")
