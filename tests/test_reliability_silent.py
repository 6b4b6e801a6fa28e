"""No silent wrong results: each case here used to give a wrong answer (or lose the user's data) without an error.

A scorer given another model with ``set_model`` gets its own cache entry; ``cache=False`` removes only the scorer's
own files; the out-of-memory retry runs after the failed batch's memory is released; ``hf-select score`` refuses a
bad output path before it loads a model; a broken JSON Lines line does not hide the good lines' columns; a missing
subcommand and an unanswered Hub check are said, not skipped.
"""

from __future__ import annotations

import logging

import pytest

from hf_select import cli
from hf_select.scoring.embed import EmbedConfig, Embedder

# -- point 10: a missing subcommand, an unanswered Hub check --------------------------------------------------------


def test_a_missing_subcommand_module_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "no_such_command"))
    with pytest.raises(ImportError, match="no_such_command"):
        cli.build_parser()


def test_every_subcommand_is_registered():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(cli.COMMANDS)


def test_embedder_says_when_the_hub_check_fails(monkeypatch, caplog):
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("hf_select.models.hub_is_offline", lambda: False)  # "online", but the check fails
    monkeypatch.setattr("hf_select.scoring.embed.hub_is_offline", lambda: False, raising=False)
    monkeypatch.setattr(huggingface_hub, "file_exists", unreachable)
    with caplog.at_level(logging.WARNING, logger="hf_select"):
        backend = Embedder(EmbedConfig(model_name_or_path="someone/some-model")).resolved_backend()
    assert backend == "causal_lm"
    text = caplog.text
    assert "someone/some-model" in text and "backend" in text and "causal_lm" in text



# -- point 3: the out-of-memory retry runs after the failed batch's memory is released -----------------------------


def test_oom_retry_runs_after_the_failed_batch_is_released(monkeypatch):
    import gc
    import weakref

    import torch

    from hf_select.scoring import batching

    cleared: list[bool] = []

    def clear(garbage_collection: bool = False) -> None:
        cleared.append(garbage_collection)
        if garbage_collection:
            gc.collect()

    monkeypatch.setattr(batching, "clear_device_cache", clear, raising=False)
    allocations: list[weakref.ref] = []
    alive_at_retry: list[bool] = []

    def run(items: list[int]) -> int:
        alive_at_retry.extend(ref() is not None for ref in allocations)
        activations = torch.ones(len(items), 4096)  # the batch's memory, referenced only from this frame
        allocations.append(weakref.ref(activations))
        if len(items) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return int(activations.sum())

    out = batching.run_with_oom_retry(list(range(8)), run)
    assert [items for items, _ in out] == [[0, 1], [2, 3], [4, 5], [6, 7]]  # every item once, in order
    assert [value for _, value in out] == [2 * 4096] * 4
    assert alive_at_retry and not any(alive_at_retry)  # no failed batch's tensor was alive when a retry started
    assert cleared and all(cleared)  # the device cache was cleared (with garbage collection) before each retry


def test_oom_of_a_single_item_goes_to_on_oom_or_is_raised():
    import torch

    from hf_select.scoring.batching import run_with_oom_retry

    def run(items):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert run_with_oom_retry([0, 1], run, on_oom=lambda idx: "oom") == [([0], "oom"), ([1], "oom")]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_with_oom_retry([0, 1], run)
    with pytest.raises(ValueError):
        run_with_oom_retry([0], lambda items: (_ for _ in ()).throw(ValueError("not an OOM")))


# -- point 2: cache=False removes only the scorer's own files -------------------------------------------------------


def _alpaca(n: int, tag: str = "Hello"):
    from datasets import Dataset

    return Dataset.from_list([{"instruction": "Hi", "input": "", "output": f"{tag} {i}"} for i in range(n)])


def test_cache_false_refuses_a_run_dir_that_holds_other_files(tiny_lm_path, tmp_path):
    from hf_select.errors import HFSelectError
    from hf_select.scoring.ifd import IFDConfig, IFDScorer

    folder = tmp_path / "my-project"
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's own file")
    (folder / "data").mkdir()
    (folder / "data" / "rows.jsonl").write_text("{}\n")
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path)))
    with pytest.raises(HFSelectError, match="notes.txt"):
        scorer.score(_alpaca(4), run_dir=folder, cache=False, progress=False)
    assert (folder / "notes.txt").read_text() == "the user's own file"
    assert (folder / "data" / "rows.jsonl").is_file()
    with pytest.raises(HFSelectError, match="notes.txt"):  # with the cache on too: nothing is written there
        scorer.score(_alpaca(4), run_dir=folder, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["data", "notes.txt"]


def test_cache_false_removes_only_the_scorers_own_files(tiny_lm_path, tmp_path):
    from hf_select.scoring.ifd import IFDConfig, IFDScorer

    folder = tmp_path / "run"
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path)))
    first = scorer.score(_alpaca(4), run_dir=folder, shard_size=2, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["run.json", "shard-000000.parquet", "shard-000001.parquet"]
    seen = []

    class Counting(IFDScorer):
        def _score_batch(self, batch):
            seen.append(len(batch["output"]))
            return super()._score_batch(batch)

    again = Counting(IFDConfig(model_name_or_path=str(tiny_lm_path))).score(
        _alpaca(4), run_dir=folder, shard_size=2, cache=False, progress=False)
    assert seen == [2, 2]  # scored again, not read back
    assert list(again["ifd"]) == list(first["ifd"])


def test_a_run_dir_of_another_run_is_not_read_back(tiny_lm_path, tmp_path):
    from hf_select.scoring.ifd import IFDConfig, IFDScorer

    folder = tmp_path / "run"
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path)))
    scorer.score(_alpaca(4), run_dir=folder, shard_size=2, progress=False)
    other = _alpaca(4, tag="Goodbye")  # other rows, the same run_dir
    out = scorer.score(other, run_dir=folder, shard_size=2, progress=False)
    fresh = scorer.score(other, run_dir=tmp_path / "fresh", shard_size=2, progress=False)
    assert list(out["ifd"]) == list(fresh["ifd"])
    wider = scorer.score(other, run_dir=folder, shard_size=3, progress=False)  # another shard size, same folder
    # Other shards batch the rows otherwise, which changes fp32 rounding (about 1e-8); stale scores would differ more.
    assert list(wider["ifd"]) == pytest.approx(list(fresh["ifd"]), rel=1e-6)


# -- point 1: a model passed with set_model has its own fingerprint ---------------------------------------------------


@pytest.fixture(scope="module")
def other_lm():
    from hf_select.testing import make_tiny_lm

    model, tok = make_tiny_lm(seed=7)  # the same architecture and tokenizer, other weights
    return model, tok


def _ifd(path):
    from hf_select.scoring.ifd import IFDConfig, IFDScorer

    return IFDScorer(IFDConfig(model_name_or_path=str(path), template="chat", device="cpu"))


def test_score_with_set_model_does_not_return_the_configured_models_cache(tiny_lm_path, other_lm):
    ds = _alpaca(6)
    configured = _ifd(tiny_lm_path).score(ds, shard_size=3, progress=False)
    other = _ifd(tiny_lm_path).set_model(*other_lm)
    assert other.fingerprint(ds) != _ifd(tiny_lm_path).fingerprint(ds)
    got = other.score(ds, shard_size=3, progress=False)
    direct = _ifd(tiny_lm_path).set_model(*other_lm)(ds[:])  # the batched transform, no cache involved
    assert list(got["ifd"]) == pytest.approx(direct["ifd"], rel=1e-6)
    assert list(got["ifd"]) != pytest.approx(list(configured["ifd"]), rel=1e-3)


def test_dataset_map_with_set_model_does_not_reuse_the_configured_models_cache(tiny_lm_path, other_lm, tmp_path):
    from datasets import load_from_disk

    _alpaca(6).save_to_disk(str(tmp_path / "rows"))
    ds = load_from_disk(str(tmp_path / "rows"))  # on disk: Dataset.map caches its results
    configured = ds.map(_ifd(tiny_lm_path), batched=True)
    assert configured.cache_files  # the cache is really in use
    other = ds.map(_ifd(tiny_lm_path).set_model(*other_lm), batched=True)
    direct = _ifd(tiny_lm_path).set_model(*other_lm)(ds[:])
    assert list(other["ifd"]) == pytest.approx(direct["ifd"], rel=1e-6)
    assert list(other["ifd"]) != pytest.approx(list(configured["ifd"]), rel=1e-3)


def test_fingerprint_follows_the_weights_of_a_set_model(tiny_lm_path):
    import torch

    from hf_select.testing import make_tiny_lm

    model, tok = make_tiny_lm(seed=3)
    ds = _alpaca(2)
    scorer = _ifd(tiny_lm_path).set_model(model, tok)
    before = scorer.fingerprint(ds)
    assert _ifd(tiny_lm_path).set_model(*make_tiny_lm(seed=3)).fingerprint(ds) == before  # same weights, same name
    with torch.no_grad():
        model.model.norm.weight[0] += 1e-3  # one parameter, a little (as one fine-tuning step would)
    assert scorer.fingerprint(ds) != before


def test_embedder_with_set_model_does_not_return_the_configured_models_cache(tiny_lm_path, other_lm):
    import numpy as np

    cfg = EmbedConfig(model_name_or_path=str(tiny_lm_path), backend="causal_lm", text="instruction", device="cpu")
    ds = _alpaca(4)
    ds = ds.map(lambda r, i: {"instruction": f"Say hello number {i}"}, with_indices=True)
    configured = Embedder(cfg).score(ds, shard_size=2, progress=False)
    other = Embedder(cfg).set_model(*other_lm)
    assert other.fingerprint(ds) != Embedder(cfg).fingerprint(ds)
    got = other.score(ds, shard_size=2, progress=False)
    direct = Embedder(cfg).set_model(*other_lm)(ds[:])
    np.testing.assert_allclose(np.asarray(got["embedding"]), np.asarray(direct["embedding"]), rtol=1e-5)
    assert not np.allclose(np.asarray(got["embedding"]), np.asarray(configured["embedding"]))


# -- point 4: `hf-select score` checks the output path before it loads a model ---------------------------------------


def _rows_jsonl(path):
    import json

    path.write_text("".join(json.dumps({"instruction": f"Add {i} and 1.", "input": "", "output": str(i + 1)}) + "\n"
                            for i in range(3)))
    return path


@pytest.mark.parametrize("problem", ["output_is_the_input", "output_holds_the_input", "output_is_a_file",
                                     "output_below_a_file"])
def test_score_refuses_a_bad_output_before_loading_a_model(problem, tiny_lm_path, tmp_path, monkeypatch, capsys):
    from hf_select.scoring.ifd import IFDScorer

    loaded = []
    monkeypatch.setattr(IFDScorer, "load", lambda self: loaded.append(1) or (_ for _ in ()).throw(RuntimeError))
    folder = tmp_path / "data"
    folder.mkdir()
    data = _rows_jsonl(folder / "rows.jsonl")
    dataset, output = {
        "output_is_the_input": (folder, folder),
        "output_holds_the_input": (data, folder),
        "output_is_a_file": (data, tmp_path / "taken.txt"),
        "output_below_a_file": (data, tmp_path / "taken.txt" / "out"),
    }[problem]
    (tmp_path / "taken.txt").write_text("not a folder")
    code = cli.main(["score", "ifd", "--dataset", str(dataset), "--model", str(tiny_lm_path), "--output",
                     str(output), "--template", "chat"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("hf-select: error:")]
    assert len(lines) == 1 and "--output" in lines[0] and "Traceback" not in err
    assert loaded == []  # refused before any model was loaded or any row scored
    assert (tmp_path / "taken.txt").read_text() == "not a folder" and data.is_file()


# -- point 5: a broken JSON Lines line does not hide the good lines' columns -----------------------------------------


def test_a_broken_jsonl_line_keeps_the_other_lines_columns(tiny_lm_path, tmp_path, capsys):
    import json

    from datasets import load_from_disk

    from hf_select.io import load_rows

    good = [{"id": f"r{i}", "instruction": f"Add {i} and 1.", "input": "", "output": str(i + 1), "source": "mine"}
            for i in range(3)]
    lines = [json.dumps(good[0]), '{"id": "r-broken", "instruction": "cut off', json.dumps(good[1]), "null",
             json.dumps(good[2])]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    ds = load_rows(path)
    assert ds.column_names == ["id", "instruction", "input", "output", "source"]
    assert list(ds["id"]) == ["r0", None, "r1", None, "r2"]
    out = tmp_path / "out"
    assert cli.main(["score", "ifd", "--dataset", str(path), "--model", str(tiny_lm_path), "--output", str(out),
                     "--template", "chat"]) == 0, capsys.readouterr().err
    scored = load_from_disk(str(out))
    assert list(scored["id"]) == ["r0", None, "r1", None, "r2"] and list(scored["source"])[0] == "mine"
    assert list(scored["ifd_status"]) == ["ok", "invalid_row", "ok", "invalid_row", "ok"]
