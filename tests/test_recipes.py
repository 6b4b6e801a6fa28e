"""The recipes end to end on tiny models and a few dozen demo rows; stages, resume, configs, cards, 2 processes."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
from test_cards import assert_hub_ready, sections

from hf_select.errors import HFSelectError
from hf_select.recipes.arguments import RecipeArguments, args_to_cli, parse_recipe_args
from hf_select.selection import SelectionResult
from hf_select.stages import StageRunner, load_stage_dataset

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(glob.glob(str(ROOT / "recipes" / "configs" / "*.yaml")))
ARG_CLASSES = {"superfilter": "SuperfilterArguments", "mods": "MoDSArguments", "cherry": "CherryArguments",
               "instruct_mining": "InstructMiningArguments"}


def _recipe_of(config: str) -> str:
    name = Path(config).name
    return next(r for r in sorted(ARG_CLASSES, key=len, reverse=True) if name.startswith(r))


def _tiny(tmp_path, tiny_lm_path, **kw):
    base = dict(dataset="demo:32", output_dir=str(tmp_path / "run"), model_name_or_path=str(tiny_lm_path),
                template="auto", score_max_length=512, max_length=128, num_train_epochs=1, learning_rate=1e-3,
                per_device_train_batch_size=4, per_device_eval_batch_size=4, eval_dataset="demo:6", precision="fp32",
                logging_steps=50)
    base.update(kw)
    return base


def _check_cards(output_dir) -> tuple[list[str], list[str]]:
    """The recipe's two cards are ready for the Hub (no local path, no relative link); returns their sections."""
    texts = [(Path(output_dir) / "hub" / kind / "README.md").read_text() for kind in ("dataset", "model")]
    for text in texts:
        assert_hub_ready(text)
    return sections(texts[0]), sections(texts[1])


CARD_SECTIONS: list[tuple[list[str], list[str]]] = []  # every recipe's card sections, compared in the last test


def _events(output_dir) -> list[tuple[str, str]]:
    lines = Path(output_dir, "stages.jsonl").read_text().splitlines()
    return [(json.loads(x)["stage"], json.loads(x)["event"]) for x in lines]


# -- configs ---------------------------------------------------------------------------------------------------------
def test_there_is_an_offline_and_a_hub_config_per_recipe():
    names = [Path(c).name for c in CONFIGS]
    for r in ARG_CLASSES:
        mine = [n for n, c in zip(names, CONFIGS, strict=True) if _recipe_of(c) == r]
        assert any("smollm2" in n for n in mine) and any("smollm2" not in n for n in mine), (r, mine)
        assert (ROOT / "recipes" / f"{r}.py").is_file()


def test_the_quickstart_config_is_the_readme_one_and_small():
    config = ROOT / "recipes" / "configs" / "superfilter_smollm2_quickstart.yaml"
    assert f"recipes/superfilter.py --config recipes/configs/{config.name}" in (ROOT / "README.md").read_text()
    mod = import_module("hf_select.recipes.superfilter")
    args = parse_recipe_args(mod.SuperfilterArguments, ["--config", str(config)])
    assert args.dataset_name == "demo:200" and args.num_train_epochs == 1
    assert args.max_length <= 256 and args.score_max_length <= 256 and not args.diversity


@pytest.mark.parametrize("config", CONFIGS, ids=[Path(c).name for c in CONFIGS])
def test_every_config_parses(config):
    recipe = _recipe_of(config)
    args_class = getattr(import_module(f"hf_select.recipes.{recipe}"), ARG_CLASSES[recipe])
    args = parse_recipe_args(args_class, ["--config", config])
    assert args.dataset and args.output_dir and args.model_name_or_path
    assert isinstance(args.learning_rate, float) and args.learning_rate > 0
    if "smollm2" in Path(config).name:
        assert args.model_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert args.eval_dataset and not args.push_to_hub
    else:
        assert args.hub_model_id and args.hub_dataset_id


def test_unknown_yaml_key_fails_and_cli_overrides(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dataset: demo:10\noutput_dir: out\nnot_a_field: 3\n")
    mod = import_module("hf_select.recipes.superfilter")
    with pytest.raises(ValueError, match="not_a_field"):
        parse_recipe_args(mod.SuperfilterArguments, ["--config", str(cfg)])
    cfg.write_text("dataset: demo:10\noutput_dir: out\nifd_fraction: 0.3\n")
    args = parse_recipe_args(mod.SuperfilterArguments, ["--config", str(cfg), "--ifd_fraction", "0.2"])
    assert args.ifd_fraction == 0.2
    with pytest.raises(ValueError, match="ifd_column"):
        mod.SuperfilterArguments(dataset="demo:10", output_dir="o", ifd_column="nope")
    with pytest.raises(ValueError, match="dataset_name is required"):
        RecipeArguments(output_dir="o")
    with pytest.raises(ValueError, match="push_to_hub needs"):
        RecipeArguments(dataset="demo", output_dir="o", push_to_hub=True)
    assert args_to_cli(RecipeArguments(dataset="demo:5", output_dir="o", cpu=True)) == [
        "--dataset_name", "demo:5", "--output_dir", "o", "--cpu", "true"]


# -- stages ----------------------------------------------------------------------------------------------------------
def test_stage_runner_atomic_reuse_and_invalidation(tmp_path):
    calls = []

    def write(tag):
        def compute(folder):
            calls.append(tag)
            (folder / "out.txt").write_text(tag)
            return {"tag": tag}
        return compute

    r = StageRunner(tmp_path)
    a = r.run("a", write("a1"), params={"x": 1})
    r.run("b", write("b1"))
    assert not a.reused and (tmp_path / "a" / "out.txt").read_text() == "a1"
    assert not list(tmp_path.glob(".*.tmp"))

    r2 = StageRunner(tmp_path)
    assert r2.run("a", write("a2"), params={"x": 1}).reused
    assert r2.run("b", write("b2")).reused
    assert calls == ["a1", "b1"]

    r3 = StageRunner(tmp_path)  # a changed parameter recomputes the stage and every later one
    r3.run("a", write("a3"), params={"x": 2})
    r3.run("b", write("b3"))
    assert calls == ["a1", "b1", "a3", "b3"] and (tmp_path / "b" / "out.txt").read_text() == "b3"

    def boom(folder):
        (folder / "half.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        StageRunner(tmp_path).run("c", boom)
    assert not (tmp_path / "c").exists() and not (tmp_path / ".c.tmp").exists()  # never half a stage
    assert StageRunner(tmp_path).run("c", write("c1")).meta == {"tag": "c1"}
    assert not (tmp_path / ".c.tmp").exists()
    with pytest.raises(ValueError, match="plain folder name"):
        r.run("../x", write("x"))


# -- recipes end to end --------------------------------------------------------------------------------------------
def test_superfilter_end_to_end_resume_and_cards(tmp_path, tiny_lm_path):
    mod = import_module("hf_select.recipes.superfilter")
    args = mod.SuperfilterArguments(**_tiny(tmp_path, tiny_lm_path, ifd_model_name_or_path=str(tiny_lm_path),
                                            ifd_fraction=0.25, diversity=True, diversity_count=5,
                                            embed_model_name_or_path=str(tiny_lm_path)))
    summary = mod.run_superfilter(args)
    out = Path(args.output_dir)
    assert summary["rows_in"] == 32 and summary["rows_out"] == 5
    for stage in ("data", "ifd", "embed", "selection", "train", "eval", "report", "hub"):
        assert (out / stage / "stage.json").is_file(), stage
    selection = SelectionResult.load(out / "selection" / "selection")
    assert [p["step"] for p in selection.provenance] == ["ifd_rule", "facility_location"]
    assert selection.provenance[0]["rows_out"] == 8
    ifd = load_stage_dataset(out / "ifd")
    chosen = [ifd[i]["ifd"] for i in selection.row_ids]
    assert all(x < 1 for x in chosen)  # the IFD rule drops IFD >= 1

    # cards: the right numbers
    hub = out / "hub"
    ds_card = (hub / "dataset" / "README.md").read_text()
    assert "5 of 32 rows of **demo:32**" in ds_card
    assert ", ".join(map(str, selection.row_ids)) in ds_card
    assert json.loads((hub / "dataset" / "row_ids.json").read_text()) == selection.row_ids
    for reason, count in selection.dropped_counts().items():
        assert f"| {reason} | {count} |" in ds_card
    assert "![" in ds_card and (hub / "dataset" / "plots").is_dir()
    ev = json.loads((out / "eval" / "eval.json").read_text())
    model_card = (hub / "model" / "README.md").read_text()
    assert f"| `demo:6` | {ev['rows']} | {ev['loss']:.4f} |" in model_card
    assert (hub / "model" / "model.safetensors").is_file() and (hub / "model" / "tokenizer.json").is_file()
    assert "superfiltering" in (out / "train" / "README.md").read_text()  # provenance in the trainer's card
    CARD_SECTIONS.append(_check_cards(out))

    # started again: nothing is recomputed
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_dir()}
    again = mod.run_superfilter(args)
    assert set(again["stages"].values()) == {"reused"}
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_dir()} == stamps
    # a killed training stage: only it and what follows are redone
    shutil.rmtree(out / "train")
    (out / ".train.tmp").mkdir()
    third = mod.run_superfilter(args)
    assert [s for s, e in third["stages"].items() if e == "computed"] == ["train", "eval", "report", "hub"]
    assert _events(out).count(("ifd", "computed")) == 1


def test_cherry_end_to_end(tmp_path, tiny_lm_path):
    mod = import_module("hf_select.recipes.cherry")
    args = mod.CherryArguments(**_tiny(tmp_path, tiny_lm_path, n_clusters=3, per_cluster=3, ifd_count=6))
    summary = mod.run_cherry(args)
    out = Path(args.output_dir)
    pre = SelectionResult.load(out / "pre_selection" / "selection")
    assert pre.provenance[0]["step"] == "kmeans_sample" and 1 <= len(pre) <= 9
    scored = load_stage_dataset(out / "ifd")
    assert {"embedding", "loss_reverse_direct", "ifd", "ifd_status"} <= set(scored.column_names)
    assert json.loads((out / "ifd" / "stage.json").read_text())["params"]["config"]["model_name_or_path"] == str(
        out / "pre_experienced")  # IFD scored with the pre-experienced model
    assert summary["rows_out"] == 6 and summary["eval"]["loss"] > 0
    assert "pre-experienced model" in (out / "hub" / "model" / "README.md").read_text()
    CARD_SECTIONS.append(_check_cards(out))


def test_mods_end_to_end(tmp_path, tiny_lm_path, tiny_classifier_path):
    mod = import_module("hf_select.recipes.mods")
    args = mod.MoDSArguments(**_tiny(tmp_path, tiny_lm_path, quality_backend="reward",
                                     quality_model_name_or_path=str(tiny_classifier_path), quality_fraction=0.75,
                                     embed_model_name_or_path=str(tiny_lm_path), seed_count=5, necessity_count=4,
                                     necessity_fraction=0.5, necessity_max_new_tokens=4))
    summary = mod.run_mods(args)
    out = Path(args.output_dir)
    high = SelectionResult.load(out / "high_quality" / "selection")
    seed = SelectionResult.load(out / "seed" / "selection")
    necessary = SelectionResult.load(out / "necessary" / "selection")
    final = SelectionResult.load(out / "selection" / "selection")
    assert len(high) == 24 and len(seed) == 5 and len(necessary) == 4
    assert set(seed.row_ids) <= set(high.row_ids) and set(necessary.row_ids) <= set(high.row_ids)
    assert final.row_ids == sorted(set(seed.row_ids) | set(necessary.row_ids))  # deduplicated union
    union = final.provenance[-1]
    assert union["step"] == "union" and union["dropped"]["duplicate"] == 9 - len(final)
    answered = load_stage_dataset(out / "necessity")
    assert len(answered) == 24 and "generated_response" in answered.column_names
    assert json.loads((out / "necessity" / "stage.json").read_text())["params"]["config"]["model_name_or_path"] == \
        str(out / "seed_model")  # the seed model answered
    assert summary["rows_out"] == len(final)
    card = (out / "hub" / "dataset" / "README.md").read_text()
    assert "`seed: kcenter`" in card and "`necessary: kcenter`" in card and "`seed+necessary: union`" in card
    # drops per reason: every source row outside the subset once, with its last reason
    reasons: dict[str, int] = {}
    for r in final.dropped["drop_reason"]:
        reasons[r] = reasons.get(r, 0) + 1
    assert sum(reasons.values()) == 32 - len(final)
    for reason, count in reasons.items():
        assert f"| {reason} | {count} |" in card
    CARD_SECTIONS.append(_check_cards(out))
    assert "--quality_fraction 0.75" in card and "--quality_threshold" not in card  # only what applied
    assert "keep the 75% of rows with the highest `quality`" in card and "a threshold" not in card
    assert "| the source rows read |" in card  # the demo pool's corrupted share


def test_instruct_mining_end_to_end(tmp_path, tiny_lm_path):
    mod = import_module("hf_select.recipes.instruct_mining")
    args = mod.InstructMiningArguments(**_tiny(tmp_path, tiny_lm_path, subset_sizes=[6, 12],
                                               quality_model_name_or_path=str(tiny_lm_path),
                                               embed_model_name_or_path=str(tiny_lm_path)))
    summary = mod.run_instruct_mining(args)
    out = Path(args.output_dir)
    grid = json.loads((out / "grid" / "grid.json").read_text())
    assert [g["size"] for g in grid] == [6, 12]
    best = min(grid, key=lambda g: g["eval_loss"])
    assert summary["rows_out"] == best["size"] and summary["model_dir"] == best["model_dir"]
    ranked = load_stage_dataset(out / "rule")
    sel = SelectionResult.load(out / f"grid_{best['size']}_selection" / "selection")
    preds = sorted(x for x in ranked["instructmining_pred"] if x == x)
    assert sorted(ranked[i]["instructmining_pred"] for i in sel.row_ids) == preds[: best["size"]]  # lowest first
    # the published coefficients read indicators on other scales here: the card says so
    assert "fitted on the paper's own indicator models" in (out / "hub" / "model" / "README.md").read_text()
    with pytest.raises(ValueError, match="eval set"):
        mod.InstructMiningArguments(dataset="demo", output_dir="o")
    CARD_SECTIONS.append(_check_cards(out))
    if len(CARD_SECTIONS) == 4:  # all four recipes ran in this session: their cards have the same sections
        assert len({tuple(d) for d, _ in CARD_SECTIONS}) == 1 and len({tuple(m) for _, m in CARD_SECTIONS}) == 1


def test_empty_selection_is_one_clear_error(tmp_path, tiny_lm_path):
    mod = import_module("hf_select.recipes.mods")
    args = mod.MoDSArguments(**_tiny(tmp_path, tiny_lm_path, quality_model_name_or_path=str(tiny_lm_path),
                                     quality_threshold=99.0, dataset="demo:8"))
    with pytest.raises(HFSelectError, match=r"stage high_quality: the selection kept no rows \(dropped: \{'below_m"):
        mod.run_mods(args)
    assert not (Path(args.output_dir) / "high_quality").exists()


# -- two processes ---------------------------------------------------------------------------------------------------
@pytest.mark.multiprocess
def test_two_processes_give_the_same_scores_and_selection(tmp_path, tiny_lm_path):
    """torchrun --nproc_per_node 2 (gloo on CPU): scoring is split across the processes, selection and training run
    on both; the scores and the chosen rows equal those of one process."""
    cli = ["--dataset", "demo:24", "--model_name_or_path", str(tiny_lm_path), "--ifd_model_name_or_path",
           str(tiny_lm_path), "--ifd_fraction", "0.25", "--score_max_length", "256", "--max_length", "96",
           "--num_train_epochs", "1", "--per_device_train_batch_size", "2", "--precision", "fp32",
           "--shard_size", "5", "--report", "false", "--eval_dataset", "demo:4"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    script = str(ROOT / "recipes" / "superfilter.py")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", script, *cli, "--output_dir", str(tmp_path / "two"), "--cpu", "true"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert len({json.loads(x)["pid"] for x in (tmp_path / "two" / "stages.jsonl").read_text().splitlines()}) == 1
    shards = sorted((tmp_path / "two" / "shards").glob("ifd-*/shard-*.parquet"))
    assert len(shards) == 5  # 24 rows in shards of 5, split over the two processes
    one = subprocess.run([sys.executable, script, *cli, "--output_dir", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = load_stage_dataset(tmp_path / "one" / "ifd"), load_stage_dataset(tmp_path / "two" / "ifd")
    assert a["ifd_status"] == b["ifd_status"]
    assert a["ifd"] == pytest.approx(b["ifd"], rel=1e-6, nan_ok=True)
    sel_one = SelectionResult.load(tmp_path / "one" / "selection" / "selection")
    sel_two = SelectionResult.load(tmp_path / "two" / "selection" / "selection")
    assert sel_one.row_ids == sel_two.row_ids and len(sel_one) == 6
    assert (tmp_path / "two" / "hub" / "model" / "model.safetensors").is_file()
    # training was data-parallel: 6 rows, 2 per process per step -> 2 steps on two processes, 3 on one
    steps = {k: json.loads((tmp_path / k / "train" / "stage.json").read_text())["meta"]["global_step"]
             for k in ("one", "two")}
    assert steps == {"one": 3, "two": 2}
