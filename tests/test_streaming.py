"""Streamed pools (``datasets.IterableDataset``): scored in shards written as they finish, stopped part way and
resumed after the last finished shard with the same scores as the in-memory pool; read from a jsonl file with
``streaming=True``; an empty stream is one error; recipes read ``dataset_streaming`` and ``dataset_config``."""

from __future__ import annotations

import json
import math

import pytest
from datasets import Dataset

from hf_select.demo import make_demo_dataset
from hf_select.errors import HFSelectError
from hf_select.io import load_rows
from hf_select.scoring.base import is_streamed
from hf_select.scoring.ifd import IFDConfig, IFDScorer
from hf_select.stages import load_source, materialize_stream, pool_memory

SHARD = 8


def _same_scores(a: Dataset, b: Dataset, columns) -> None:
    assert len(a) == len(b)
    for col in columns:
        for x, y in zip(a[col], b[col], strict=True):
            if isinstance(x, float):
                assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-6, abs=1e-9), col
            else:
                assert x == y, col


def _scorer(tiny_lm_path) -> IFDScorer:
    return IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template="chat"))


def test_a_stopped_stream_resumes_after_its_last_shard_with_the_in_memory_scores(tiny_lm_path, tmp_path,
                                                                                monkeypatch):
    pool = make_demo_dataset(n=36, seed=0)
    expected = _scorer(tiny_lm_path).score(pool, shard_size=SHARD, run_dir=tmp_path / "memory", progress=False)

    calls: list[int] = []
    real = IFDScorer._score_batch

    def stop_at_the_third_shard(self, batch):
        calls.append(len(next(iter(batch.values()))))
        if len(calls) == 3:
            raise KeyboardInterrupt("stopped part way")
        return real(self, batch)

    monkeypatch.setattr(IFDScorer, "_score_batch", stop_at_the_third_shard)
    run_dir = tmp_path / "stream"
    with pytest.raises(KeyboardInterrupt):
        _scorer(tiny_lm_path).score(pool.to_iterable_dataset(), shard_size=SHARD, run_dir=run_dir, progress=False)
    assert sorted(p.name for p in run_dir.glob("shard-*.parquet")) == ["shard-000000.parquet",
                                                                        "shard-000001.parquet"]
    monkeypatch.setattr(IFDScorer, "_score_batch", real)

    scorer = _scorer(tiny_lm_path)
    scored = scorer.score(pool.to_iterable_dataset(), shard_size=SHARD, run_dir=run_dir, progress=False)
    assert (scorer.last_run.shards, scorer.last_run.rows) == (5, 36)
    assert (scorer.last_run.reused_shards, scorer.last_run.reused_rows) == (2, 2 * SHARD)
    assert scored.column_names == expected.column_names
    _same_scores(scored, expected, expected.column_names)


def test_a_shard_whose_rows_changed_is_scored_again(tiny_lm_path, tmp_path):
    pool = make_demo_dataset(n=72, seed=0)
    run_dir = tmp_path / "stream"
    _scorer(tiny_lm_path).score(pool.to_iterable_dataset(), shard_size=SHARD, run_dir=run_dir, progress=False)
    rows = pool.to_list()
    rows[70]["output"] = "another answer"  # past the 64 rows the run's fingerprint reads: only the last shard differs
    scorer = _scorer(tiny_lm_path)
    scored = scorer.score(Dataset.from_list(rows).to_iterable_dataset(), shard_size=SHARD, run_dir=run_dir,
                          progress=False)
    assert (scorer.last_run.shards, scorer.last_run.reused_shards) == (9, 8)
    assert scored[70]["output"] == "another answer"


def test_a_streamed_jsonl_file_scores_like_the_file_read_whole(tiny_lm_path, tmp_path):
    rows = [{"instruction": f"Add {i} and 2.", "input": "", "output": f"{i + 2}" + " ok" * (i % 3)} for i in range(20)]
    rows[4]["output"] = ""
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stream = load_rows(path, streaming=True)
    scorer = _scorer(tiny_lm_path)
    scored = scorer.score(stream, shard_size=SHARD, run_dir=tmp_path / "s", progress=False)
    whole = _scorer(tiny_lm_path).score(load_rows(path), shard_size=SHARD, run_dir=tmp_path / "w", progress=False)
    _same_scores(scored, whole, whole.column_names)
    assert scored[4]["ifd_status"] == "empty_response"


def test_an_empty_stream_is_one_error(tiny_lm_path, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"instruction": "x", "output": "y"}) + "\n")
    empty = load_rows(path, streaming=True).filter(lambda row: False)
    with pytest.raises(HFSelectError, match="streamed pool has no rows"):
        _scorer(tiny_lm_path).score(empty, shard_size=SHARD, run_dir=tmp_path / "s", progress=False)
    with pytest.raises(HFSelectError, match="no rows"):
        materialize_stream(empty, str(path))
    assert not (tmp_path / "s").exists()


def test_recipes_stream_their_pool_and_take_a_dataset_config(tmp_path):
    from hf_select.recipes.arguments import RecipeArguments, parse_recipe_args

    args = parse_recipe_args(RecipeArguments, ["--dataset_name", "demo:30", "--output_dir", str(tmp_path / "r"),
                                               "--dataset_streaming", "true", "--dataset_config", "main",
                                               "--limit", "12"])
    assert (args.dataset_streaming, args.dataset_config) == (True, "main")
    stream = load_source(args)
    assert is_streamed(stream)
    rows = materialize_stream(stream, args.dataset_name)
    assert len(rows) == 12 and rows.to_list() == make_demo_dataset(n=30, seed=args.seed).select(range(12)).to_list()


def test_whole_pool_steps_say_which_columns_they_load():
    pool = Dataset.from_dict({"embedding": [[0.0, 1.0, 2.0]] * 4, "quality": [1.0, 2.0, 3.0, 4.0], "x": ["a"] * 4})
    loaded = pool_memory(pool, [{"step": "threshold", "column": "quality", "min": 2},
                                {"step": "kcenter", "k": 2, "column": "embedding"}])
    assert list(loaded) == ["quality", "embedding"]
    assert loaded["quality"] == 32 and loaded["embedding"] >= 4 * 3 * 8
