"""Resource faults: a (simulated) CUDA out-of-memory shrinks the batch and goes on; a full disk gives one clear
error line, keeps the finished shards, and the next run completes; generation that never stops is capped.
"""

from __future__ import annotations

import errno
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, load_from_disk

from hf_select.cli import main
from hf_select.scoring import ifd as ifd_module
from hf_select.scoring import runs as score_runs
from hf_select.scoring.ifd import IFDConfig, IFDScorer

SHARD = 4
ROWS = [{"instruction": f"Say {i} words.", "input": "", "output": " ".join(["word"] * (i % 6 + 1))} for i in range(14)]
ROWS[3]["output"] = "  "  # a row-level problem among the good rows


def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.json"
    Dataset.from_list(ROWS).to_json(str(path), lines=True)
    return path


def score_args(data: Path, model: Path, out: Path) -> list[str]:
    return ["score", "ifd", "--dataset", str(data), "--model", str(model), "--output", str(out), "--template", "chat",
            "--shard-size", str(SHARD), "--set", "max_tokens_per_batch=100000"]


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("hf-select: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


class OOMAbove:
    """Make a model's backbone raise CUDA's out-of-memory error for batches of more than ``limit`` sequences."""

    def __init__(self, model, limit: int):
        self.limit, self.sizes = limit, []
        backbone = model.base_model
        self.real = backbone.forward
        backbone.forward = self

    def __call__(self, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.sizes.append(int(ids.shape[0]))
        if ids.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        return self.real(*args, **kwargs)


def test_cuda_oom_shrinks_the_batch_through_the_cli(tiny_lm_path, tmp_path, monkeypatch):
    data = data_file(tmp_path)
    fp32 = ["--set", "dtype=float32"]  # batches of one must give the batched scores to 1e-5: exact fp32 arithmetic
    assert main([*score_args(data, tiny_lm_path, tmp_path / "ref"), *fp32]) == 0
    reference = load_from_disk(str(tmp_path / "ref"))
    patched = []
    real_load = ifd_module.load_causal_lm

    def load_with_small_memory(*args, **kwargs):
        model, tok = real_load(*args, **kwargs)
        patched.append(OOMAbove(model, limit=1))
        return model, tok

    monkeypatch.setattr(ifd_module, "load_causal_lm", load_with_small_memory)
    monkeypatch.setenv("HF_SELECT_SCORES_DIR", str(tmp_path / "other-scores"))  # no cache hit: score again
    assert main([*score_args(data, tiny_lm_path, tmp_path / "out"), *fp32]) == 0
    out = load_from_disk(str(tmp_path / "out"))
    sizes = patched[0].sizes
    assert max(sizes) > 1 and 1 in sizes  # a big batch failed, and the retries got down to single rows
    assert list(out["ifd_status"]) == list(reference["ifd_status"])
    assert out["ifd_status"].count("oom") == 0
    np.testing.assert_allclose(np.asarray(out["ifd"]), np.asarray(reference["ifd"]), rtol=1e-5)


def test_cuda_oom_in_the_other_scorers(tiny_lm_path, tiny_classifier_path):
    from hf_select.scoring.embed import EmbedConfig, Embedder
    from hf_select.scoring.indicators import IndicatorConfig, IndicatorScorer
    from hf_select.scoring.quality import QualityConfig, QualityScorer

    batch = Dataset.from_list(ROWS)[:]
    scorers = [
        (QualityScorer(QualityConfig(backend="reward", model_name_or_path=str(tiny_classifier_path))), "quality"),
        (Embedder(EmbedConfig(model_name_or_path=str(tiny_lm_path), backend="causal_lm")), "embedding"),
        (IndicatorScorer(IndicatorConfig(model_name_or_path=str(tiny_lm_path))), "ind_ppl"),
    ]
    for scorer, column in scorers:
        expected = scorer(batch)
        oom = OOMAbove(scorer.load()[0], limit=2)
        out = scorer(batch)
        assert max(oom.sizes) > 2 and min(oom.sizes) <= 2, column
        status = next(c for c in out if c.endswith("_status"))
        assert out[status] == expected[status] and "oom" not in out[status]
        np.testing.assert_allclose(np.asarray(out[column], dtype=float), np.asarray(expected[column], dtype=float),
                                   rtol=1e-4, atol=1e-6)


def test_a_row_that_never_fits_gets_status_oom(tiny_lm_path):
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path)))
    OOMAbove(scorer.load()[0], limit=0)
    out = scorer(Dataset.from_list(ROWS[:4])[:])
    assert out["ifd_status"] == ["oom", "oom", "oom", "empty_response"]
    assert all(math.isnan(v) for v in out["ifd"])


class DiskFullOnShard:
    """``pyarrow.parquet.write_table`` that fails like a full disk on the ``n``-th call, after half a file."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0
        self.real = score_runs.pq.write_table

    def __call__(self, table, where, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            Path(where).write_bytes(b"PAR1" + b"\0" * 64)
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return self.real(table, where, **kwargs)


def test_full_disk_while_scoring(tiny_lm_path, tmp_path, monkeypatch, capsys):
    data = data_file(tmp_path)
    monkeypatch.setenv("HF_SELECT_SCORES_DIR", str(tmp_path / "ref-scores"))
    assert main(score_args(data, tiny_lm_path, tmp_path / "ref")) == 0
    reference = load_from_disk(str(tmp_path / "ref"))
    monkeypatch.setenv("HF_SELECT_SCORES_DIR", str(tmp_path / "scores"))
    capsys.readouterr()

    monkeypatch.setattr(score_runs.pq, "write_table", DiskFullOnShard(3))
    assert main(score_args(data, tiny_lm_path, tmp_path / "out")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no space left on the device" in line.lower() and "shards are kept" in line
    (run,) = (tmp_path / "scores").glob("ifd-*")
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".parquet" or p.name.startswith(".")) == [
        "shard-000000.parquet", "shard-000001.parquet"]  # finished shards kept, no half shard left
    assert not (tmp_path / "out").exists()

    monkeypatch.undo()
    monkeypatch.setenv("HF_SELECT_SCORES_DIR", str(tmp_path / "scores"))
    scored = []
    real = IFDScorer._score_batch
    monkeypatch.setattr(IFDScorer, "_score_batch", lambda self, batch: scored.append(1) or real(self, batch))
    assert main(score_args(data, tiny_lm_path, tmp_path / "out")) == 0
    assert len(scored) == -(-len(ROWS) // SHARD) - 2
    out = load_from_disk(str(tmp_path / "out"))
    assert list(out["ifd_status"]) == list(reference["ifd_status"])
    np.testing.assert_array_equal(np.asarray(out["ifd"]), np.asarray(reference["ifd"]))


def test_full_disk_while_saving_the_output(tiny_lm_path, tmp_path, monkeypatch, capsys):
    data = data_file(tmp_path)
    real_save = Dataset.save_to_disk

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Dataset, "save_to_disk", full)
    assert main(score_args(data, tiny_lm_path, tmp_path / "out")) == 2
    assert "no space left" in one_error_line(capsys.readouterr().err).lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.json"]  # no output, no staging folder

    monkeypatch.setattr(Dataset, "save_to_disk", real_save)
    scored = []
    real = IFDScorer._score_batch
    monkeypatch.setattr(IFDScorer, "_score_batch", lambda self, batch: scored.append(1) or real(self, batch))
    assert main(score_args(data, tiny_lm_path, tmp_path / "out")) == 0
    assert scored == []  # every shard was finished before the disk filled up
    assert len(load_from_disk(str(tmp_path / "out"))) == len(ROWS)


def test_generation_that_never_stops_is_capped(tiny_lm_path, tiny_classifier_path):
    from hf_select.scoring.necessity import NecessityConfig, NecessityScorer, eos_token_ids

    scorer = NecessityScorer(NecessityConfig(
        model_name_or_path=str(tiny_lm_path), max_new_tokens=7, template="chat",
        quality={"backend": "reward", "model_name_or_path": str(tiny_classifier_path)}))
    model, tokenizer = scorer.load()
    never = eos_token_ids(model, tokenizer)

    def no_eos(module, inputs, logits):  # the model can never choose an end-of-answer token
        logits[..., never] = -math.inf
        return logits

    handle = model.get_output_embeddings().register_forward_hook(no_eos)
    try:
        out = scorer(Dataset.from_list(ROWS[:5])[:])
    finally:
        handle.remove()
    assert out["generated_tokens"] == [7] * 5
    assert out["necessity_status"] == ["no_eos"] * 5
    assert all(math.isfinite(v) for v in out["necessity"])  # the capped answer is still scored, and flagged


@pytest.mark.parametrize("value", [0, -3])
def test_unbounded_generation_settings_are_refused(value):
    from hf_select.scoring.necessity import NecessityConfig

    with pytest.raises(ValueError, match="max_new_tokens"):
        NecessityConfig(max_new_tokens=value)
