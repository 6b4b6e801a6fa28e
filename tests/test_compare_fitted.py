"""InstructMining fitted on a comparison's own fine-tunes (``instructmining_fit``) and the dev set it is fitted to."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_select.compare import CompareConfig, run_compare
from hf_select.compare.fitted import (
    FIT_COLUMNS,
    experiments,
    fit_from_experiments,
    pool_indicators,
    subset_means,
)
from hf_select.compare.results import MethodResult
from hf_select.demo import make_demo_dataset
from hf_select.errors import HFSelectError
from hf_select.scoring.rule import PRED_COLUMN, InstructMiningRule
from hf_select.selection import SelectionResult
from hf_select.stages import load_stage_dataset

TRAIN = dict(num_train_epochs=1, per_device_train_batch_size=4, per_device_eval_batch_size=8, max_length=48,
             learning_rate=1e-3, precision="fp32", logging_steps=1, score_max_length=64, report=False,
             eval_max_length=96)


# -- no models ----------------------------------------------------------------------------------------------------
def test_subset_means_ignore_missing_values_and_experiments_skip_what_is_not_one():
    ind = {"ind_ppl": np.array([1.0, np.nan, 3.0]), "ind_mtld": np.array([np.nan, np.nan, np.nan])}
    assert subset_means(ind, [0, 1, 2]) == {"ind_ppl": 2.0, "ind_mtld": pytest.approx(float("nan"), nan_ok=True)}
    runs = [MethodResult("random", "random (seed 0)", dev_loss=1.5), MethodResult("full", "full", dev_loss=1.0),
            MethodResult("longest", "longest", status="error"), MethodResult("longest_gated", "longest_gated"),
            MethodResult("instructmining_fit", "instructmining_fit", dev_loss=1.2)]
    ids = {r.label: [0, 2] for r in runs}
    found = experiments(runs, ids, ind)
    assert [e["label"] for e in found] == ["random (seed 0)"]  # full, failed, no dev loss, fitted: not experiments


def test_the_fit_is_least_squares_of_log_dev_loss_on_the_subset_means():
    rng = np.random.default_rng(0)
    found = []
    for i in range(8):
        means = {c: float(rng.normal()) for c in FIT_COLUMNS}
        log_loss = 0.7 + 0.1 * means["ind_ppl"] - 0.05 * means["ind_knn6"] + 0.01 * rng.normal()
        found.append({"label": str(i), "means": means, "dev_loss": math.exp(log_loss)})
    rule = fit_from_experiments(found)
    # brute force: the normal equations
    x = np.array([[1.0] + [e["means"][c] for c in FIT_COLUMNS] for e in found])
    y = np.log([e["dev_loss"] for e in found])
    beta = np.linalg.solve(x.T @ x, x.T @ y)
    assert rule.intercept == pytest.approx(beta[0], abs=1e-8)
    assert [rule.coefficients[c] for c in FIT_COLUMNS] == pytest.approx(list(beta[1:]), abs=1e-8)
    assert rule.fit["n_experiments"] == 8 and rule.fit["experiments"] == [str(i) for i in range(8)]


def test_too_few_fine_tunes_is_an_error_that_says_how_many_it_needs():
    found = [{"label": str(i), "means": {c: float(i) for c in FIT_COLUMNS}, "dev_loss": 1.0} for i in range(3)]
    with pytest.raises(HFSelectError, match="needs at least 5.*random_seeds"):
        fit_from_experiments(found)


def test_the_fitted_method_needs_a_dev_set_and_training():
    with pytest.raises(ValueError, match="dev is required"):
        CompareConfig(pool=["a"], eval=["e"], methods="random,instructmining_fit", output_dir="/tmp/c")
    with pytest.raises(ValueError, match="train=False"):
        CompareConfig(pool=["a"], eval=["e"], methods="random,instructmining_fit", dev="d.json", train=False,
                      output_dir="/tmp/c")


# -- end to end on a tiny model -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fitted-data")
    pool = make_demo_dataset(n=30, seed=1, corrupt_fraction=0.0)
    pool = pool.add_column("source", ["a" if i % 3 else "b" for i in range(len(pool))])
    pool.to_json(str(d / "pool.json"), lines=False)
    make_demo_dataset(n=5, seed=3, corrupt_fraction=0.0).to_json(str(d / "heldout.json"), lines=False)
    make_demo_dataset(n=6, seed=5, corrupt_fraction=0.0).to_json(str(d / "dev.json"), lines=False)
    return {"pool": str(d / "pool.json"), "eval": str(d / "heldout.json"), "dev": str(d / "dev.json")}


@pytest.fixture(scope="module")
def fitted(files, tiny_lm_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("fitted-out") / "cmp"
    config = CompareConfig(pool=[files["pool"]], eval=[files["eval"]], dev=files["dev"], budget_tokens=120,
                           methods=["instructmining_fit", "random", "longest", "random_per_source",
                                    "longest_per_source"], random_seeds=3,
                           model_name_or_path=str(tiny_lm_path), embed_model_name_or_path=str(tiny_lm_path),
                           output_dir=str(out), **TRAIN)
    return config, run_compare(config)


def test_the_fitted_method_runs_last_on_every_other_runs_dev_loss(fitted):
    config, result = fitted
    assert [m.method for m in result.methods][-1] == "instructmining_fit"  # asked first, run last
    fit = result.runs("instructmining_fit")[0]
    assert fit.status == "ok", fit.error
    others = [m for m in result.methods if m.method != "instructmining_fit"]
    assert all(m.dev_loss is not None and m.dev_loss > 0 for m in result.methods)
    assert set(result.eval_sets[0]) and "dev" not in {e["name"] for e in result.eval_sets}
    assert "dev" not in result.base_loss and result.dev["base_loss"] > 0
    rule = fit.diagnostics["rule"]
    assert rule["fit"]["experiments"] == [m.label for m in others]
    # brute force: the fit from the runs' own selections and dev losses, over indicators computed again
    scored = load_stage_dataset(f"{config.output_dir}/scores/embed")
    ind = pool_indicators(scored)
    found = []
    for m in others:
        ids = SelectionResult.load(f"{m.output_dir}/selection/selection").row_ids
        found.append({"label": m.label, "means": subset_means(ind, ids), "dev_loss": m.dev_loss})
    again = fit_from_experiments(found)
    assert again.intercept == pytest.approx(rule["intercept"], rel=1e-6)
    # the chosen rows are the pool ranked by the rule's predicted loss, lowest first
    pred = InstructMiningRule.from_dict(rule).predict(ind)
    order = [int(i) for i in np.argsort(pred, kind="stable")]
    chosen = SelectionResult.load(f"{fit.output_dir}/selection/selection")
    assert sorted(chosen.row_ids) == sorted(order[: len(chosen.row_ids)])
    assert PRED_COLUMN in chosen.dataset.column_names


def test_the_table_shows_the_dev_losses_and_the_rule_apart_from_the_verdicts(fitted):
    _, result = fitted
    text = result.markdown()
    assert "Dev set `" in text and "gives no verdict" in text
    assert "instructmining_fit's fitted rule: log dev loss = " in text
    assert "loss dev" not in text  # never a column of the table


def test_a_dev_set_that_asks_an_eval_question_is_an_error(files, tiny_lm_path, tmp_path):
    config = CompareConfig(pool=[files["pool"]], eval=[files["eval"]], dev=files["eval"], methods=["random"],
                           model_name_or_path=str(tiny_lm_path), output_dir=str(tmp_path / "c"), **TRAIN)
    with pytest.raises(HFSelectError, match="dev .* asks questions of the eval sets"):
        run_compare(config)


def test_a_dev_set_that_asks_a_pool_question_is_an_error(files, tiny_lm_path, tmp_path):
    config = CompareConfig(pool=[files["pool"]], eval=[files["eval"]], dev=files["pool"], methods=["random"],
                           model_name_or_path=str(tiny_lm_path), output_dir=str(tmp_path / "c"), **TRAIN)
    with pytest.raises(HFSelectError, match="asks 30 questions of the pool"):
        run_compare(config)


def test_the_dev_and_target_flags_and_the_recipe_size_search_on_the_dev_set():
    import argparse

    from hf_select.commands.compare import config_from_args
    from hf_select.compare import recipe_arguments

    ns = argparse.Namespace(pool=["a.json"], eval=["e.json"], output="/tmp/c", set=[], budget=None, methods=None,
                            model=None, pool_limit=None, eval_limit=None, random_seeds=None, budget_tokens=None,
                            eval_max_length=None, target="t.json", dev="d.json", dry_run=False)
    cfg = config_from_args(ns)
    assert (cfg.dev, cfg.target) == ("d.json", "t.json")
    cfg.method_args = {"instructmining": {"subset_sizes": [10, 20]}}
    args = recipe_arguments("instructmining", cfg, "/tmp/c/im", "/tmp/c/pool", 200, "e.json")
    assert args.grid_eval_dataset == "d.json" and args.subset_sizes == [10, 20]  # never the eval set
    cfg.dev = None
    # without a dev set the recipe searches on its eval set (and a warning says so)
    assert recipe_arguments("instructmining", cfg, "/tmp/c/im", "/tmp/c/pool", 200, "e.json").grid_eval_dataset \
        is None
