"""The embed scorer: mean-pooled causal-LM states (tiny LM) and the real offline MiniLM (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_select.formats import RowError
from hf_select.scoring.embed import EmbedConfig, Embedder, row_text
from hf_select.scoring.registry import get_scorer_classes

ROWS = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5"},
    {"instruction": "Reverse the string hello, then explain each step you took in a few words.", "input": "hello",
     "output": "olleh"},
    {"instruction": "   ", "input": "", "output": "nothing to do"},
    {"instruction": "Sort the list", "input": "[3, 1, 2]", "output": "[1, 2, 3]"},
    {"instruction": None, "input": "", "output": "x"},
]


def manual_mean_pool(path, texts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tok(t)["input_ids"]])
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
            out.append(hidden[0].mean(0).numpy())
    return np.stack(out)


@pytest.mark.parametrize("text", ["instruction", "prompt", "row"])
def test_causal_lm_backend_is_the_mean_of_the_last_hidden_state(tiny_lm_path, text):
    ds = Dataset.from_list(ROWS)
    emb = Embedder(EmbedConfig(model_name_or_path=str(tiny_lm_path), backend="auto", text=text,
                               template="plain", device="cpu"))
    assert emb.resolved_backend() == "causal_lm"
    out = ds.map(emb, batched=True, batch_size=8)
    status = list(out["embedding_status"])
    assert status[4] == "invalid_row"
    assert status[2] == ("ok" if text == "row" else "empty_text")  # a blank instruction still has an answer
    ok = [i for i, s in enumerate(status) if s == "ok"]
    texts = [row_text(ROWS[i], "alpaca", text, "plain") for i in ok]
    expected = manual_mean_pool(tiny_lm_path, texts)  # one text at a time: no padding at all
    got = np.asarray([out[i]["embedding"] for i in ok], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert len(out[4]["embedding"]) == 64 and np.isnan(out[4]["embedding"]).all()  # NaN and a reason, never 0
    assert out.features["embedding"].feature.dtype == "float32"


def test_score_caches_and_layer_and_normalize(tiny_lm_path, tmp_path):
    ds = Dataset.from_list([ROWS[0], ROWS[1], ROWS[3], ROWS[0]])
    cfg = EmbedConfig(model_name_or_path=str(tiny_lm_path), text="prompt", template="plain", device="cpu",
                      normalize=True, batch_size=2)
    emb = Embedder(cfg)
    first = emb.score(ds, shard_size=2, run_dir=tmp_path / "run", progress=False)
    assert first.features["embedding"].feature.dtype == "float32"
    norms = [np.linalg.norm(v) for v in first["embedding"]]
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "run").glob("shard-*.parquet")) == ["shard-000000.parquet",
                                                                                "shard-000001.parquet"]
    again = Embedder(cfg)
    again._score_batch = None  # a cached run never scores again
    second = again.score(ds, shard_size=2, run_dir=tmp_path / "run", progress=False)
    np.testing.assert_allclose(np.asarray(second["embedding"]), np.asarray(first["embedding"]))
    other = Embedder(cfg, layer=1)
    assert other.fingerprint(ds) != emb.fingerprint(ds)
    layer1 = other.score(ds, progress=False)
    assert not np.allclose(np.asarray(layer1["embedding"]), np.asarray(first["embedding"]))


def test_a_batch_of_failed_rows_does_not_break_map(tiny_lm_path):
    ds = Dataset.from_list([ROWS[4], ROWS[2], ROWS[0]])  # the first batch holds only rows that fail
    emb = Embedder(EmbedConfig(model_name_or_path=str(tiny_lm_path), text="instruction", device="cpu"))
    out = ds.map(emb, batched=True, batch_size=2)
    assert list(out["embedding_status"]) == ["invalid_row", "empty_text", "ok"]
    from hf_select.selection import embedding_matrix

    x, rows = embedding_matrix(out)
    assert rows.tolist() == [2] and x.shape == (1, 64)


def test_batching_does_not_change_vectors(tiny_lm_path):
    ds = Dataset.from_list([ROWS[0], ROWS[1], ROWS[3]])
    cfg = EmbedConfig(model_name_or_path=str(tiny_lm_path), text="row", template="plain", device="cpu")
    together = ds.map(Embedder(cfg), batched=True, batch_size=4)
    alone = ds.map(Embedder(cfg, batch_size=1, max_tokens_per_batch=512), batched=True, batch_size=1)
    np.testing.assert_allclose(np.asarray(together["embedding"]), np.asarray(alone["embedding"]), atol=2e-5)


def test_row_text_modes_and_chat_prompt(tiny_lm_path):
    row = {"instruction": "Add 2 and 3.", "input": "quick", "output": "5"}
    assert row_text(row, "alpaca", "instruction") == "Add 2 and 3.\nquick"
    assert row_text(row, "alpaca", "response") == "5"
    assert row_text(row, "alpaca", "prompt", "alpaca").endswith("### Response:")
    assert row_text(row, "alpaca", "row", "plain") == "Add 2 and 3.\nquick\n5"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_path)
    chat = row_text(row, "alpaca", "prompt", "chat", tokenizer=tok)
    assert chat.startswith("<|im_start|>user") and chat.endswith("<|im_start|>assistant\n")
    conv = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    assert row_text(conv, "sharegpt", "instruction") == "Hi"
    with pytest.raises(RowError) as err:
        row_text({"instruction": "", "output": "x"}, "alpaca", "instruction")
    assert err.value.status == "empty_text"


def test_config_validation_and_registry():
    with pytest.raises(ValueError, match="backend"):
        EmbedConfig(backend="onnx")
    with pytest.raises(ValueError, match="text"):
        EmbedConfig(text="everything")
    with pytest.raises(ValueError, match="max_tokens_per_batch"):
        EmbedConfig(max_length=1024, max_tokens_per_batch=512)
    config_class, scorer_class = get_scorer_classes("embed")
    assert config_class is EmbedConfig and scorer_class is Embedder
    import hf_select

    assert isinstance(hf_select.embed, Embedder) and hf_select.EmbedConfig is EmbedConfig


def test_set_model_uses_a_loaded_causal_lm(tiny_lm_path):
    from hf_select.models import load_causal_lm

    model, tok = load_causal_lm(str(tiny_lm_path), device="cpu", dtype="float32")
    emb = Embedder(EmbedConfig(model_name_or_path="not-loaded", backend="causal_lm", template="plain"))
    emb.set_model(model, tok)
    out = emb({"instruction": ["Add 2 and 3."], "input": [""], "output": ["5"]})
    assert out["embedding_status"] == ["ok"] and len(out["embedding"][0]) == 64


@pytest.mark.slow
def test_real_offline_minilm(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = Dataset.from_list([
        {"instruction": "How do I bake bread?", "input": "", "output": "Mix flour, water, yeast; bake."},
        {"instruction": "What is a good recipe for baking bread at home?", "input": "", "output": "Knead, bake."},
        {"instruction": "Explain quantum entanglement.", "input": "", "output": "Correlated states."},
    ])
    emb = Embedder(EmbedConfig(device="cpu"))
    assert emb.resolved_backend() == "sentence_transformers"
    out = ds.map(emb, batched=True)
    x = np.asarray(out["embedding"], dtype=np.float64)
    assert x.shape == (3, 384) and list(out["embedding_status"]) == ["ok"] * 3
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-4)  # MiniLM ends with Normalize
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2  # the two bread questions are closer
