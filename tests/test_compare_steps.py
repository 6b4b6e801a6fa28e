"""Step methods of a comparison: presets and custom step lists over one shared scoring of the pool, the
selection-only mode, the corrupted share of the demo pool, and the presets themselves."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset

from hf_select.compare import CompareConfig, corrupted_share, run_compare
from hf_select.compare.steps import method_needs, method_steps, resolve_steps, steps_needs
from hf_select.demo import make_demo_dataset
from hf_select.errors import HFSelectError
from hf_select.selection import select
from hf_select.selection.presets import PRESETS, preset_steps

TRAIN = dict(num_train_epochs=1, per_device_train_batch_size=4, per_device_eval_batch_size=8, max_length=64,
             learning_rate=1e-3, precision="fp32", logging_steps=1, score_max_length=64, report=False)


# -- no models ----------------------------------------------------------------------------------------------------
def test_resolve_steps_fills_the_budget_only_where_asked():
    steps = [{"step": "threshold", "column": "q", "min": 1.0}, {"step": "top", "column": "q", "count": "budget"},
             {"step": "kcenter", "k": "budget"}]
    assert resolve_steps(steps, 7) == [steps[0], {"step": "top", "column": "q", "count": 7},
                                       {"step": "kcenter", "k": 7}]
    assert steps[1]["count"] == "budget"  # the input is not changed


def test_needs_are_inferred_from_columns_and_steps():
    assert steps_needs([{"step": "top", "column": "judge_score", "count": 3}]) == {"quality"}
    assert steps_needs([{"step": "consistency_gate"}]) == {"ifd", "reverse"}
    assert steps_needs([{"step": "threshold", "column": "ifd", "max": 1.0}]) == {"ifd"}
    assert steps_needs([{"step": "fused_diverse", "scores": {"ifd": 1.0, "judge_score": 1.0}}]) == {
        "ifd", "quality", "embedding"}
    assert steps_needs([{"step": "random", "count": 3}]) == set()
    for name, preset in PRESETS.items():
        assert method_needs(name, None) == set(preset.needs)


def _scored_frame(n: int = 60, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return Dataset.from_dict({
        "instruction": [f"q{i}" for i in range(n)], "input": [""] * n, "output": ["a" * (1 + i % 9) for i in range(n)],
        "source": ["a" if i % 3 else "b" for i in range(n)],
        "ifd": rng.uniform(0.2, 1.2, n), "ifd_ppl": rng.uniform(0.2, 1.2, n), "ifd_status": ["ok"] * n,
        "loss_conditioned": rng.uniform(0.5, 3.0, n),
        "ifd_reverse": rng.uniform(0.5, 1.5, n), "ifd_reverse_status": ["ok"] * n,
        "response_tokens": (1 + np.arange(n) % 9).astype(np.int64), "judge_score": rng.uniform(1, 5, n),
        "embedding": emb.tolist(),
    })


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_and_keeps_its_budget(name, tmp_path):
    ds = _scored_frame()
    options = {}
    if name in ("target", "target_lm"):
        np.save(tmp_path / "t.npy", np.asarray(ds["embedding"][:3], dtype=np.float32))
        options["target"] = str(tmp_path / "t.npy")
    if name == "target_lm":  # the LM's own embeddings, in their own column
        ds = ds.add_column("lm_embedding", ds["embedding"])
    if name == "loss_reduction":
        ds = ds.add_column("loss_reduction", np.random.default_rng(1).normal(size=len(ds)).tolist())
    result = select(ds, preset_steps(name, count=10, **options))
    assert len(result.dataset) == 10
    if name in ("ifd_gated", "ifd_length", "fusion", "superfiltering", "longest_gated"):  # never IFD >= 1
        assert all(v < 1.0 for v in result.dataset["ifd"])
    if name in ("ifd_gated", "longest_gated"):  # ... and keep only rows at or below the median reverse IFD
        median = float(np.median(ds["ifd_reverse"]))
        assert all(r <= median for r in result.dataset["ifd_reverse"])
    if name == "longest_gated":  # the longest responses (characters) among the rows that pass the gate
        passing = [len(o) for o, f, r in zip(ds["output"], ds["ifd"], ds["ifd_reverse"], strict=True)
                   if f < 1.0 and r <= median]
        assert sorted(len(o) for o in result.dataset["output"]) == sorted(passing)[-10:]
    if name == "ifd_quota":  # each source keeps its pool share: a third of the rows are 'b'
        assert result.dataset["source"].count("b") in (3, 4)
    if name == "loss_reduction":  # the largest reductions
        assert sorted(result.dataset["loss_reduction"]) == sorted(ds["loss_reduction"])[-10:]
    if name in ("longest_diverse", "kcenter_length"):  # behind the same gate as longest_gated
        median = float(np.median(ds["ifd_reverse"]))
        assert all(r <= median and f < 1.0 for r, f in zip(result.dataset["ifd_reverse"], result.dataset["ifd"],
                                                            strict=True))


def test_lm_target_needs_and_paths():
    assert steps_needs([{"step": "target_similarity", "column": "lm_embedding", "count": 3}]) == {
        "lm_embedding", "lm_target"}
    assert steps_needs([{"step": "top", "column": "loss_reduction", "count": 3}]) == {"loss_reduction"}
    steps = method_steps("target_lm", 5, custom=None, target="out/scores/target/target_embeddings.npy")
    assert steps[0]["target"] == "out/scores/lm_target/target_embeddings.npy"
    assert steps[0]["column"] == "lm_embedding"
    steps = method_steps("target", 5, custom=None, target="out/scores/target/target_embeddings.npy")
    assert steps[0]["target"] == "out/scores/target/target_embeddings.npy"


def test_preset_errors_name_the_problem():
    with pytest.raises(HFSelectError, match="unknown preset"):
        preset_steps("magic", count=3)
    with pytest.raises(HFSelectError, match="exactly one of count"):
        preset_steps("ifd_gated")
    with pytest.raises(HFSelectError, match="target"):
        preset_steps("target", count=3)


def test_corrupted_share():
    assert corrupted_share({"swapped": 1, "rows": 4}) == 0.25
    assert corrupted_share({}) is None


def test_config_validation_of_step_methods():
    base = dict(pool=["a.json"], eval=["e.json"], output_dir="/tmp/x")
    with pytest.raises(ValueError, match="CompareConfig.target"):
        CompareConfig(**base, methods="random,target")
    with pytest.raises(ValueError, match="train=False"):
        CompareConfig(**base, methods="random,mods", train=False)
    with pytest.raises(ValueError, match="built-in method"):
        CompareConfig(**base, methods="random", step_methods={"longest": [{"step": "random", "count": 1}]})
    with pytest.raises(ValueError, match="list of step mappings"):
        CompareConfig(**base, methods="mine", step_methods={"mine": [{"column": "q"}]})
    cfg = CompareConfig(**base, methods="random,mine",
                        step_methods=json.dumps({"mine": [{"step": "top", "column": "q", "count": "budget"}]}))
    assert cfg.methods == ["random", "mine"] and cfg.step_methods["mine"][0]["count"] == "budget"


# -- with the tiny model ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_pool(tmp_path_factory):
    d = tmp_path_factory.mktemp("steps-data")
    pool = d / "demo_rows.json"
    make_demo_dataset(n=40, seed=1, corrupt_fraction=0.25).to_json(str(pool), lines=False)
    heldout = d / "heldout.json"
    make_demo_dataset(n=6, seed=3, corrupt_fraction=0.0).to_json(str(heldout), lines=False)
    target = d / "target.json"
    make_demo_dataset(n=5, seed=4, corrupt_fraction=0.0).to_json(str(target), lines=False)
    return {"pool": str(pool), "eval": str(heldout), "target": str(target)}


def test_selection_only_reports_corruption_and_scores_once(demo_pool, tiny_lm_path, tmp_path):
    out = tmp_path / "cmp"
    custom = {"easiest": [{"step": "top", "column": "loss_conditioned", "descending": False, "count": "budget"}]}
    config = CompareConfig(pool=[demo_pool["pool"]], eval=[demo_pool["eval"]], budget=0.25,
                           methods=["random", "longest", "ifd_gated", "fusion", "target", "easiest"],
                           step_methods=custom, target=demo_pool["target"], random_seeds=2, train=False,
                           model_name_or_path=str(tiny_lm_path), embed_model_name_or_path=str(tiny_lm_path),
                           output_dir=str(out), **TRAIN)
    result = run_compare(config)
    assert [m.status for m in result.methods] == ["ok"] * 7, [m.error for m in result.methods]
    assert result.pool_corrupted["rows"] == 40 and corrupted_share(result.pool_corrupted) == pytest.approx(0.25)
    for m in result.methods:  # the tiny model gives few rows IFD < 1, so the IFD presets may keep fewer
        assert m.rows == (10 if m.method in ("random", "longest", "target", "easiest") else m.rows) <= 10
        assert m.eval_loss == {} and m.model_dir is None and m.corrupted["rows"] == m.rows
    # one scoring of the pool, shared by every step method
    scores = out / "scores"
    assert {p.name for p in scores.iterdir() if p.is_dir()} >= {"data", "ifd", "embed", "target"}
    assert not (scores / "quality").exists()  # no method read a quality score
    ifd_stage = json.loads((scores / "ifd" / "stage.json").read_text())
    assert ifd_stage["params"]["config"]["reverse"] is True
    gated = next(m for m in result.methods if m.method == "ifd_gated")
    assert gated.diagnostics["column"] == "ifd"
    md = (out / "compare.md").read_text()
    assert "Selection only" in md and "corrupted" in md and "easiest" in md
    assert not (out / "compare.png").exists()
    again = run_compare(config)  # everything reused
    assert all(m.reused for m in again.methods)


def test_a_step_method_trains_and_is_evaluated(demo_pool, tiny_lm_path, tmp_path):
    config = CompareConfig(pool=[demo_pool["pool"]], eval=[demo_pool["eval"]], budget=8,
                           methods=["random", "superfiltering"], random_seeds=2,
                           model_name_or_path=str(tiny_lm_path), output_dir=str(tmp_path / "cmp"), **TRAIN)
    result = run_compare(config)
    sf = next(m for m in result.methods if m.method == "superfiltering")
    assert sf.status == "ok", sf.error
    assert sf.rows == 8 and "heldout" in sf.eval_loss and np.isfinite(sf.eval_loss["heldout"])
    assert "superfiltering" in result.markdown()
