"""hf_select.compare and `hf-select compare`: the pool, the budget, every method trained the same way, the verdict
against random, restart reuse, the outputs, and the command line."""

from __future__ import annotations

import json

import pytest

from hf_select.compare import (
    CompareConfig,
    CompareResult,
    MethodResult,
    build_pool,
    load_compare,
    recipe_arguments,
    response_texts,
    run_compare,
    stratified_indices,
)
from hf_select.demo import make_demo_dataset

TRAIN = dict(num_train_epochs=1, per_device_train_batch_size=4, per_device_eval_batch_size=8, max_length=64,
             learning_rate=1e-3, precision="fp32", logging_steps=1, score_max_length=64, report=False)


def _write(path, n: int, seed: int, corrupt: float = 0.15):
    make_demo_dataset(n=n, seed=seed, corrupt_fraction=corrupt).to_json(str(path), lines=False)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare-data")
    return {"a": _write(d / "tasks_a.json", 16, 1), "b": _write(d / "tasks_b.json", 8, 2),
            "eval": _write(d / "heldout.json", 6, 3, corrupt=0.0)}


@pytest.fixture(scope="module")
def compared(files, tiny_lm_path, tmp_path_factory):
    """One comparison (random x2, longest, ifd, and a mods run that fails on purpose), then the same again."""
    out = tmp_path_factory.mktemp("compare-out") / "cmp"
    config = CompareConfig(pool=[files["a"], files["b"]], eval=[files["eval"]], budget=0.25,
                           methods=["random", "longest", "ifd", "mods"], random_seeds=2,
                           model_name_or_path=str(tiny_lm_path), output_dir=str(out),
                           method_args={"mods": {"quality_model_name_or_path": str(out / "no-such-model")}}, **TRAIN)
    first = run_compare(config)
    second = run_compare(config)
    return config, first, second


# -- configuration, no models -----------------------------------------------------------------------------------------
def test_config_validation_names_the_field():
    base = dict(pool=["a.json"], eval=["e.json"], output_dir="/tmp/x")
    with pytest.raises(ValueError, match="CompareConfig.methods"):
        CompareConfig(**base, methods="random,magic")
    with pytest.raises(ValueError, match="CompareConfig.budget"):
        CompareConfig(**base, budget=0)
    with pytest.raises(ValueError, match="CompareConfig.budget"):
        CompareConfig(**base, budget=12.5)
    with pytest.raises(ValueError, match="CompareConfig.eval"):
        CompareConfig(pool=["a.json"], output_dir="/tmp/x")
    with pytest.raises(ValueError, match=r"CompareConfig.method_args\['mods'\] sets \['learning_rate'\]"):
        CompareConfig(**base, method_args={"mods": {"learning_rate": 1.0}})
    with pytest.raises(ValueError, match="not a recipe method"):
        CompareConfig(**base, method_args={"random": {"x": 1}})
    cfg = CompareConfig(**base, methods="random, ifd,random", budget=25.0)
    assert cfg.methods == ["random", "ifd"]
    assert cfg.budget == 25 and cfg.budget_rows(10) == 10
    assert CompareConfig(**base, budget=0.1).budget_rows(14_242) == 1424
    assert CompareConfig(**base, budget=0.01).budget_rows(50) == 1


def test_stratified_sample_keeps_source_shares():
    sources = ["a"] * 600 + ["b"] * 300 + ["c"] * 100
    idx = stratified_indices(sources, 100, seed=0)
    assert len(idx) == len(set(idx)) == 100
    assert [sum(sources[i] == s for i in idx) for s in "abc"] == [60, 30, 10]
    assert idx == stratified_indices(sources, 100, seed=0)
    assert idx != stratified_indices(sources, 100, seed=1)
    assert stratified_indices(sources, 5000) == list(range(1000))


def test_build_pool_adds_source_and_keeps_an_existing_one(tmp_path):
    a = _write(tmp_path / "first.json", 10, 1)
    rows = [{"instruction": "Say hi.", "input": "", "output": "hi", "source": "mine"},
            {"instruction": "Say yo.", "input": "", "output": "yo", "source": None}]
    b = tmp_path / "second.json"
    b.write_text(json.dumps(rows))
    pool, info = build_pool([a, str(b)])
    # the demo file labels its corrupted rows: the pool keeps the label ("none" for the unlabelled file's rows)
    assert pool.column_names == ["instruction", "input", "output", "source", "corruption"]
    assert pool["corruption"][-2:] == ["none", "none"]
    assert info["composition"] == {"first": 10, "mine": 1, "second": 1}
    plain, _ = build_pool([str(b)])
    assert plain.column_names == ["instruction", "input", "output", "source"]
    assert response_texts(pool)[-1] == "yo"
    limited, info = build_pool([a, str(b)], limit=6, seed=0)
    assert len(limited) == 6 and sum(info["composition"].values()) == 6


def test_recipe_arguments_map_the_budget(tmp_path):
    cfg = CompareConfig(pool=["a.json"], eval=["e.json"], budget=0.1, output_dir=str(tmp_path), learning_rate=3e-4,
                        method_args={"mods": {"necessity_max_new_tokens": 16}})
    ifd = recipe_arguments("ifd", cfg, tmp_path / "ifd", "pool", 600, "e.json")
    assert (ifd.ifd_count, ifd.ifd_fraction, ifd.learning_rate, ifd.eval_dataset) == (60, None, 3e-4, "e.json")
    mods = recipe_arguments("mods", cfg, tmp_path / "mods", "pool", 600, "e.json")
    assert (mods.seed_count, mods.necessity_count, mods.necessity_skip_seed) == (15, 45, True)
    assert mods.necessity_max_new_tokens == 16
    im = recipe_arguments("instructmining", cfg, tmp_path / "im", "pool", 600, "e.json")
    assert im.subset_sizes == [60] and im.grid_eval_limit == 1
    cherry = recipe_arguments("cherry", cfg, tmp_path / "cherry", "pool", 600, "e.json")
    assert (cherry.ifd_count, cherry.n_clusters) == (60, 6)


def test_verdict_against_the_random_spread():
    """The prediction interval for one new draw, by hand: t(0.975, 2) = 4.302653 at n = 3."""
    def run(label, method, loss, seed=None):
        return MethodResult(method=method, label=label, seed=seed, rows=10, eval_loss={"e": loss})

    result = CompareResult(
        output_dir="x", config={}, pool_rows=100, pool_composition={"a": 100}, pool_mean_response_chars=1.0,
        pool_mean_response_tokens=None, budget_rows=10, eval_sets=[{"name": "e", "path": "e.json"}],
        base_loss={"e": 2.0},
        methods=[run("r0", "random", 1.90, 0), run("r1", "random", 1.92, 1), run("r2", "random", 1.94, 2),
                 run("good", "ifd", 1.80), run("same", "longest", 1.85), run("bad", "full", 2.04)],
    )
    stats = result.random_stats()["e"]
    assert stats["mean"] == pytest.approx(1.92) and stats["sd"] == pytest.approx(0.02) and stats["n"] == 3
    half = 4.302653 * 0.02 * (1 + 1 / 3) ** 0.5  # 0.0994
    good = result.judge("ifd", "e")
    assert good.outcome == "beats" and good.margin == pytest.approx(0.12)
    assert good.half_width == pytest.approx(half, rel=1e-5)
    assert result.judge("longest", "e").outcome == "ties"  # 0.07 below the mean: inside the interval
    assert result.judge("full", "e").outcome == "loses"
    assert result.verdict(result.methods[3], "e") == f"beats (+0.1200 > ±{half:.4f})"
    assert result.verdict_count() == (3, 0.15)
    table = result.markdown()
    assert "1.9200 ± 0.0200" in table and "beats (+0.1200" in table and "3 verdicts" in table


def test_verdict_needs_three_draws_and_judges_a_repeated_method_by_its_mean():
    def run(method, loss, seed):
        return MethodResult(method=method, label=f"{method} (seed {seed})", seed=seed, eval_loss={"e": loss})

    two = CompareResult(output_dir="x", config={}, pool_rows=10, pool_composition={}, pool_mean_response_chars=1.0,
                        pool_mean_response_tokens=None, budget_rows=2, eval_sets=[{"name": "e"}], base_loss={},
                        methods=[run("random", 1.0, 0), run("random", 1.1, 1), run("longest", 0.1, 0)])
    assert two.verdict("longest", "e") == "n/a (needs >= 3 random draws, has 2)"
    assert two.verdict_count() == (0, 0.0)
    randoms = [run("random", v, s) for s, v in enumerate([1.0, 1.1, 1.2, 1.05, 1.15])]
    mine = [run("longest", v, s) for s, v in enumerate([0.9, 1.0, 0.95])]
    result = CompareResult(output_dir="x", config={}, pool_rows=10, pool_composition={}, pool_mean_response_chars=1.0,
                           pool_mean_response_tokens=None, budget_rows=2, eval_sets=[{"name": "e"}], base_loss={},
                           methods=[*randoms, *mine])
    v = result.judge("longest", "e")
    sd = (sum((x - 1.1) ** 2 for x in [1.0, 1.1, 1.2, 1.05, 1.15]) / 4) ** 0.5
    assert v.method_runs == 3 and v.margin == pytest.approx(0.15)
    assert v.half_width == pytest.approx(2.776445 * sd * (1 / 3 + 1 / 5) ** 0.5, rel=1e-5)


# -- end to end on a tiny model -----------------------------------------------------------------------------------
def test_every_method_trains_on_its_budget(compared):
    config, result, _ = compared
    assert result.pool_rows == 24 and result.budget_rows == 6
    assert result.pool_composition == {"tasks_a": 16, "tasks_b": 8}
    ok = [m for m in result.methods if m.status == "ok"]
    assert [m.label for m in ok] == ["random (seed 0)", "random (seed 1)", "longest", "ifd"]
    for m in ok:
        assert m.rows == 6
        assert sum(m.composition.values()) == m.rows
        assert set(m.composition) <= {"tasks_a", "tasks_b"}
        assert set(m.eval_loss) == {"heldout"}
        assert m.delta_vs_base["heldout"] == pytest.approx(m.eval_loss["heldout"] - result.base_loss["heldout"],
                                                           abs=1e-5)
        assert m.mean_response_tokens is not None and m.compute_seconds > 0


def test_random_seeds_draw_different_rows(compared):
    from hf_select.selection import SelectionResult

    _, result, _ = compared
    r0, r1 = result.runs("random")
    ids0 = SelectionResult.load(f"{r0.output_dir}/selection/selection").row_ids
    ids1 = SelectionResult.load(f"{r1.output_dir}/selection/selection").row_ids
    assert len(ids0) == len(ids1) == 6 and ids0 != ids1
    assert set(result.random_stats()["heldout"]) == {"mean", "sd", "n"}


def test_longest_takes_the_longest_responses(compared, files):
    from hf_select.selection import SelectionResult

    _, result, _ = compared
    pool, _ = build_pool([files["a"], files["b"]])
    lengths = sorted((len(t) for t in response_texts(pool)), reverse=True)
    (longest,) = result.runs("longest")
    ids = SelectionResult.load(f"{longest.output_dir}/selection/selection").row_ids
    texts = response_texts(pool)
    assert sorted((len(texts[i]) for i in ids), reverse=True) == lengths[:6]
    assert longest.mean_response_chars == pytest.approx(sum(lengths[:6]) / 6, abs=0.1)


def test_a_failing_method_is_recorded_and_the_others_run(compared):
    _, result, _ = compared
    (mods,) = result.runs("mods")
    assert mods.status == "error" and "no-such-model" in mods.error
    assert "error:" in result.markdown()
    with open(result.files["json"]) as fh:
        saved = json.load(fh)
    assert [m["status"] for m in saved["methods"]] == ["ok", "ok", "ok", "ok", "error"]


def test_restart_reuses_finished_methods(compared):
    _, first, second = compared
    for a, b in zip(first.methods, second.methods, strict=True):
        assert b.label == a.label
        if a.status == "ok":
            assert not a.reused and b.reused, a.label
            assert b.eval_loss == a.eval_loss and b.composition == a.composition
    with open(f"{second.runs('longest')[0].output_dir}/stages.jsonl") as fh:
        events = [json.loads(line)["event"] for line in fh]
    assert events[:4] == ["computed"] * 4 and events[4:8] == ["reused"] * 4


def test_outputs_written(compared):
    _, _, result = compared  # the files on disk are the second run's
    with open(result.files["markdown"]) as fh:
        md = fh.read()
    assert "| random (2 runs) | 2 | 6 |" in md and "| longest | 1 | 6 |" in md
    assert "n/a (needs >= 3 random draws, has 2)" in md  # no verdict without its basis
    with open(result.files["chart"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    again = load_compare(result.output_dir)
    assert [m.label for m in again.methods] == [m.label for m in result.methods]
    assert again.markdown() == result.markdown()


# -- command line -----------------------------------------------------------------------------------------------------
def test_cli_compare_runs_and_reuses(compared, files, tiny_lm_path, capsys):
    from hf_select.cli import main

    config, _, _ = compared
    sets = [f"{k}={v}" for k, v in TRAIN.items()]
    argv = ["compare", "--pool", files["a"], files["b"], "--eval", files["eval"], "--budget", "0.25",
            "--methods", "random,longest", "--random-seeds", "2", "--model", str(tiny_lm_path),
            "--output", config.output_dir]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| random (2 runs) |" in out and "compare.png" in out and "compare plan: 3 fine-tunes" in out


def test_cli_bad_pool_is_one_line_and_exit_2(files, tmp_path, capsys):
    from hf_select.cli import main

    code = main(["compare", "--pool", str(tmp_path / "missing.json"), "--eval", files["eval"],
                 "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("hf-select: error:") and "missing.json" in err[0]
    # --set reaches the config too (a model that does not exist keeps a regression from training anything)
    code = main(["compare", "--pool", files["a"], "--eval", files["eval"], "--output", str(tmp_path / "o"),
                 "--model", str(tmp_path / "no-model"), "--set", "budget=-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "CompareConfig.budget" in err[0]
