"""``--dry-run``: the cost preview prints rows, tokens, forward passes, fine-tunes and an estimated time, and writes
nothing; its counts match a real run's; an unreadable file is one error line. Progress moves per model batch."""

from __future__ import annotations

from hf_select.cli import main
from hf_select.scoring.batching import on_each_batch
from hf_select.scoring.ifd import IFDScorer


def _score_args(tiny_lm_path, out, *extra: str) -> list[str]:
    return ["score", "ifd", "--dataset", "demo:60", "--model", str(tiny_lm_path), "--output", str(out),
            "--template", "chat", "--shard-size", "32", *extra]


def test_score_dry_run_prints_the_plan_writes_nothing_and_counts_like_the_real_run(tiny_lm_path, tmp_path,
                                                                                   capsys, monkeypatch):
    scores = tmp_path / "scores"
    monkeypatch.setenv("HF_SELECT_SCORES_DIR", str(scores))
    out = tmp_path / "out"
    assert main(_score_args(tiny_lm_path, out, "--dry-run")) == 0
    printed = capsys.readouterr().out
    assert not out.exists() and not scores.exists()
    line = next(x for x in printed.splitlines() if x.strip().startswith("score ifd"))
    assert "60 rows" in line and "120 forward passes" in line and "timed on 32 rows" in line
    assert "estimated time here: ~" in printed
    tokens = int(line.split("rows, ")[1].split(" tokens")[0].replace(",", ""))

    passes: list[int] = []
    with on_each_batch(passes.append):
        assert main(_score_args(tiny_lm_path, out)) == 0
    assert out.exists()
    # rows without a response (status empty_response) make no pass; every other row makes two
    assert 0.85 * 120 <= sum(passes) <= 120
    from datasets import load_from_disk

    scored = load_from_disk(str(out))
    scored_tokens = sum(scored["response_tokens"])
    assert scored_tokens < tokens  # the estimate counts prompt and response tokens, the scores only the response's


def test_dry_run_on_an_unreadable_file_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "notes.json"
    bad.write_text("this is { not json")
    assert main(["score", "ifd", "--dataset", str(bad), "--output", str(tmp_path / "o"), "--dry-run"]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("hf-select: error:")]
    assert len(err) == 1 and "notes.json" in err[0]
    assert not (tmp_path / "o").exists()


def test_the_progress_bar_moves_per_batch_not_per_shard(tiny_lm_path, tmp_path, monkeypatch):
    from datasets import Dataset

    from hf_select.demo import make_demo_dataset
    from hf_select.scoring.base import BaseScorer
    from hf_select.scoring.ifd import IFDConfig

    updates: list[float] = []

    class Bar:
        def update(self, n):
            updates.append(n)

        def close(self):
            pass

    monkeypatch.setattr(BaseScorer, "_progress_bar", lambda self, total, initial: Bar())
    pool: Dataset = make_demo_dataset(n=40, seed=0)
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template="chat", max_batch_size=4))
    scorer.score(pool, shard_size=40, run_dir=tmp_path / "r")
    assert len(updates) > 2 and sum(updates) == 40  # one shard, many steps


def test_recipe_dry_run_plans_the_scoring_and_the_fine_tune_and_writes_nothing(tiny_lm_path, tmp_path, capsys):
    from hf_select.recipes.superfilter import main as superfilter

    out = tmp_path / "run"
    code = superfilter(["--dataset_name", "demo:24", "--output_dir", str(out), "--model_name_or_path",
                        str(tiny_lm_path), "--ifd_model_name_or_path", str(tiny_lm_path), "--ifd_fraction", "0.25",
                        "--max_length", "64", "--num_train_epochs", "2", "--per_device_train_batch_size", "2",
                        "--precision", "fp32", "--dry_run", "true"])
    assert code == 0
    printed = capsys.readouterr().out
    assert not out.exists()
    assert "dry run: 24 rows" in printed
    assert "48 forward passes" in printed  # IFD: two passes per row
    assert "fine-tune train" in printed and "6 rows" in printed and "x 2 epochs" in printed
