"""select(): pipelines of steps, provenance, dropped rows, save/load, the registry and the command line."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from datasets import Dataset

from hf_select.cli import main
from hf_select.errors import HFSelectError
from hf_select.selection import STEPS, SelectionResult, Step, StepResult, k_center_greedy, register_step, select

NAN = float("nan")


def scored_rows(n: int = 120, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    ifd = rng.uniform(0.3, 1.3, size=n)
    status = ["ok" if i % 13 else "prompt_too_long" for i in range(n)]
    ifd = [float(v) if s == "ok" else NAN for v, s in zip(ifd, status, strict=True)]
    quality = rng.normal(size=n).tolist()
    quality[min(5, n - 1)] = NAN
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    return Dataset.from_dict({
        "instruction": [f"Question {i}?" + " more" * int(rng.integers(0, 5)) for i in range(n)],
        "input": [""] * n,
        "output": [("answer " * int(rng.integers(1, 30))).strip() for _ in range(n)],
        "category": [["qa", "code", "math"][i % 3] for i in range(n)],
        "ifd": ifd,
        "ifd_status": status,
        "quality": quality,
        "response_tokens": rng.integers(1, 50, size=n).tolist(),
        "embedding": emb.tolist(),
    })


PIPELINE = [
    {"step": "threshold", "column": "quality", "min": 0.0},
    {"step": "ifd_rule", "top": 0.5, "of": "scored"},
    {"step": "kcenter", "k": 10, "column": "embedding"},
]


def test_pipeline_accounts_for_every_row():
    ds = scored_rows()
    res = select(ds, PIPELINE, seed=3)
    assert len(res.dataset) == 10 and res.row_ids == sorted(res.row_ids)
    assert list(res.dataset["_row_id"]) == res.row_ids
    dropped_ids = list(res.dropped["_row_id"])
    assert sorted(dropped_ids + res.row_ids) == list(range(len(ds)))
    assert set(res.dropped.column_names) >= {"_row_id", "drop_step", "drop_step_index", "drop_reason", "ifd"}
    for entry in res.provenance:
        assert set(entry) >= {"step", "params", "seed", "rows_in", "rows_out", "dropped"}
        assert entry["rows_in"] - entry["rows_out"] == sum(entry["dropped"].values())
    assert [e["rows_in"] for e in res.provenance[1:]] == [e["rows_out"] for e in res.provenance[:-1]]
    reasons = res.dropped.to_pandas().groupby(["drop_step_index", "drop_reason"]).size().to_dict()
    for i, entry in enumerate(res.provenance):
        for reason, count in entry["dropped"].items():
            assert reasons[(i, reason)] == count
    assert res.provenance[0]["dropped"]["nan_score"] == 1
    assert res.provenance[2]["seed"] == 3 and res.provenance[0]["seed"] is None
    json.dumps(res.to_dict())
    # each dropped row's values are the input row's values
    row = res.dropped[0]
    assert ds[row["_row_id"]]["instruction"] == row["instruction"]


def test_kcenter_step_equals_the_function_on_the_surviving_rows():
    ds = scored_rows()
    first = select(ds, PIPELINE[:2])
    res = select(ds, PIPELINE, seed=4)
    x = np.asarray(first.dataset["embedding"], dtype=np.float32)
    picks = k_center_greedy(x, 10, seed=4)
    assert res.row_ids == sorted(first.row_ids[i] for i in picks)


def test_yaml_file_seed_and_step_seed(tmp_path):
    ds = scored_rows()
    cfg = tmp_path / "select.yaml"
    cfg.write_text("seed: 11\nsteps:\n  - {step: random, count: 7}\n  - {step: random, count: 3, seed: 5}\n")
    res = select(ds, cfg)
    assert [e["seed"] for e in res.provenance] == [11, 5]
    rng_ids = sorted(np.random.default_rng(11).permutation(len(ds))[:7].tolist())  # a prefix of one permutation
    second = sorted(rng_ids[i] for i in np.random.default_rng(5).permutation(7)[:3])
    assert res.row_ids == second
    assert select(ds, [Step("random", count=7)], seed=11).row_ids == rng_ids
    assert select(ds, [Step("random", count=7)], seed=12).row_ids != rng_ids


def test_longest_top_token_budget_dedup_kmeans_facility_steps():
    ds = scored_rows()
    longest = select(ds, [{"step": "longest", "count": 5}])
    tokens = np.asarray(ds["response_tokens"])
    assert sorted(tokens[longest.row_ids].tolist()) == sorted(tokens.tolist())[-5:]
    chars = select(ds.remove_columns("response_tokens"), [{"step": "longest", "fraction": 0.05}])
    lengths = [len(o) for o in ds["output"]]
    assert min(lengths[i] for i in chars.row_ids) >= sorted(lengths)[-6]
    budget = select(ds, [{"step": "token_budget", "budget": 200, "order_by": "quality"}])
    assert sum(tokens[budget.row_ids]) <= 200
    km = select(ds, [{"step": "kmeans_sample", "score_column": "quality", "n_clusters": 4, "per_cluster": 3}])
    assert 1 <= len(km) <= 12 and km.provenance[0]["dropped"].get("nan_score", 0) <= 1
    fl = select(ds, [{"step": "facility_location", "k": 8, "n_neighbors": 10}])
    assert len(fl) == 8 and fl.provenance[0]["info"]["objective"] > 0
    dup = ds.select([0, 1, 0, 2])
    assert select(dup, [{"step": "dedup_exact"}]).row_ids == [0, 1, 3]
    assert select(dup, [{"step": "dedup_near", "threshold": 0.999}]).row_ids == [0, 1, 3]


def test_kcenter_initial_column_keeps_seed_rows():
    ds = scored_rows(40)
    ds = ds.add_column("seed_set", [i < 5 for i in range(40)])
    res = select(ds, [{"step": "kcenter", "k": 6, "initial_column": "seed_set"}])
    assert set(range(5)) <= set(res.row_ids) and len(res) == 11
    x = np.asarray(ds["embedding"], dtype=np.float32)
    assert set(res.row_ids) - set(range(5)) == set(k_center_greedy(x, 6, initial=list(range(5))))
    by_ids = select(ds, [{"step": "kcenter", "k": 6, "initial_row_ids": [0, 1, 2, 3, 4]}])
    assert by_ids.row_ids == res.row_ids


def test_rows_without_embedding_are_counted():
    ds = Dataset.from_dict({"embedding": [[1.0, 0.0], None, [0.0, 1.0], [1.0, 1.0]],
                            "embedding_status": ["ok", "empty_text", "ok", "ok"]})
    res = select(ds, [{"step": "kcenter", "k": 2}])
    assert res.provenance[0]["dropped"]["no_embedding"] == 1 and len(res) == 2


def test_k_larger_than_rows_warns_and_keeps_all():
    ds = scored_rows(12)
    with pytest.warns(UserWarning, match="only 12 qualify"):
        res = select(ds, [{"step": "kcenter", "k": 50}])
    assert res.row_ids == list(range(12))


def test_empty_dataset_gives_an_empty_result(tmp_path):
    ds = scored_rows(3).select([])
    with pytest.warns(UserWarning, match="empty"):
        res = select(ds, PIPELINE)
    assert len(res.dataset) == 0 and len(res.dropped) == 0
    assert [e["rows_in"] for e in res.provenance] == [0, 0, 0]
    res.save(tmp_path / "empty")
    assert len(SelectionResult.load(tmp_path / "empty").dataset) == 0
    none_kept = select(scored_rows(6), [{"step": "threshold", "column": "quality", "min": 100.0}])
    none_kept.save(tmp_path / "none")
    again = SelectionResult.load(tmp_path / "none")
    assert again.row_ids == [] and len(again.dropped) == 6


def test_errors_name_the_step_and_the_fix():
    ds = scored_rows(10)
    with pytest.raises(HFSelectError, match="unknown step 'kcentre'"):
        select(ds, [{"step": "kcentre", "k": 3}])
    with pytest.raises(HFSelectError, match=r"step 1 \(threshold\): unknown parameter\(s\) \['minimum'\]"):
        select(ds, [{"step": "threshold", "column": "quality", "minimum": 0}])
    with pytest.raises(HFSelectError, match=r"^step 1 \(threshold\): the dataset has no column 'reward'"):
        select(ds, [{"step": "threshold", "column": "reward", "min": 0}])
    with pytest.raises(HFSelectError, match="'step' key"):
        select(ds, [{"column": "reward"}])
    with pytest.raises(HFSelectError, match="fraction"):
        select(ds, [{"step": "random", "fraction": 2.0}])


def test_existing_row_ids_are_kept():
    ds = scored_rows(20).add_column("_row_id", list(range(100, 120)))
    res = select(ds, [{"step": "random", "count": 4}], seed=1)
    assert all(100 <= i < 120 for i in res.row_ids)


def test_save_and_load_round_trip(tmp_path):
    ds = scored_rows()
    res = select(ds, PIPELINE)
    out = res.save(tmp_path / "chosen")
    again = SelectionResult.load(out)
    assert again.row_ids == res.row_ids and again.provenance == json.loads(json.dumps(res.provenance))
    assert len(again.dropped) == len(res.dropped)
    assert list(datasets.load_from_disk(str(out))["_row_id"]) == res.row_ids  # the folder is the subset itself
    meta = json.loads((out / "provenance.json").read_text())
    assert meta["selected_rows"] == 10 and meta["input_rows"] == len(ds)
    smaller = select(ds, [{"step": "random", "count": 2}])
    smaller.save(out)  # replaces the old folder whole
    assert SelectionResult.load(out).row_ids == smaller.row_ids
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left behind
    with pytest.raises(HFSelectError, match="not a saved selection"):
        SelectionResult.load(tmp_path)


def test_register_a_custom_step():
    @register_step("every_third")
    def every_third(dataset, *, offset: int = 0):
        keep = (np.arange(len(dataset)) + offset) % 3 == 0
        return StepResult.from_mask(keep, {"not_third": ~keep})

    try:
        res = select(scored_rows(9), [{"step": "every_third", "offset": 1}])
        assert res.row_ids == [2, 5, 8] and res.provenance[0]["dropped"] == {"not_third": 6}
        with pytest.raises(ValueError, match="already registered"):
            register_step("every_third", lambda dataset: None)
    finally:
        STEPS.pop("every_third", None)


def test_a_step_that_forgets_rows_gets_not_selected():
    @register_step("forgetful")
    def forgetful(dataset):
        return StepResult(np.array([0]), {})

    try:
        res = select(scored_rows(4), [{"step": "forgetful"}])
        assert res.provenance[0]["dropped"] == {"not_selected": 3}
    finally:
        STEPS.pop("forgetful", None)


def test_cli_select(tmp_path, capsys):
    ds = scored_rows()
    ds.save_to_disk(str(tmp_path / "scored"))
    cfg = tmp_path / "select.yaml"
    cfg.write_text(json.dumps(PIPELINE))
    code = main(["select", "--config", str(cfg), "--dataset", str(tmp_path / "scored"), "--output",
                 str(tmp_path / "chosen"), "--seed", "3"])
    assert code == 0
    assert SelectionResult.load(tmp_path / "chosen").row_ids == select(ds, PIPELINE, seed=3).row_ids
    assert "| 3 | kcenter |" in capsys.readouterr().out
    code = main(["select", "--step", "{step: threshold, column: nope, min: 0}", "--dataset",
                 str(tmp_path / "scored"), "--output", str(tmp_path / "x")])
    assert code == 2 and "no column 'nope'" in capsys.readouterr().err
    code = main(["select", "--step", "{step: random, count: 1}", "--dataset", str(tmp_path / "scored"),
                 "--output", str(tmp_path / "scored")])
    assert code == 2 and "overwrite the input" in capsys.readouterr().err
