"""Caching you can see: ``hf-select score`` says when it reuses an earlier run and where, ``--no-cache`` scores
afresh (and still leaves resumable shards), and no command writes into its input folder."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk

from hf_select.cli import main
from hf_select.scoring.ifd import IFDConfig, IFDScorer

REUSED = "reusing the scores of an earlier identical run"


@pytest.fixture()
def alpaca_file(tmp_path):
    rows = [{"instruction": f"Add {i} and 1", "input": "", "output": f"The sum is {i + 1}."} for i in range(13)]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    return path


def _score(alpaca_file, tiny_lm_path, out, *extra):
    return main(["score", "ifd", "--dataset", str(alpaca_file), "--model", str(tiny_lm_path), "--output", str(out),
                 "--template", "plain", "--shard-size", "5", *extra])


def _shards(folder):
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("shard-*.parquet"))}


def test_score_says_when_it_reuses_and_no_cache_scores_afresh(alpaca_file, tiny_lm_path, tmp_path, capsys):
    assert _score(alpaca_file, tiny_lm_path, tmp_path / "a") == 0
    first = capsys.readouterr()
    assert REUSED not in first.err and "resuming" not in first.err
    kept = [line for line in first.out.splitlines() if line.startswith("scores kept in ")]
    assert len(kept) == 1, first.out
    folder = Path(kept[0].removeprefix("scores kept in ").split(" (")[0])
    before = _shards(folder)
    assert len(before) == 3  # 13 rows in shards of 5

    assert _score(alpaca_file, tiny_lm_path, tmp_path / "b") == 0
    second = capsys.readouterr()
    lines = [line for line in second.err.splitlines() if REUSED in line]
    assert len(lines) == 1, second.err
    assert str(folder) in lines[0] and "13 rows, 3 shards" in lines[0] and "--no-cache" in lines[0]
    assert "scores kept in" not in second.out
    assert _shards(folder) == before  # reused, not rewritten

    assert _score(alpaca_file, tiny_lm_path, tmp_path / "c", "--no-cache") == 0
    third = capsys.readouterr()
    assert REUSED not in third.err and "scores kept in" in third.out
    after = _shards(folder)
    assert set(after) == set(before) and all(after[k] > before[k] for k in before)  # every shard written again
    a, c = load_from_disk(str(tmp_path / "a")), load_from_disk(str(tmp_path / "c"))
    assert a["ifd"] == c["ifd"] and a["ifd_status"] == c["ifd_status"]

    assert _score(alpaca_file, tiny_lm_path, tmp_path / "d") == 0  # the fresh shards are kept for the next run
    assert REUSED in capsys.readouterr().err


def test_score_says_when_it_resumes_a_stopped_run(tiny_lm_path, tmp_path, capsys, caplog):
    ds = Dataset.from_list([{"instruction": f"Name {i}", "input": "", "output": f"It is {i}."} for i in range(13)])
    run_dir = tmp_path / "run"
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template="plain"))
    scorer.score(ds, shard_size=5, run_dir=run_dir, progress=False)
    assert scorer.last_run is not None and not scorer.last_run.reused and scorer.last_run.folder == run_dir
    (run_dir / "shard-000001.parquet").unlink()  # as if the run had been stopped before its second shard
    capsys.readouterr()
    scorer.score(ds, shard_size=5, run_dir=run_dir)
    line = [x for x in capsys.readouterr().err.splitlines() if "resuming" in x]
    assert len(line) == 1 and "8 of 13 rows (2 of 3 shards) already scored in " + str(run_dir) in line[0]
    assert (scorer.last_run.reused_shards, scorer.last_run.reused_rows) == (2, 8)
    with caplog.at_level(logging.INFO, logger="hf_select.scoring.base"):  # progress=False: logged, not printed
        scorer.score(ds, shard_size=5, run_dir=run_dir, progress=False)
    assert REUSED not in capsys.readouterr().err
    assert any(REUSED in r.getMessage() and str(run_dir) in r.getMessage() for r in caplog.records)
    scorer.score(ds, shard_size=5, run_dir=run_dir, cache=False, progress=False)
    assert not scorer.last_run.reused


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_no_command_writes_into_its_input_folder(tiny_lm_path, tmp_path, capsys):
    made = tmp_path / "made"
    rows = [{"instruction": f"Write {i} words", "input": "", "output": " ".join(["word"] * (i % 7 + 1)),
             "ifd": 0.3 + (i * 37 % 50) / 100, "ifd_ppl": 0.3 + (i * 37 % 50) / 100, "ifd_status": "ok",
             "source": ["a", "b"][i % 2]} for i in range(40)]
    Dataset.from_list(rows).save_to_disk(str(made))
    scored = tmp_path / "scored"
    shutil.copytree(made, scored)  # a copy of a save_to_disk folder, as a user's input
    before = _listing(scored)
    # a non-contiguous selection: datasets flattens its indices into a cache file next to the dataset's own files
    assert main(["select", "--dataset", str(scored), "--output", str(tmp_path / "chosen"),
                 "--step", "{step: top, column: ifd, fraction: 0.25}"]) == 0
    assert _listing(scored) == before
    chosen = tmp_path / "chosen"
    chosen_before = _listing(chosen)
    assert main(["report", "--dataset", str(scored), "--selection", str(chosen), "--output",
                 str(tmp_path / "report")]) == 0
    assert _listing(scored) == before and _listing(chosen) == chosen_before
    assert main(["score", "ifd", "--dataset", str(scored), "--model", str(tiny_lm_path), "--output",
                 str(tmp_path / "rescored"), "--template", "plain", "--limit", "30"]) == 0
    assert _listing(scored) == before
    assert len(load_from_disk(str(tmp_path / "rescored"))) == 30
    capsys.readouterr()
