"""The fair comparison: token budgets counted as the trainer sees them, per-source baselines, repeated methods, the
eval sets held out of the pool, and cache keys that cannot go stale."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_select.compare import CompareConfig, run_compare
from hf_select.compare.budget import TokenCounts, check_budget, rows_for_tokens, subset_tokens
from hf_select.compare.pool import build_pool, prompt_key
from hf_select.demo import make_demo_dataset
from hf_select.errors import HFSelectError
from hf_select.selection import SelectionResult, select

TRAIN = dict(num_train_epochs=1, per_device_train_batch_size=4, per_device_eval_batch_size=8, max_length=48,
             learning_rate=1e-3, precision="fp32", logging_steps=1, score_max_length=64, report=False,
             eval_max_length=96)


# -- no models ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [1, 7, 60, 61, 149, 150, 10_000])
def test_rows_for_tokens_matches_a_brute_force_walk_down_the_order(budget):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 12, size=25)
    order = [int(i) for i in rng.permutation(25)]
    k, ids = rows_for_tokens(lambda n: order[:n], tokens, budget)
    running, want = 0, None  # walk the order until the tokens reach the budget
    for i, row in enumerate(order):
        running += tokens[row]
        if running >= budget:
            want = i + 1
            break
    if want is None:  # the whole order is short of the budget: every row
        assert (k, ids) == (25, order)
    else:
        assert k == want and ids == order[:want]
        assert tokens[ids].sum() >= budget > tokens[ids[:-1]].sum()


def test_random_draws_are_nested_so_a_budget_grows_them_row_by_row():
    from datasets import Dataset

    ds = Dataset.from_dict({"x": list(range(50))})
    small = set(select(ds, [{"step": "random", "count": 10}], seed=3).row_ids)
    large = set(select(ds, [{"step": "random", "count": 30}], seed=3).row_ids)
    assert small < large


def test_subset_tokens_and_a_budget_above_the_pool():
    counts = TokenCounts(np.array([5, 0, 7]), np.array([False, False, True]), np.array([False, True, False]))
    assert subset_tokens([0, 1, 2], counts) == {"rows": 3, "rows_trained": 2, "supervised_tokens": 12,
                                                "rows_truncated": 1}
    check_budget(12, counts)
    with pytest.raises(HFSelectError, match="budget_tokens=13 is more than the 12 supervised tokens"):
        check_budget(13, counts)


def test_config_checks_budgets_repeats_and_overlap_mode():
    base = dict(pool=["a.json"], eval=["e.json"], output_dir="/tmp/x")
    with pytest.raises(ValueError, match="budget_tokens applies to the baselines.*'ifd'"):
        CompareConfig(**base, methods="random,ifd", budget_tokens=100)
    with pytest.raises(ValueError, match="budget_tokens must be a whole number"):
        CompareConfig(**base, methods="random", budget_tokens=0)
    with pytest.raises(ValueError, match="repeat_methods"):
        CompareConfig(**base, methods="random,longest", repeat_methods=["fusion"])
    with pytest.raises(ValueError, match="eval_overlap"):
        CompareConfig(**base, methods="random", eval_overlap="ignore")
    cfg = CompareConfig(**base, methods="random,longest", repeat_methods="longest")
    assert cfg.random_seeds == 5 and cfg.repeat_methods == ["longest"] and cfg.eval_max_length == 2048


def test_pool_rows_asking_an_eval_question_are_left_out_and_counted(tmp_path):
    rows = make_demo_dataset(n=12, seed=1, corrupt_fraction=0.0)
    pool_file = tmp_path / "pool.json"
    rows.to_json(str(pool_file), lines=False)
    pool, info = build_pool([str(pool_file)])
    assert info["eval_overlap"] == {}
    from hf_select.formats import detect_format, row_to_messages

    fmt = detect_format(pool.column_names)
    keys = {"heldout": {prompt_key(row_to_messages(pool[i], fmt)) for i in (2, 5)}}
    kept, info = build_pool([str(pool_file)], exclude=keys)
    assert len(kept) == 10 and info["eval_overlap"] == {"heldout": 2}
    assert pool[2]["instruction"] not in kept["instruction"]


# -- end to end on a tiny model -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fair-data")
    pool = make_demo_dataset(n=30, seed=1, corrupt_fraction=0.0)
    pool = pool.add_column("source", ["a" if i % 3 else "b" for i in range(len(pool))])
    pool.to_json(str(d / "pool.json"), lines=False)
    heldout = make_demo_dataset(n=5, seed=3, corrupt_fraction=0.0)
    heldout.to_json(str(d / "heldout.json"), lines=False)
    # a second eval set that asks two pool questions (answered differently): they must leave the pool
    overlap = pool.select([0, 4]).map(lambda r: {"output": "A different answer."})
    overlap.select_columns(["instruction", "input", "output"]).to_json(str(d / "overlap.json"), lines=False)
    return {"pool": str(d / "pool.json"), "eval": str(d / "heldout.json"), "overlap": str(d / "overlap.json")}


@pytest.fixture(scope="module")
def fair(files, tiny_lm_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("fair-out") / "cmp"
    config = CompareConfig(pool=[files["pool"]], eval=[files["eval"], files["overlap"]], budget_tokens=120,
                           methods=["random", "longest", "random_per_source", "longest_per_source"],
                           random_seeds=3, repeat_methods=["longest"], repeat_seeds=2,
                           model_name_or_path=str(tiny_lm_path), output_dir=str(out), **TRAIN)
    return config, run_compare(config)


def _trainer_tokens(tiny_lm_path, pool, ids, max_length):
    """The supervised tokens of rows ``ids`` as TRL's own SFTTrainer prepares them (completion mask after
    truncation), summed: the independent count the budget must agree with."""
    from trl import SFTConfig, SFTTrainer

    from hf_select.training import load_model_for_training, to_prompt_completion

    model, tok = load_model_for_training(str(tiny_lm_path))
    rows = to_prompt_completion(pool.select(ids))
    args = SFTConfig(output_dir="/tmp/hf-select-fair-trl", max_length=max_length, completion_only_loss=True,
                     report_to=[], use_cpu=True, dataloader_pin_memory=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tok)
    total = 0
    for row in trainer.train_dataset:
        total += sum(1 for label in row["labels"][1:] if label != -100)  # position 0 is never predicted
    return total, len(trainer.train_dataset)


def test_every_method_reaches_the_token_budget_counted_as_the_trainer_does(fair, tiny_lm_path):
    config, result = fair
    assert result.budget_tokens == 120
    ok = [m for m in result.methods if m.status == "ok"]
    assert len(ok) == len(result.methods) == 3 + 2 + 1 + 1, [m.error for m in result.methods]
    pool = result_pool(result)
    for m in ok:
        ids = SelectionResult.load(f"{m.output_dir}/selection/selection").row_ids
        got = m.supervised_tokens
        assert got >= 120 and m.rows == len(ids)
        trl_tokens, trl_rows = _trainer_tokens(tiny_lm_path, pool, ids, config.max_length)
        assert got == trl_tokens and m.rows_trained == trl_rows, m.label


def result_pool(result):
    from hf_select.stages import load_stage_dataset

    return load_stage_dataset(f"{result.output_dir}/pool")


def test_random_draws_vary_rows_and_training_seed_and_repeats_vary_the_seed(fair):
    _, result = fair
    draws = result.runs("random")
    assert [d.train_seed for d in draws] == [0, 1, 2]
    chosen = [tuple(SelectionResult.load(f"{d.output_dir}/selection/selection").row_ids) for d in draws]
    assert len(set(chosen)) == 3
    longest = result.runs("longest")
    assert [r.train_seed for r in longest] == [0, 1] and longest[1].output_dir.endswith("longest__seed1")
    with open(f"{longest[1].output_dir}/train/stage.json") as fh:
        train = json.load(fh)
    assert train["params"]["train"]["seed"] == 1
    assert result.judge("longest", "heldout").method_runs == 2


def test_per_source_baselines_keep_the_pool_shares(fair):
    _, result = fair
    pool_share = result.pool_composition["b"] / result.pool_rows
    for name in ("random_per_source", "longest_per_source"):
        (m,) = result.runs(name)
        assert abs(m.composition.get("b", 0) - pool_share * m.rows) <= 1, m.composition


def test_the_eval_questions_leave_the_pool_and_the_table_says_so(fair):
    _, result = fair
    assert result.eval_overlap == {"heldout": 0, "overlap": 2} and result.pool_rows == 28
    md = result.markdown()
    assert "pool rows asking its questions, left out of the pool: 2" in md
    spec = next(e for e in result.eval_sets if e["name"] == "heldout")
    assert spec["rows"] == 5 and spec["rows_scored"] == 5 and spec["tokens_scored"] > 0
    assert "supervised tokens" in md and "sqrt(1/k + 1/n)" in md


def test_overlap_error_mode_names_the_eval_set(files, tiny_lm_path, tmp_path):
    config = CompareConfig(pool=[files["pool"]], eval=[files["overlap"]], methods=["longest"], budget=4,
                           eval_overlap="error", model_name_or_path=str(tiny_lm_path),
                           output_dir=str(tmp_path / "cmp"), **TRAIN)
    with pytest.raises(HFSelectError, match=r"eval sets \{'overlap': 2\}"):
        run_compare(config)


def test_a_budget_above_the_pool_is_an_error(files, tiny_lm_path, tmp_path):
    config = CompareConfig(pool=[files["pool"]], eval=[files["eval"]], methods=["longest"], budget_tokens=10**7,
                           model_name_or_path=str(tiny_lm_path), output_dir=str(tmp_path / "cmp"), **TRAIN)
    with pytest.raises(HFSelectError, match="budget_tokens=10000000 is more than"):
        run_compare(config)


def test_dry_run_prints_the_plan_and_trains_nothing(files, tiny_lm_path, tmp_path, capsys):
    config = CompareConfig(pool=[files["pool"]], eval=[files["eval"]], methods=["random", "longest"],
                           budget_tokens=100, random_seeds=3, dry_run=True, model_name_or_path=str(tiny_lm_path),
                           output_dir=str(tmp_path / "cmp"), **TRAIN)
    result = run_compare(config)
    out = capsys.readouterr().out
    assert "compare plan: 4 fine-tunes" in out and "estimated:" in out
    assert result.methods == [] and not (tmp_path / "cmp" / "random").exists()
    assert result.plan["rates"]["train"] > 0 and result.plan["eval_tokens"] > 0


def test_a_changed_pool_scores_again(demo_files_two_pools, tiny_lm_path, tmp_path):
    """The shared scores belong to one pool: resuming into the same folder with another pool recomputes them, and
    every step method selects from the new pool."""
    out = tmp_path / "cmp"
    common = dict(eval=[demo_files_two_pools["eval"]], methods=["superfiltering"], budget=4, train=False,
                  model_name_or_path=str(tiny_lm_path), output_dir=str(out), **TRAIN)
    first = run_compare(CompareConfig(pool=[demo_files_two_pools["a"]], **common))
    scored_a = json.loads((out / "scores" / "ifd" / "stage.json").read_text())["key"]
    second = run_compare(CompareConfig(pool=[demo_files_two_pools["b"]], **common))
    scored_b = json.loads((out / "scores" / "ifd" / "stage.json").read_text())["key"]
    assert scored_a != scored_b
    assert first.pool_composition != second.pool_composition
    (sf,) = second.runs("superfiltering")
    assert sf.status == "ok" and not sf.reused
    assert set(sf.composition) == set(second.pool_composition)


@pytest.fixture()
def demo_files_two_pools(tmp_path):
    a, b, e = tmp_path / "pool_a.json", tmp_path / "pool_b.json", tmp_path / "eval.json"
    make_demo_dataset(n=20, seed=1, corrupt_fraction=0.0).to_json(str(a), lines=False)
    make_demo_dataset(n=20, seed=2, corrupt_fraction=0.0).to_json(str(b), lines=False)
    make_demo_dataset(n=4, seed=3, corrupt_fraction=0.0).to_json(str(e), lines=False)
    return {"a": str(a), "b": str(b), "eval": str(e)}


def test_cli_dry_run_with_a_token_budget_and_the_help_example(files, tiny_lm_path, tmp_path, capsys):
    """The newcomer's first try: the --help example's `--set learning_rate=1e-4` is a float, and --dry-run stops
    after the plan."""
    from hf_select.cli import main

    argv = ["compare", "--pool", files["pool"], "--eval", files["eval"], "--methods", "random,longest",
            "--budget-tokens", "100", "--eval-max-length", "64", "--model", str(tiny_lm_path), "--dry-run",
            "--output", str(tmp_path / "cmp"), "--set", "learning_rate=1e-4", "--set", "max_length=48"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "compare plan: 6 fine-tunes" in out and "100 supervised tokens" in out
    assert not (tmp_path / "cmp" / "random").exists()
    assert main([*argv[:-2], "--set", "random_seeds=five"]) == 2
    assert "--set random_seeds=five: expected int" in capsys.readouterr().err


def test_a_target_set_that_asks_an_eval_question_is_an_error(files, tmp_path):
    """Target-aware methods must not be tuned to the eval: the target set is checked against every eval set."""
    config = CompareConfig(pool=[files["pool"]], eval=[files["eval"], files["overlap"]], methods=["target"],
                           target=files["overlap"], budget=4, model_name_or_path="unused",
                           output_dir=str(tmp_path / "cmp"), **TRAIN)
    with pytest.raises(HFSelectError, match=r"asks questions of the eval sets \{'overlap': 2\}"):
        run_compare(config)
    with pytest.raises(ValueError, match=r"CompareConfig.target is required by \['loss_reduction'\]"):
        CompareConfig(pool=["a.json"], eval=["e.json"], methods="random,loss_reduction", output_dir="/tmp/x")
