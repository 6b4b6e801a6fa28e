"""NecessityScorer: batched generation (left padding, EOS stops), scoring of the model's own answers, statuses."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from datasets import Dataset

from hf_select import NecessityConfig, NecessityScorer, QualityConfig, QualityScorer, score_necessity
from hf_select.models import load_tokenizer
from hf_select.scoring.necessity import generate_answers
from hf_select.testing import make_tiny_tokenizer

ROWS = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Sort the list", "input": "[3, 1, 2]", "output": "[1, 2, 3]"},
    {"instruction": "What is the capital of France? Answer in one word, please, and say nothing else.", "input": "",
     "output": "Paris"},
    {"instruction": "Translate to French: cat", "input": "", "output": "chat"},
]


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return Dataset.from_list(ROWS)


@pytest.fixture()
def varied_lm():
    """A tiny random LM whose greedy answers vary from token to token (untied head, larger initial weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False, initializer_range=0.3,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tok


def _scorer(reward_path, **kwargs) -> NecessityScorer:
    quality = QualityConfig(backend="reward", model_name_or_path=str(reward_path))
    return NecessityScorer(NecessityConfig(quality=quality, **kwargs))


def _eos_bias(model, eos_id: int, value: float):
    head = model.get_output_embeddings()
    new = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        new.weight.copy_(head.weight)
        new.bias.zero_()
        new.bias[eos_id] = value
    model.lm_head = new
    return model


def test_config_takes_a_quality_dict_and_validates():
    cfg = NecessityConfig(quality={"backend": "reward", "model_name_or_path": "./rm"}, max_new_tokens=16)
    assert isinstance(cfg.quality, QualityConfig) and cfg.quality.backend == "reward"
    with pytest.raises(ValueError, match="NecessityConfig.quality: .*unexpected keyword argument 'nope'"):
        NecessityConfig(quality={"nope": 1})
    with pytest.raises(ValueError, match=r"NecessityConfig.backend must be one of \('transformers', 'vllm'\)"):
        NecessityConfig(backend="tgi")
    with pytest.raises(ValueError, match="NecessityConfig.max_new_tokens must be >= 1"):
        NecessityConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="QualityConfig.backend must be one of"):
        NecessityConfig(quality={"backend": "nope"})
    assert score_necessity.config.max_new_tokens == 256 and not score_necessity.config.do_sample


def test_batched_generation_equals_one_prompt_at_a_time(varied_lm, tiny_classifier_path, ds):
    model, tok = varied_lm
    batched = _scorer(tiny_classifier_path, max_new_tokens=8).set_model(model, tok).score(ds, progress=False)
    single = _scorer(tiny_classifier_path, max_new_tokens=8, max_batch_size=1).set_model(model, tok)
    single = single.score(ds, progress=False)
    assert list(batched["generated_response"]) == list(single["generated_response"])
    assert list(batched["necessity"]) == pytest.approx(list(single["necessity"]), abs=1e-5)
    assert len(set(batched["generated_response"])) > 1  # the rows really got different answers
    # necessity is the reward of (question, generated answer).
    rm = QualityScorer(QualityConfig(backend="reward", model_name_or_path=str(tiny_classifier_path)))
    questions = ["Add 2 and 3.", "Sort the list\n[3, 1, 2]", ROWS[2]["instruction"], ROWS[3]["instruction"]]
    ref = rm.score_pairs(questions, list(batched["generated_response"]), allow_empty=True)
    assert list(batched["necessity"]) == pytest.approx(ref["score"], abs=1e-5)


def test_generation_stops_at_eos(varied_lm):
    model, tok = varied_lm
    prompt = tok.apply_chat_template([{"role": "user", "content": "Add 2 and 3."}], tokenize=False,
                                     add_generation_prompt=True)
    short = tok(tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                        add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    free = generate_answers(model, [ids, short], pad_token_id=tok.pad_token_id, eos_ids=[tok.eos_token_id],
                            max_new_tokens=10)
    tokens, hit = free[0]
    assert not hit and len(tokens) == 10
    stop = tokens[4]  # pretend the token written at step 5 is an EOS
    first = tokens.index(stop)
    out = generate_answers(model, [ids, short], pad_token_id=tok.pad_token_id, eos_ids=[tok.eos_token_id, stop],
                           max_new_tokens=10)
    assert out[0] == (tokens[:first], True)
    # The other row of the batch goes on (or stops at its own first `stop`), unaffected by the first row.
    other = free[1][0]
    assert out[1][0] == (other[: other.index(stop)] if stop in other else other)


def test_eos_dominating_gives_empty_generation_still_scored(varied_lm, tiny_classifier_path, ds):
    model, tok = varied_lm
    scorer = _scorer(tiny_classifier_path, max_new_tokens=8).set_model(_eos_bias(model, tok.eos_token_id, 1e4), tok)
    out = scorer.score(ds, progress=False)
    assert list(out["necessity_status"]) == ["empty_generation"] * 4
    assert list(out["generated_tokens"]) == [0] * 4 and list(out["generated_response"]) == [""] * 4
    assert all(math.isfinite(v) for v in out["necessity"])


def test_no_eos_is_flagged_and_still_scored(varied_lm, tiny_classifier_path, ds):
    model, tok = varied_lm
    scorer = _scorer(tiny_classifier_path, max_new_tokens=6).set_model(_eos_bias(model, tok.eos_token_id, -1e4), tok)
    out = scorer.score(ds, progress=False)
    assert list(out["necessity_status"]) == ["no_eos"] * 4
    assert list(out["generated_tokens"]) == [6] * 4
    assert all(math.isfinite(v) for v in out["necessity"])


def test_the_seed_model_config_path_and_set_model(tiny_lm_path, tiny_classifier_path, ds, varied_lm):
    tok = load_tokenizer(str(tiny_lm_path))
    lengths = [len(tok(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                               add_generation_prompt=True), add_special_tokens=False)["input_ids"])
               for q in ("Add 2 and 3.", "Sort the list\n[3, 1, 2]", ROWS[2]["instruction"], ROWS[3]["instruction"])]
    limit = max(lengths[:2] + lengths[3:])
    assert lengths[2] > limit
    scorer = _scorer(tiny_classifier_path, model_name_or_path=str(tiny_lm_path), max_new_tokens=4,
                     max_prompt_length=limit)
    out = scorer.score(ds, progress=False)
    assert out.column_names[-4:] == ["generated_response", "generated_tokens", "necessity", "necessity_status"]
    # The chat prompt of the third row is the only one longer than the limit: not generated, no score, a reason.
    assert out["necessity_status"][2] == "prompt_too_long" and math.isnan(out["necessity"][2])
    assert out["generated_response"][2] is None
    assert all(s in ("ok", "no_eos", "empty_generation") for i, s in enumerate(out["necessity_status"]) if i != 2)
    # A model passed with set_model changes the fingerprint (no stale cache from the folder's weights).
    before = scorer.fingerprint(ds)
    assert scorer.set_model(*varied_lm).fingerprint(ds) != before


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_is_a_clear_error(ds):
    scorer = NecessityScorer(NecessityConfig(backend="vllm", model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct"))
    with pytest.raises(ImportError, match=r"backend='vllm' needs the vllm package.*pip install 'hf-select\[vllm\]'"):
        scorer.score(ds, progress=False)
    with pytest.raises(ValueError, match="set_model needs NecessityConfig.backend='transformers'"):
        scorer.set_model(None, None)


@pytest.fixture()
def one_thread():
    """One torch thread: on a small CPU shared with other jobs, two threads made SmolLM2 ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_smollm2_answers_stop_at_eos_and_are_judged(one_thread):
    rows = Dataset.from_list([ROWS[0], ROWS[2]])
    scorer = NecessityScorer(NecessityConfig(max_new_tokens=32, quality={"max_length": 512}))
    out = scorer.score(rows, progress=False)
    assert "ok" in out["necessity_status"]
    for text, n, status, value in zip(out["generated_response"], out["generated_tokens"], out["necessity_status"],
                                      out["necessity"], strict=True):
        assert status in ("ok", "no_eos") and 1.0 <= value <= 5.0
        if status == "ok":
            assert 0 < n < 32 and text.strip()


def test_prompts_near_the_model_position_limit(tiny_classifier_path):
    """A 32-position GPT-2: a prompt of p tokens gets at most 32 - p new tokens; one that fills it is not generated."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = make_tiny_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    def prompt_len(n: int) -> int:  # the plain template: the instruction and a newline
        return len(tok(f"{'1 ' * n}\n")["input_ids"])

    sizes = [max(n for n in range(1, 40) if prompt_len(n) + 16 <= 32),
             min(n for n in range(1, 40) if prompt_len(n) + 16 > 32 and prompt_len(n) < 32),
             min(n for n in range(1, 60) if prompt_len(n) >= 32)]
    prompt_lens = [prompt_len(n) for n in sizes]
    rows = Dataset.from_list([{"instruction": "1 " * n, "input": "", "output": "x"} for n in sizes])
    scorer = _scorer(tiny_classifier_path, template="plain", max_new_tokens=16).set_model(model, tok)
    out = scorer.score(rows, progress=False)
    assert out["necessity_status"][2] == "prompt_too_long" and math.isnan(out["necessity"][2])
    assert out["generated_tokens"][1] <= 32 - prompt_lens[1]
    assert out["generated_tokens"][0] <= 16
    assert all(math.isfinite(v) for v in out["necessity"][:2])
