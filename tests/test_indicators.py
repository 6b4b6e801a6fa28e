"""InstructMining indicators (MTLD, KNN-k, lengths, perplexity, reward) and the linear rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from hf_select import (
    IndicatorConfig,
    IndicatorScorer,
    InstructMiningRule,
    QualityConfig,
    QualityScorer,
    fit_rule,
    score_indicators,
)
from hf_select.formats import encode_segment, row_to_messages
from hf_select.models import load_causal_lm
from hf_select.scoring.diversity import knn_distance, mtld, mtld_words
from hf_select.scoring.rule import indicator_means

ROWS = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5, so the answer is 5."},
    {"instruction": "Sort the list", "input": "[3, 1, 2]", "output": "The sorted list is [1, 2, 3]."},
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris is the capital of France."},
    {"instruction": "Reverse the string hello", "input": "", "output": "olleh"},
    {"instruction": "Say nothing", "input": "", "output": ""},
]


# -- MTLD -------------------------------------------------------------------------------------------------------------
def test_mtld_hand_computed():
    # forward: a b a -> TTR 2/3 <= .72, factor 1; b a b -> factor 2; a b: TTR 1, partial 0 => 8 / 2 = 4.
    # backward: the same.
    assert mtld("a b a b a b a b") == 4.0
    # forward: a a -> 1/2, factor 1; b c: partial 0 => 4 / 1 = 4.
    # backward: c b a a -> TTR 3/4 = .75 at the end: partial (1 - .75) / (1 - .72) = .892857 => 4 / .892857 = 4.48.
    assert mtld("a a b c") == pytest.approx((4 + 4 / (0.25 / 0.28)) / 2)
    assert mtld("a a b c") == pytest.approx(4.24)
    # A TTR equal to the threshold ends a factor: forward a b a b -> 2/4 = .5 <= .5, factor; c: partial 0 => 5.
    # backward c b a b a -> ends at 3/5 = .6: partial .4 / .5 = .8 => 5 / .8 = 6.25. Mean 5.625.
    assert mtld("a b a b c", threshold=0.5) == pytest.approx(5.625)
    # Case and punctuation are ignored: the cat the cat -> 4.
    assert mtld_words("The cat, the CAT!") == ["the", "cat", "the", "cat"]
    assert mtld("The cat, the CAT!") == 4.0
    # Conventions: all words distinct -> the word count; no words -> NaN.
    assert mtld("one two three") == 3.0
    assert math.isnan(mtld("  ...  "))
    assert mtld(["x", "x", "y"]) == mtld("x x y")
    with pytest.raises(ValueError, match="threshold"):
        mtld("a b", threshold=1.0)


# -- KNN-k ------------------------------------------------------------------------------------------------------------
def _brute_knn(x: np.ndarray, k: int, metric: str, reduce: str) -> np.ndarray:
    n = len(x)
    out = np.empty(n)
    for i in range(n):
        d = []
        for j in range(n):
            if i == j:
                continue
            if metric == "euclidean":
                d.append(math.sqrt(sum((a - b) ** 2 for a, b in zip(x[i], x[j], strict=True))))
            else:
                d.append(1 - float(np.dot(x[i], x[j]) / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))))
        d.sort()
        out[i] = d[k - 1] if reduce == "kth" else sum(d[:k]) / k
    return out


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("reduce", ["kth", "mean"])
def test_knn_matches_brute_force(metric, reduce):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    x[7] = x[3]  # an exact duplicate is a neighbour at distance 0, never itself
    expected = _brute_knn(x, 6, metric, reduce)
    got = knn_distance(x.tolist(), k=6, metric=metric, reduce=reduce)
    assert got == pytest.approx(expected, abs=1e-9)
    chunked = knn_distance(x, k=6, metric=metric, reduce=reduce, chunk_size=7)
    assert chunked == pytest.approx(expected, abs=1e-9)
    if metric == "euclidean" and reduce == "kth":
        assert knn_distance(x, k=1)[3] == 0.0 and knn_distance(x, k=1)[7] == 0.0


def test_knn_missing_embeddings_and_small_data(caplog):
    emb = [[0.0, 0.0], None, [3.0, 4.0], [float("nan"), 1.0], [6.0, 8.0]]
    got = knn_distance(emb, k=1)
    assert got[[0, 2, 4]].tolist() == [5.0, 5.0, 5.0]
    assert np.isnan(got[1]) and np.isnan(got[3])
    with caplog.at_level("WARNING"):
        lowered = knn_distance([[0.0], [1.0], [3.0]], k=6)
    assert lowered.tolist() == [3.0, 2.0, 3.0] and "lowered to 2" in caplog.text
    assert np.isnan(knn_distance([[1.0]], k=6)).all()
    with pytest.raises(ValueError, match="different lengths"):
        knn_distance([[1.0, 2.0], [1.0]], k=1)
    with pytest.raises(ValueError, match="metric must be one of"):
        knn_distance([[1.0], [2.0]], k=1, metric="manhattan")


# -- the scorer -------------------------------------------------------------------------------------------------------
def test_config_validation():
    with pytest.raises(ValueError, match=r"IndicatorConfig.knn_reduce must be one of \('kth', 'mean'\)"):
        IndicatorConfig(knn_reduce="max")
    with pytest.raises(ValueError, match="IndicatorConfig.k must be >= 1"):
        IndicatorConfig(k=0)
    with pytest.raises(ValueError, match="IndicatorConfig.quality must be None, a QualityConfig or a dict"):
        IndicatorConfig(quality="rm")
    assert IndicatorConfig(quality={"backend": "reward"}).quality.backend == "reward"
    assert "ind_reward" not in score_indicators.output_columns


def test_indicator_columns_match_hand_computations(tiny_lm_path, tiny_classifier_path):
    ds = Dataset.from_list(ROWS)
    cfg = IndicatorConfig(model_name_or_path=str(tiny_lm_path),
                          quality={"backend": "reward", "model_name_or_path": str(tiny_classifier_path)})
    scorer = IndicatorScorer(cfg)
    out = scorer.score(ds, progress=False)
    assert out.column_names[3:] == ["ind_prompt_len", "ind_response_len", "ind_mtld", "ind_ppl", "ind_reward",
                                    "ind_status"]
    assert "ind_knn6" not in out.column_names  # no embedding column
    assert list(out["ind_status"]) == ["ok"] * 4 + ["empty_response"]
    model, tok = load_causal_lm(str(tiny_lm_path), device="cpu")
    questions = ["Add 2 and 3.", "Sort the list\n[3, 1, 2]", ROWS[2]["instruction"], ROWS[3]["instruction"]]
    for i, row in enumerate(ROWS[:4]):
        assert out["ind_prompt_len"][i] == len(tok(questions[i], add_special_tokens=False)["input_ids"])
        assert out["ind_response_len"][i] == len(tok(row["output"], add_special_tokens=False)["input_ids"])
        assert out["ind_mtld"][i] == mtld(row["output"])
        seg = encode_segment(tok, row_to_messages(row, "alpaca"), 1, "chat")
        ids = torch.tensor([seg.prompt_ids + seg.response_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(seg.prompt_ids) - 1 : -1]
        loss = F.cross_entropy(logits.double(), torch.tensor(seg.response_ids))
        assert out["ind_ppl"][i] == pytest.approx(math.exp(float(loss)), rel=1e-4)
    rm = QualityScorer(QualityConfig(backend="reward", model_name_or_path=str(tiny_classifier_path)))
    reward = rm.score_pairs(questions, [r["output"] for r in ROWS[:4]])["score"]
    assert list(out["ind_reward"])[:4] == pytest.approx(reward, abs=1e-6)
    # The empty row: lengths and MTLD from the text, NaN for the model-based indicators.
    assert out["ind_response_len"][4] == 0 and math.isnan(out["ind_mtld"][4])
    assert math.isnan(out["ind_ppl"][4]) and math.isnan(out["ind_reward"][4])


def test_knn_column_added_by_score_only(tiny_lm_path):
    rng = np.random.default_rng(1)
    rows = [dict(r, vec=rng.normal(size=4).tolist()) for r in ROWS[:4]] * 2
    ds = Dataset.from_list(rows)
    scorer = IndicatorScorer(IndicatorConfig(model_name_or_path=str(tiny_lm_path), perplexity=False,
                                             embedding_column="vec", k=3, max_length=256))
    out = scorer.score(ds, progress=False)
    assert list(out["ind_knn3"]) == pytest.approx(knn_distance(np.array(ds["vec"]), k=3).tolist())
    # Every row has one duplicate: its 1st neighbour is at distance 0, its 3rd is not.
    assert knn_distance(np.array(ds["vec"]), k=1).tolist() == [0.0] * 8
    assert all(v > 0 for v in out["ind_knn3"])
    mapped = ds.map(scorer, batched=True)
    assert "ind_knn3" not in mapped.column_names and mapped["ind_mtld"] == list(out["ind_mtld"])


def test_long_rows_are_truncated_for_perplexity(tiny_lm_path):
    ds = Dataset.from_list([{"instruction": "Say it", "input": "", "output": "The answer is 42. " * 80},
                            {"instruction": "Sort the list " * 60, "input": "", "output": "ok"}])
    scorer = IndicatorScorer(IndicatorConfig(model_name_or_path=str(tiny_lm_path), max_length=64))
    out = scorer.score(ds, progress=False)
    assert list(out["ind_status"]) == ["truncated", "prompt_too_long"]
    assert math.isfinite(out["ind_ppl"][0]) and math.isnan(out["ind_ppl"][1])
    assert out["ind_response_len"][0] > 64  # lengths are counted on the whole text


def test_perplexity_respects_the_model_position_limit():
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_select.testing import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    scorer = IndicatorScorer(IndicatorConfig(template="plain")).set_model(GPT2LMHeadModel(config).eval(), tok)
    ds = Dataset.from_list([{"instruction": "Say it", "input": "", "output": "The answer is 42. " * 20},
                            {"instruction": "word " * 40, "input": "", "output": "ok"}])
    out = scorer.score(ds, progress=False)  # max_length 1024 is above the model's 32 positions
    assert list(out["ind_status"]) == ["truncated", "prompt_too_long"]
    assert math.isfinite(out["ind_ppl"][0]) and math.isnan(out["ind_ppl"][1])


# -- the rule ---------------------------------------------------------------------------------------------------------
def test_preset_rule_apply_and_rank():
    rule = InstructMiningRule.preset("instructmining")
    assert rule.intercept == 1.0694
    assert rule.coefficients == {"ind_reward": -0.1498, "ind_response_len": 8.257e-5, "ind_knn6": -0.9350}
    assert rule.columns == ["ind_reward", "ind_response_len", "ind_knn6"]
    ds = Dataset.from_dict({"ind_reward": [2.0, -1.0, 0.5, None], "ind_response_len": [100, 300, 50, 10],
                            "ind_knn6": [0.8, 0.2, 0.5, 0.5]})
    out = rule.apply(ds)
    expected = [1.0694 - 0.1498 * r + 8.257e-5 * n - 0.9350 * k
                for r, n, k in zip([2.0, -1.0, 0.5], [100, 300, 50], [0.8, 0.2, 0.5], strict=True)]
    assert list(out["instructmining_pred"])[:3] == pytest.approx(expected)
    assert math.isnan(out["instructmining_pred"][3])
    ranked = out.filter(lambda r: not math.isnan(r["instructmining_pred"])).sort("instructmining_pred")
    assert list(ranked["ind_reward"]) == [2.0, 0.5, -1.0]  # high reward, far from others: lowest predicted loss
    again = rule.apply(out)  # replaces the column
    assert again.column_names.count("instructmining_pred") == 1
    with pytest.raises(KeyError, match=r"needs the columns \['ind_knn6'\]"):
        rule.apply(ds.remove_columns("ind_knn6"))
    with pytest.raises(ValueError, match="unknown InstructMiningRule preset 'alpagasus'"):
        InstructMiningRule.preset("alpagasus")


def test_rule_serialisation(tmp_path):
    rule = InstructMiningRule.preset("instructmining")
    assert InstructMiningRule.from_dict(rule.to_dict()) == rule
    assert InstructMiningRule.from_json(rule.to_json()) == rule
    path = tmp_path / "rule.json"
    rule.to_json(path)
    assert InstructMiningRule.from_json(path) == rule
    assert json.loads(path.read_text())["target"] == "log_eval_loss"
    with pytest.raises(ValueError, match=r"unknown keys \['bias'\]"):
        InstructMiningRule.from_dict({"intercept": 1.0, "coefficients": {"a": 1.0}, "bias": 0})
    with pytest.raises(ValueError, match="coefficients\\['a'\\] must be a finite number"):
        InstructMiningRule(intercept=1.0, coefficients={"a": float("nan")})


def test_fit_rule_least_squares():
    rng = np.random.default_rng(0)
    columns = ["ind_reward", "ind_response_len", "ind_knn6"]
    means = [{"ind_reward": rng.normal(), "ind_response_len": rng.uniform(50, 400), "ind_knn6": rng.uniform(0.2, 1.0)}
             for _ in range(12)]
    exact = [math.exp(1.0694 - 0.1498 * m["ind_reward"] + 8.257e-5 * m["ind_response_len"] - 0.9350 * m["ind_knn6"])
             for m in means]
    rule = fit_rule(means, exact, columns)
    assert rule.intercept == pytest.approx(1.0694, abs=1e-8)
    assert [rule.coefficients[c] for c in columns] == pytest.approx([-0.1498, 8.257e-5, -0.9350], abs=1e-8)
    assert rule.fit["n_experiments"] == 12 and rule.fit["r2"] == pytest.approx(1.0)
    # With noise: the same answer as numpy's least squares on log loss.
    noisy = [loss * math.exp(rng.normal(scale=0.05)) for loss in exact]
    fitted = fit_rule(means, noisy, columns)
    x = np.column_stack([np.ones(12)] + [[m[c] for m in means] for c in columns])
    beta = np.linalg.lstsq(x, np.log(noisy), rcond=None)[0]
    assert [fitted.intercept, *fitted.coefficients.values()] == pytest.approx(beta.tolist(), abs=1e-6)
    # The fitted rule ranks a dataset built from the same indicators.
    ds = Dataset.from_list(means)
    assert list(fitted.apply(ds)["instructmining_pred"]) == pytest.approx((x @ beta).tolist(), abs=1e-9)
    assert InstructMiningRule.from_json(fitted.to_json()) == fitted


def test_fit_rule_errors():
    means = [{"a": 1.0}, {"a": 2.0}]
    with pytest.raises(ValueError, match="2 experiments cannot determine 2 coefficients"):
        fit_rule(means, [1.0, 2.0], ["a", "b"])
    with pytest.raises(ValueError, match="eval_losses must be finite and > 0"):
        fit_rule(means, [1.0, 0.0], ["a"])
    with pytest.raises(ValueError, match="experiment 1 has no mean for the column 'a'"):
        fit_rule([{"a": 1.0}, {"b": 2.0}, {"a": 0.0}], [1.0, 2.0, 3.0], ["a"])
    with pytest.raises(ValueError, match="2 indicator_means but 3 eval_losses"):
        fit_rule(means, [1.0, 2.0, 3.0], ["a"])


def test_indicator_means_ignores_nan():
    ds = Dataset.from_dict({"ind_reward": [1.0, 3.0, None], "ind_knn6": [float("nan"), 0.5, 1.5]})
    assert indicator_means(ds, ["ind_reward", "ind_knn6"]) == {"ind_reward": 2.0, "ind_knn6": 1.0}
    with pytest.raises(KeyError, match="lacks the columns"):
        indicator_means(ds, ["ind_ppl"])
