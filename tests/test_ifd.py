"""IFD scorer: batched scores equal a plain per-row computation; formats, templates, statuses, caching, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_select import IFDConfig, IFDScorer
from hf_select.formats import ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT
from hf_select.scoring import lm_loss
from hf_select.scoring.batching import token_budget_batches
from tests.conftest import shared_rows


def _per_row_ifd(model, tok, prompt: str, response: str, max_length: int) -> tuple[float, float]:
    """The reference computation, written plainly: two forward passes of batch one with full logits."""
    p = tok(prompt)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"][: max_length - len(p)]
    with torch.no_grad():
        ids = torch.tensor([p + r])
        labels = ids.clone()
        labels[0, : len(p)] = -100
        lc = model(input_ids=ids, labels=labels).loss.item()
        ids = torch.tensor([[tok.bos_token_id] + r])
        labels = ids.clone()
        labels[0, 0] = -100
        ld = model(input_ids=ids, labels=labels).loss.item()
    return lc, ld


def _alpaca_prompt(row):
    if row.get("input"):
        return ALPACA_PROMPT_INPUT.format(instruction=row["instruction"], input=row["input"])
    return ALPACA_PROMPT_NO_INPUT.format(instruction=row["instruction"])


@pytest.fixture(scope="module")
def tiny(tiny_lm_path):
    cfg = IFDConfig(
        model_name_or_path=str(tiny_lm_path), template="alpaca", max_length=384, dtype="float32", device="cpu",
        direct_prefix="bos",  # the reference below scores the response after the BOS
    )
    scorer = IFDScorer(cfg)
    model, tok = scorer.load()
    return scorer, model, tok


def test_batched_equals_per_row_on_real_alpaca(tiny):
    scorer, model, tok = tiny
    rows = shared_rows("train/alpaca_9k.json", 200)
    out = scorer(Dataset.from_list(rows)[:])
    assert out["ifd_status"].count("ok") == len(rows)
    for i, row in enumerate(rows):
        lc, ld = _per_row_ifd(model, tok, _alpaca_prompt(row), row["output"], 384)
        assert math.isclose(out["loss_conditioned"][i], lc, rel_tol=1e-4)
        assert math.isclose(out["loss_direct"][i], ld, rel_tol=1e-4)
        assert math.isclose(out["ifd"][i], lc / ld, rel_tol=1e-4)
        assert math.isclose(out["ifd_ppl"][i], math.exp(lc - ld), rel_tol=1e-4)


def test_fused_head_matches_full_logits(tiny):
    scorer, _, _ = tiny
    rows = [{"instruction": f"Count to {i}", "input": "", "output": " ".join(map(str, range(i)))} for i in (3, 9, 20)]
    fused = scorer(Dataset.from_list(rows)[:])
    plain = IFDScorer(IFDConfig(**{**scorer.config.__dict__, "fused_head": False})).set_model(*scorer.load())
    full = plain(Dataset.from_list(rows)[:])
    np.testing.assert_allclose(fused["ifd"], full["ifd"], rtol=1e-5)


@pytest.mark.parametrize("template", ["chat", "alpaca", "vicuna", "plain"])
def test_every_template_scores(tiny_lm_path, template):
    rows = [
        {"instruction": "Reverse abc", "input": "", "output": "cba"},
        {"instruction": "Add", "input": "2 3", "output": "5"},
    ]
    out = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template=template,
                              direct_prefix="bos"))(Dataset.from_list(rows)[:])
    assert out["ifd_status"] == ["ok", "ok"]
    assert all(np.isfinite(out["ifd"])) and all(t > 0 for t in out["response_tokens"])
    # direct_prefix="none" has no token left to score for a one-token answer ("5") after a text template; after the
    # chat template the answer ends in end-of-turn tokens, so it is scored ("auto" = "none" there, "bos" here)
    none = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template=template,
                               direct_prefix="none"))(Dataset.from_list(rows)[:])
    assert none["ifd_status"] == ["ok", "ok" if template == "chat" else "response_too_short"]
    default = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template=template))(Dataset.from_list(rows)[:])
    assert default["ifd"] == (none if template == "chat" else out)["ifd"]


@pytest.mark.parametrize(
    "rows",
    [
        [{"instruction": "Hi", "input": "", "output": "Hello"}],
        [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}],
        [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}],
        [{"prompt": "Hi", "completion": "Hello"}],
        [{"question": "Hi", "answer": "Hello"}],
    ],
)
def test_every_format_gives_the_same_score(tiny_lm_path, rows):
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template="chat"))
    reference = scorer({"instruction": ["Hi"], "input": [""], "output": ["Hello"]})
    out = scorer(Dataset.from_list(rows)[:])
    assert out["ifd_status"] == ["ok"]
    assert math.isclose(out["ifd"][0], reference["ifd"][0], rel_tol=1e-6)


def test_every_status(tiny_lm_path):
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), template="plain", max_length=32))
    batch = {
        "messages": [
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}],
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "   "}],
            [{"role": "user", "content": "long " * 60}, {"role": "assistant", "content": "x"}],
            [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "x"}],
            [{"role": "user", "content": "Hi"}],
            None,
        ]
    }
    out = scorer(batch)
    assert out["ifd_status"] == [
        "ok",
        "empty_response",
        "prompt_too_long",
        "unknown_role",
        "no_assistant_turn",
        "invalid_row",
    ]
    assert np.isfinite(out["ifd"][0])
    assert all(math.isnan(v) for v in out["ifd"][1:])
    assert out["response_tokens"][1:] == [0] * 5


def test_truncation_keeps_the_same_tokens_in_both_passes(tiny):
    scorer, model, tok = tiny
    row = {"instruction": "Write a lot", "input": "", "output": "word " * 400}
    out = scorer({k: [v] for k, v in row.items()})
    lc, ld = _per_row_ifd(model, tok, _alpaca_prompt(row), row["output"], 384)
    assert out["response_tokens"][0] == 384 - len(tok(_alpaca_prompt(row))["input_ids"])
    assert math.isclose(out["ifd"][0], lc / ld, rel_tol=1e-4)


def test_multi_turn_last_and_all(tiny_lm_path):
    msgs = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1 A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"},
    ]
    last = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), turns="last"))({"messages": [msgs]})
    every = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), turns="all"))({"messages": [msgs]})
    first = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path)))({"messages": [msgs[:2]]})
    assert math.isclose(every["ifd"][0], (last["ifd"][0] + first["ifd"][0]) / 2, rel_tol=1e-6)
    assert every["response_tokens"][0] == last["response_tokens"][0] + first["response_tokens"][0]


def test_reverse_ifd_columns(tiny_lm_path):
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), reverse=True))
    out = scorer({"instruction": ["Name a colour", "Hi"], "input": ["", ""], "output": ["Blue", ""]})
    assert out["ifd_reverse_status"][0] == "ok" and np.isfinite(out["ifd_reverse"][0])
    assert out["ifd_status"][1] == "empty_response"
    assert math.isclose(
        out["ifd_reverse_ppl"][0],
        math.exp(out["loss_reverse_conditioned"][0] - out["loss_reverse_direct"][0]),
        rel_tol=1e-6,
    )


def test_dataset_map_and_score_agree_and_keep_order(tiny_lm_path):
    rows = [{"instruction": f"Repeat {'x' * i}", "input": "", "output": "x" * i} for i in range(1, 30)]
    ds = Dataset.from_list(rows)
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path)))
    mapped = ds.map(scorer, batched=True, batch_size=7)
    scored = scorer.score(ds, shard_size=8, progress=False)
    assert scored["instruction"] == ds["instruction"]
    np.testing.assert_allclose(mapped["ifd"], scored["ifd"], rtol=1e-5)


def test_second_identical_call_is_a_cache_hit(tiny_lm_path, monkeypatch):
    ds = Dataset.from_list([{"instruction": "Hi", "input": "", "output": f"Hello {i}"} for i in range(10)])
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path)))
    first = scorer.score(ds, shard_size=4, progress=False)
    calls = []
    monkeypatch.setattr(IFDScorer, "_score_batch", lambda self, batch: calls.append(1))
    second = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path))).score(ds, shard_size=4, progress=False)
    assert calls == []
    assert first["ifd"] == second["ifd"]
    other = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), max_length=64))
    assert other.fingerprint(ds) != scorer.fingerprint(ds)


def test_interrupted_run_resumes_without_loss_or_duplicates(tiny_lm_path, tmp_path):
    ds = Dataset.from_list([{"instruction": "Hi", "input": "", "output": f"Hello {i}"} for i in range(20)])
    reference = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path))).score(
        ds, cache=False, progress=False, run_dir=tmp_path / "ref"
    )
    seen = []

    class Flaky(IFDScorer):
        def _score_batch(self, batch):
            if len(seen) == 2:
                raise KeyboardInterrupt
            seen.append(batch["output"][0])
            return super()._score_batch(batch)

    with pytest.raises(KeyboardInterrupt):
        Flaky(IFDConfig(model_name_or_path=str(tiny_lm_path))).score(
            ds, shard_size=5, run_dir=tmp_path / "run", progress=False
        )
    assert len(list((tmp_path / "run").glob("shard-*.parquet"))) == 2
    resumed_batches = []

    class Counting(IFDScorer):
        def _score_batch(self, batch):
            resumed_batches.append(batch["output"][0])
            return super()._score_batch(batch)

    out = Counting(IFDConfig(model_name_or_path=str(tiny_lm_path))).score(
        ds, shard_size=5, run_dir=tmp_path / "run", progress=False
    )
    assert resumed_batches == ["Hello 10", "Hello 15"]
    assert out["output"] == ds["output"]
    np.testing.assert_allclose(out["ifd"], reference["ifd"], rtol=1e-6)


def test_oom_halves_the_batch_and_records_unfittable_rows(tiny_lm_path, monkeypatch):
    rows = {"instruction": ["a", "b", "c", "d"], "input": [""] * 4, "output": ["x y", "y z", "z", "w"]}
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), dtype="float32"))  # batch-size-exact
    expected = scorer(rows)["ifd"]
    real = lm_loss.mean_target_losses
    sizes = []

    def flaky(model, items, pad, **kw):
        sizes.append(len(items))
        if len(items) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, items, pad, **kw)

    monkeypatch.setattr(lm_loss, "mean_target_losses", flaky)
    out = scorer(rows)
    # The 4 conditioned passes (after the cached template prefix) in one batch, the 4 direct passes in another; each
    # halves down to one sequence.
    assert sizes[:3] == [4, 2, 1] and sizes.count(4) == 2
    np.testing.assert_allclose(out["ifd"], expected, rtol=1e-5)

    def always(model, items, pad, **kw):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(lm_loss, "mean_target_losses", always)
    out = scorer(rows)
    assert out["ifd_status"] == ["oom"] * 4 and all(math.isnan(v) for v in out["ifd"])


def test_token_budget_batches_cover_everything_once():
    lengths = [5, 50, 7, 300, 1, 64, 64, 9]
    batches = token_budget_batches(lengths, max_tokens=128, max_rows=3)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 128


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="IFDConfig.template"):
        IFDConfig(template="llama")
    with pytest.raises(ValueError, match="IFDConfig.turns"):
        IFDConfig(turns="first")
    with pytest.raises(ValueError, match="IFDConfig.max_length"):
        IFDConfig(max_length=1)


def test_empty_dataset(tiny_lm_path):
    ds = Dataset.from_dict({"instruction": [], "input": [], "output": []})
    out = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path))).score(ds, progress=False)
    assert len(out) == 0 and "ifd" in out.column_names


def test_dataset_map_cache_hits_without_loading_the_model(tiny_lm_path, tmp_path):
    import json

    from datasets import load_dataset

    data = tmp_path / "rows.json"
    data.write_text(json.dumps([{"instruction": f"hi {i}", "input": "", "output": f"yo {i}"} for i in range(6)]))
    ds = load_dataset("json", data_files=str(data), split="train", cache_dir=str(tmp_path / "cache"))
    first = ds.map(IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path))), batched=True)
    again = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path)))
    second = ds.map(again, batched=True)
    assert second.cache_files == first.cache_files
    assert not again._loaded, "a cache hit must not load the model"
    assert second["ifd"] == first["ifd"]


def test_a_rerun_removes_half_written_shards_of_a_killed_run(tiny_lm_path, tmp_path):
    ds = Dataset.from_list([{"instruction": "Hi", "input": "", "output": f"Hello {i}"} for i in range(4)])
    run = tmp_path / "run"
    run.mkdir()
    stale = run / ".shard-000000.parquet.abc123.tmp"
    stale.write_bytes(b"half a parquet file")
    out = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path))).score(ds, run_dir=run, progress=False)
    assert not stale.exists()
    assert out["ifd_status"] == ["ok"] * 4
