"""QualityScorer: reward-model and LLM-judge backends, truncation, padding, and configuration errors."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from hf_select import QualityConfig, QualityScorer, score_quality
from hf_select.models import load_causal_lm
from hf_select.scoring.common import fit_pair, load_reward_model, split_padding, unused_token_id
from hf_select.scoring.registry import build_scorer
from hf_select.testing import CHAT_TEMPLATE, make_tiny_classifier, make_tiny_tokenizer

ROWS = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5"},
    {"instruction": "Sort the list", "input": "[3, 1, 2]", "output": "[1, 2, 3]"},
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris is the capital of France. " * 6},
    {"instruction": "Reverse the string hello", "input": "", "output": "olleh"},
]


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return Dataset.from_list(ROWS)


@pytest.fixture(scope="module")
def tiny_classifier_nopad_path(tmp_path_factory):
    return make_tiny_classifier(tmp_path_factory.mktemp("tiny-rm-nopad"), pad_token=False)


def _with_rating_bias(model, token_id: int, value: float):
    """Untie the output head of a tiny LM and add a bias to one token's logit."""
    old = model.get_output_embeddings()
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[token_id] = value
    model.lm_head = head
    return model


# -- configuration ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "rm"}, "QualityConfig.backend must be one of ('judge', 'reward')"),
        ({"template": "alpaca"}, "QualityConfig.template must be one of ('auto', 'chat', 'plain')"),
        ({"scale": 1}, "QualityConfig.scale must be >= 2"),
        ({"judge_prompt": "Rate {answer}"}, "placeholder {question}"),
        ({"judge_prompt": "Rate {question} {answer} {other}"}, "may only use the placeholders"),
        ({"max_length": 4096, "max_tokens_per_batch": 1024}, "QualityConfig.max_tokens_per_batch"),
    ],
)
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
        QualityConfig(**kwargs)


def test_defaults_and_columns():
    assert score_quality.config.backend == "judge"
    assert score_quality.score_column == "quality"
    assert QualityConfig().resolved_model_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    reward = QualityScorer(QualityConfig(backend="reward"))
    assert reward.config.resolved_model_name_or_path == "OpenAssistant/reward-model-deberta-v3-large-v2"
    assert reward.score_column == "quality"
    assert reward.output_columns == ("quality", "quality_backend", "quality_status")
    assert score_quality.output_columns == ("quality", "quality_backend", "judge_mass", "quality_status")
    assert build_scorer("quality", backend="reward").score_column == "quality"


# -- judge ------------------------------------------------------------------------------------------------------------
def test_judge_rating_tokens_come_from_the_tokenizer(tiny_lm_path):
    scorer = QualityScorer(QualityConfig(model_name_or_path=str(tiny_lm_path)))
    _, tok = scorer.load()
    ids, suffix = scorer.rating_token_ids()
    assert [tok.decode([i]) for i in ids] == ["1", "2", "3", "4", "5"]
    assert suffix == ""  # chat template: the digit follows the generation prompt
    plain = QualityScorer(QualityConfig(model_name_or_path=str(tiny_lm_path), template="plain", scale=3))
    plain_ids, plain_suffix = plain.rating_token_ids(tok)
    assert [tok.decode([i]).strip() for i in plain_ids] == ["1", "2", "3"]
    assert "Rating:" in plain_suffix


def test_judge_multi_token_ratings_get_one_clear_error(tiny_lm_path):
    scorer = QualityScorer(QualityConfig(model_name_or_path=str(tiny_lm_path), scale=12))
    with pytest.raises(ValueError, match=r"rating strings \['10', '11', '12'\] are not single tokens"):
        scorer.score_pairs(["q"], ["a"])


def test_judge_expected_rating_matches_a_hand_computation(tiny_lm_path, ds):
    scorer = QualityScorer(QualityConfig(model_name_or_path=str(tiny_lm_path), max_length=512))
    out = scorer.score(ds, progress=False)
    assert out.column_names[-4:] == ["quality", "quality_backend", "judge_mass", "quality_status"]
    assert list(out["quality_status"]) == ["ok"] * 4 and list(out["quality_backend"]) == ["judge"] * 4
    for s, m in zip(out["quality"], out["judge_mass"], strict=True):
        assert 1.0 <= s <= 5.0 and 0.0 < m <= 1.0
    # The same through Dataset.map, in batches of 3 and 1 (padding must not change a score).
    mapped = ds.map(scorer, batched=True, batch_size=3)
    assert mapped["quality"] == pytest.approx(list(out["quality"]), abs=1e-5)
    # Reference: full forward of the rendered prompt, softmax over the five rating logits.
    model, tok = scorer.load()
    ids, _ = scorer.rating_token_ids()
    prompt = scorer.config.judge_prompt.format(question=ROWS[0]["instruction"], answer=ROWS[0]["output"], scale=5)
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    with torch.no_grad():
        logits = model(torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])).logits[0, -1].double()
    probs = torch.softmax(logits[ids], -1)
    expected = float((probs * torch.arange(1, 6, dtype=torch.float64)).sum())
    mass = float(torch.softmax(logits, -1)[ids].sum())
    assert out["quality"][0] == pytest.approx(expected, abs=1e-5)
    assert out["judge_mass"][0] == pytest.approx(mass, rel=1e-4)


@pytest.mark.parametrize(("digit", "bound"), [("5", 5.0), ("1", 1.0)])
def test_judge_score_follows_the_rating_token_probabilities(tiny_lm_path, digit, bound):
    base = QualityScorer(QualityConfig(model_name_or_path=str(tiny_lm_path)))
    before = base.score_pairs(["Add 2 and 3."], ["5"])["score"][0]
    model, tok = load_causal_lm(str(tiny_lm_path), device="cpu")
    token = tok.convert_tokens_to_ids(digit)
    biased = QualityScorer(QualityConfig(model_name_or_path=str(tiny_lm_path)))
    biased.set_model(_with_rating_bias(model, token, 4.0), tok)
    moved = biased.score_pairs(["Add 2 and 3."], ["5"])["score"][0]
    assert abs(moved - bound) < abs(before - bound) - 0.5
    biased.set_model(_with_rating_bias(model, token, 40.0), tok)
    assert biased.score_pairs(["Add 2 and 3."], ["5"])["score"][0] == pytest.approx(bound, abs=1e-3)


def test_set_model_changes_the_fingerprint(tiny_lm_path, ds):
    model, tok = load_causal_lm(str(tiny_lm_path), device="cpu")
    scorer = QualityScorer(QualityConfig(model_name_or_path=str(tiny_lm_path))).set_model(model, tok)
    first = scorer.fingerprint(ds)
    with torch.no_grad():
        model.model.norm.weight.add_(0.01)
    assert scorer.set_model(model, tok).fingerprint(ds) != first


# -- reward -----------------------------------------------------------------------------------------------------------
def test_reward_scores_match_the_model_and_do_not_depend_on_batching(tiny_classifier_path, ds):
    scorer = QualityScorer(QualityConfig(backend="reward", model_name_or_path=str(tiny_classifier_path)))
    out = scorer.score(ds, progress=False)
    assert list(out["quality_status"]) == ["ok"] * 4
    one = QualityScorer(QualityConfig(backend="reward", model_name_or_path=str(tiny_classifier_path),
                                      max_batch_size=1)).score(ds, progress=False)
    assert list(out["quality"]) == pytest.approx(list(one["quality"]), abs=1e-5)
    model, tok = load_reward_model(str(tiny_classifier_path), device="cpu")
    q = f"{ROWS[1]['instruction']}\n{ROWS[1]['input']}"  # MoDS: instruction + "\n" + input
    msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": ROWS[1]["output"]}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    with torch.no_grad():
        ref = model(torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])).logits[0, 0]
    assert out["quality"][1] == pytest.approx(float(ref), abs=1e-5)


def test_reward_text_pair_without_chat_template(tiny_classifier_path, ds):
    scorer = QualityScorer(QualityConfig(backend="reward", model_name_or_path=str(tiny_classifier_path),
                                         template="plain"))
    out = scorer.score(ds, progress=False)
    model, tok = load_reward_model(str(tiny_classifier_path), device="cpu")
    with torch.no_grad():
        ref = model(**tok(ROWS[0]["instruction"], ROWS[0]["output"], return_tensors="pt")).logits[0, 0]
    assert out["quality"][0] == pytest.approx(float(ref), abs=1e-5)


def test_reward_model_without_pad_token_still_batches(tiny_classifier_nopad_path, ds):
    model, tok = load_reward_model(str(tiny_classifier_nopad_path), device="cpu")
    assert model.config.pad_token_id is None and tok.pad_token == tok.eos_token  # load_tokenizer's fallback
    # A chat template that ends each turn with EOS and nothing after it: the last real token equals the pad token,
    # so the classifier's "rightmost non-pad token" would be wrong unless padding uses another id.
    tok.chat_template = CHAT_TEMPLATE.replace("<|im_end|>\n", "<|im_end|>")
    scorer = QualityScorer(QualityConfig(backend="reward", model_name_or_path=str(tiny_classifier_nopad_path)))
    batched = scorer.set_model(model, tok).score(ds, progress=False)
    assert list(batched["quality_status"]) == ["ok"] * 4
    for i, row in enumerate(ROWS):
        q = row["instruction"] + (f"\n{row['input']}" if row["input"] else "")
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": row["output"]}]
        text = tok.apply_chat_template(msgs, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids[-1] == tok.pad_token_id
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0, 0]  # one row: no padding, the last token is used
        assert batched["quality"][i] == pytest.approx(float(ref), abs=1e-5)
    assert model.config.pad_token_id is None  # restored after scoring


def test_split_padding_bounds_the_padding():
    lengths = [231, 149, 136, 115, 62, 58, 16, 15]
    groups = split_padding(list(range(8)), lengths)
    assert groups == [[0], [1, 2, 3], [4, 5], [6, 7]]
    for g in groups:
        assert sum(max(lengths[i] for i in g) - lengths[i] for i in g) <= 0.25 * max(lengths[i] for i in g) * len(g)


def test_unused_token_id_avoids_real_tokens():
    assert unused_token_id([[0, 5], [2]], [2, 0, None], vocab_size=8) == 7
    assert unused_token_id([[0, 5]], [2], vocab_size=8) == 2


# -- bad input --------------------------------------------------------------------------------------------------------
def test_fit_pair_keeps_question_start_and_answer_end():
    tok = make_tiny_tokenizer()

    def render(q, a):
        return tok(q + " ||| " + a)["input_ids"], None

    question = "Sort the list: [3, 1, 2] " * 10
    answer = "The answer is 42. " * 3 + "Paris is the capital of France."
    fitted = fit_pair(tok, question, answer, render, 40)
    assert fitted.truncated and len(fitted.input_ids) <= 40
    assert question.startswith(fitted.question) and fitted.question
    assert answer.endswith(fitted.answer) and fitted.answer.endswith("France.")
    # A short answer is kept whole; the question gets the rest of the room.
    short = fit_pair(tok, question, "olleh", render, 40)
    assert short.answer == "olleh" and short.truncated
    assert not fit_pair(tok, "Add 2 and 3.", "5", render, 40).truncated


def test_long_pairs_are_truncated_and_flagged(tiny_classifier_path, tiny_lm_path):
    row = {"instruction": "Sort the list " * 40, "input": "", "output": "The answer is 42. " * 60}
    long = Dataset.from_list([row])
    cfg = QualityConfig(backend="reward", model_name_or_path=str(tiny_classifier_path), max_length=64)
    reward = QualityScorer(cfg)
    out = reward.score(long, progress=False)
    assert out["quality_status"] == ["truncated"] and math.isfinite(out["quality"][0])
    judge = QualityScorer(QualityConfig(model_name_or_path=str(tiny_lm_path), max_length=200))
    out = judge.score(long, progress=False)
    assert out["quality_status"] == ["truncated"] and 1.0 <= out["quality"][0] <= 5.0
    # The judge prompt alone does not fit in 16 tokens: no score, and a reason.
    tiny = QualityScorer(QualityConfig(model_name_or_path=str(tiny_lm_path), max_length=16))
    out = tiny.score(long, progress=False)
    assert out["quality_status"] == ["prompt_too_long"] and math.isnan(out["quality"][0])


def test_bad_rows_get_a_status_and_nan(tiny_classifier_path):
    bad = Dataset.from_list([
        {"instruction": "Say hi", "input": "", "output": "   "},
        {"instruction": None, "input": "", "output": "hi"},
        {"instruction": "Say hi", "input": "", "output": "hi"},
    ])
    out = QualityScorer(QualityConfig(backend="reward", model_name_or_path=str(tiny_classifier_path))).score(
        bad, progress=False
    )
    assert list(out["quality_status"]) == ["empty_response", "invalid_row", "ok"]
    assert math.isnan(out["quality"][0]) and math.isnan(out["quality"][1]) and math.isfinite(out["quality"][2])
