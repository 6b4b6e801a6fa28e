"""RDS+ pooling of a causal LM's hidden states: position-weighted mean (and the last token), against a hand
computation on the tiny LM, one text at a time (no padding) and in padded batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_select.errors import HFSelectError
from hf_select.scoring.base import config_to_dict
from hf_select.scoring.embed import EmbedConfig, Embedder, pool_hidden

ROWS = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5"},
    {"instruction": "Reverse the string hello, then explain each step you took in a few words.", "input": "hello",
     "output": "olleh"},
    {"instruction": "Sort the list", "input": "[3, 1, 2]", "output": "[1, 2, 3]"},
]


def hand_pool(path, texts, pooling):
    """The RDS+ definition written out: last hidden state h_1..h_T of each text alone, weights t / sum(1..T)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tok(t)["input_ids"]])
            h = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].double().numpy()
            n = h.shape[0]
            if pooling == "weighted_mean":
                w = np.arange(1, n + 1, dtype=np.float64)
                out.append((w[:, None] * h).sum(0) / (n * (n + 1) / 2))
            else:
                out.append(h[-1])
    return np.stack(out)


def test_pool_hidden_by_hand():
    h = torch.tensor([[[1.0, 0.0], [2.0, 1.0], [4.0, 2.0], [8.0, 8.0]]])
    full = torch.ones(1, 4, dtype=torch.long)
    # weights 1/10, 2/10, 3/10, 4/10
    assert pool_hidden(h, full, "weighted_mean")[0].tolist() == pytest.approx([4.9, 4.0])
    padded = torch.tensor([[1, 1, 0, 0]])
    assert pool_hidden(h, padded, "weighted_mean")[0].tolist() == pytest.approx([5 / 3, 2 / 3])
    assert pool_hidden(h, padded, "mean")[0].tolist() == pytest.approx([1.5, 0.5])
    assert pool_hidden(h, padded, "last")[0].tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="pooling"):
        pool_hidden(h, full, "max")


@pytest.mark.parametrize("pooling", ["weighted_mean", "last"])
def test_causal_lm_pooling_matches_hand_computation(tiny_lm_path, pooling):
    ds = Dataset.from_list(ROWS)
    emb = Embedder(EmbedConfig(model_name_or_path=str(tiny_lm_path), backend="causal_lm", text="row",
                               template="plain", device="cpu", dtype="float32", pooling=pooling,
                               column="lm_embedding"))
    out = ds.map(emb, batched=True, batch_size=8)  # one padded batch: the padding must not count
    assert "lm_embedding" in out.column_names and "lm_embedding_status" in out.column_names
    assert "embedding" not in out.column_names
    assert out["lm_embedding_status"] == ["ok"] * 3
    from hf_select.scoring.embed import row_text

    texts = [row_text(r, "alpaca", "row", "plain") for r in ROWS]
    expected = hand_pool(tiny_lm_path, texts, pooling)
    got = np.asarray(out["lm_embedding"], dtype=np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    if pooling == "weighted_mean":  # and it is not the plain mean
        plain = Embedder(EmbedConfig(model_name_or_path=str(tiny_lm_path), backend="causal_lm", text="row",
                                     template="plain", device="cpu", dtype="float32"))
        mean = np.asarray(ds.map(plain, batched=True)["embedding"], dtype=np.float64)
        assert not np.allclose(mean, got, atol=1e-4)


def test_pooling_config_validation_and_keys():
    with pytest.raises(ValueError, match="EmbedConfig.pooling must be one of"):
        EmbedConfig(pooling="max")
    with pytest.raises(ValueError, match="backend='causal_lm' or pooling='mean'"):
        EmbedConfig(backend="sentence_transformers", pooling="weighted_mean")
    with pytest.raises(ValueError, match="EmbedConfig.column"):
        EmbedConfig(column="x_status")
    # the defaults leave the stage keys of earlier runs as they were
    assert "pooling" not in config_to_dict(EmbedConfig()) and "column" not in config_to_dict(EmbedConfig())
    assert config_to_dict(EmbedConfig(pooling="weighted_mean", column="lm_embedding"))["pooling"] == "weighted_mean"


def test_auto_backend_sentence_transformers_refuses_lm_pooling(tmp_path):
    (tmp_path / "modules.json").write_text("[]")
    emb = Embedder(EmbedConfig(model_name_or_path=str(tmp_path), pooling="weighted_mean"))
    with pytest.raises(HFSelectError, match="pooling='mean'"):
        emb.load()
