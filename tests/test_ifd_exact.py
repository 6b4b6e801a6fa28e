"""Seed-exact IFD: ``layout="superfiltering"`` and ``layout="cherry"`` against per-row reference computations.

The references below are written from each seed script's stated token layout (which text is tokenized, where the
scored tokens start, how each pass is cut, which rows are skipped), one row at a time, with a plain transformers
forward pass and ``labels``: nothing is shared with the scorer's code. They run on 200 real alpaca rows with the
tiny test model, and again with a tiny random model behind the real SmolLM2 tokenizer, whose merges join a
response's first ``"`` or ``-`` with the prompt's ``:`` (the joint-tokenization case).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_select import IFDConfig, IFDScorer
from hf_select.selection import ifd_rule
from tests.conftest import shared_rows

ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
HEADER = "### Response:"
RATE = 0.1


def _hf_loss(model, ids: list[int], labels: list[int]) -> float:
    """transformers' own shifted mean loss; NaN when no label is left."""
    if all(x == -100 for x in labels[1:]):
        return math.nan
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()


def _token_losses(model, ids: list[int]) -> list[float]:
    """Loss of token i given tokens < i, for i = 1..len-1 (index i-1 of the list)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return [-logp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]


# -- Superfiltering: code_ifd, plain ("none") prompt ----------------------------------------------------------------
def superfiltering_reference(model, tok, row: dict, max_length: int) -> tuple[float, float] | None:
    """(loss given the prompt, loss alone), or None for a row the script leaves without a score."""
    inst, inp, out = row["instruction"], row.get("input", ""), row["output"]
    prompt = f"{inst}\n{inp}\n" if inp != "" else f"{inst}\n"
    if out == "":
        return None
    prompt_len = len(tok(prompt, truncation=True, max_length=max_length)["input_ids"])
    # alone: the response by itself, cut to max_length - prompt_len + 1; labels = the ids (first token unscored)
    alone = tok(out, truncation=True, max_length=max_length - prompt_len + 1)["input_ids"]
    loss_alone = _hf_loss(model, alone, list(alone))
    # given the prompt: prompt + response as one text; labels from the prompt's own token count on
    whole = tok(prompt + out, truncation=True, max_length=max_length)["input_ids"]
    start = len(tok(prompt)["input_ids"])
    loss_cond = _hf_loss(model, whole, [-100] * start + whole[start:])
    if math.isnan(loss_alone) or math.isnan(loss_cond):
        return None
    return loss_cond, loss_alone


def superfiltering_selection(ifd_ppl: list[float], rate: float) -> list[int]:
    """Rows with a perplexity ratio below 1, highest first, rate x all rows."""
    kept = [i for i, v in enumerate(ifd_ppl) if not math.isnan(v) and v < 1]
    ranked = sorted(kept, key=lambda i: ifd_ppl[i], reverse=True)
    return sorted(ranked[: int(len(ifd_ppl) * rate)])


# -- Cherry LLM: cherry_seletion, mode cherry, Alpaca prompt ---------------------------------------------------------
def cherry_reference(model, tok, row: dict, max_length: int) -> tuple[float, float] | None:
    inst, inp, out = row["instruction"], row.get("input", ""), row["output"]
    prompt = ALPACA_INPUT.format(instruction=inst, input=inp) if inp != "" else ALPACA_NO_INPUT.format(
        instruction=inst)
    prompt_len = len(tok(prompt, truncation=True, max_length=max_length)["input_ids"])
    direct_max = max_length - prompt_len - 2
    if direct_max <= 4:
        return None

    def part(prefix: str, cut: int) -> tuple[int, list[float]]:
        ids = tok(prefix + out, truncation=True, max_length=cut)["input_ids"]
        start = len(tok(prefix)["input_ids"])
        return len(ids) - start, _token_losses(model, ids)[start - 1 : len(ids) - 1]

    n_alone, alone = part(HEADER, direct_max)
    n_cond, cond = part(prompt, max_length)
    if n_alone == 0 or n_cond == 0 or prompt_len + n_alone > max_length:
        return None
    return float(np.mean(cond)), float(np.mean(alone))


def cherry_selection(ifd: list[float], rate: float) -> list[int]:
    """Drop IFD > 1, then the highest IFD, rate x the rows that are left."""
    pairs = sorted((v, i) for i, v in enumerate(ifd) if not math.isnan(v) and not v > 1)
    k = int(len(pairs) * rate)
    return sorted(i for _, i in pairs[len(pairs) - k :])


REFERENCES = {"superfiltering": superfiltering_reference, "cherry": cherry_reference}


def _check_layout(model, tok, rows: list[dict], layout: str, max_length: int) -> dict:
    scorer = IFDScorer(IFDConfig(layout=layout, max_length=max_length, dtype="float32", device="cpu"))
    scorer.set_model(model, tok)
    out = scorer.score(Dataset.from_list(rows), cache=False, progress=False)
    ref = [REFERENCES[layout](model, tok, row, max_length) for row in rows]
    for i, r in enumerate(ref):
        if r is None:
            assert out[i]["ifd_status"] != "ok" and math.isnan(out[i]["ifd"]), (i, out[i]["ifd_status"])
            continue
        lc, ld = r
        assert out[i]["ifd_status"] == "ok", (i, out[i]["ifd_status"])
        assert math.isclose(out[i]["loss_conditioned"], lc, rel_tol=1e-4), i
        assert math.isclose(out[i]["loss_direct"], ld, rel_tol=1e-4), i
        assert math.isclose(out[i]["ifd"], lc / ld, rel_tol=1e-4), i
        assert math.isclose(out[i]["ifd_ppl"], math.exp(lc) / math.exp(ld), rel_tol=1e-4), i
    if layout == "superfiltering":
        expected = superfiltering_selection([math.nan if r is None else math.exp(r[0] - r[1]) for r in ref], RATE)
        chosen = ifd_rule(out, fraction=RATE, column="ifd_ppl", of="all").keep.tolist()
    else:
        expected = cherry_selection([math.nan if r is None else r[0] / r[1] for r in ref], RATE)
        chosen = ifd_rule(out, fraction=RATE, column="ifd", of="eligible").keep.tolist()
    assert chosen == expected and len(chosen) > 0
    return {"ref": ref, "out": out}


@pytest.fixture(scope="module")
def rows():
    return shared_rows("train/alpaca_9k.json", 200)


@pytest.fixture(scope="module")
def tiny(tiny_lm_plain_path):
    scorer = IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_plain_path), dtype="float32", device="cpu"))
    return scorer.load()


@pytest.mark.parametrize("layout,max_length", [("superfiltering", 1024), ("superfiltering", 160),
                                               ("cherry", 512), ("cherry", 160)])
def test_seed_layout_equals_the_reference_on_200_alpaca_rows(tiny, rows, layout, max_length):
    model, tok = tiny
    res = _check_layout(model, tok, rows, layout, max_length)
    statuses = res["out"]["ifd_status"]
    if max_length == 160:  # the short limit cuts responses and skips long prompts: both paths are exercised
        assert "prompt_too_long" in statuses and statuses.count("ok") > 100


@pytest.fixture(scope="module")
def smol_vocab():
    """A tiny random Llama behind the real SmolLM2 tokenizer (offline copy): its merges join ``:"`` and ``:-``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_select.models import DEFAULT_LM, ModelLoadError, load_tokenizer

    try:
        tok = load_tokenizer(DEFAULT_LM)
    except (ModelLoadError, OSError) as err:
        pytest.skip(f"the offline SmolLM2 tokenizer is unavailable here: {err}")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tok


@pytest.mark.parametrize("layout,max_length", [("superfiltering", 1024), ("cherry", 512)])
def test_joint_tokenization_with_the_real_smollm2_tokenizer(smol_vocab, rows, layout, max_length):
    model, tok = smol_vocab
    merged = [i for i, r in enumerate(rows) if r["output"][:1] in ('"', "-")]
    assert merged, "the first 200 rows hold responses starting with a quote or a dash"
    if layout == "cherry":  # the case the layout exists for: the response's first character is inside ':"'
        p = ALPACA_NO_INPUT.format(instruction=rows[merged[0]]["instruction"]) if not rows[merged[0]]["input"] \
            else ALPACA_INPUT.format(instruction=rows[merged[0]]["instruction"], input=rows[merged[0]]["input"])
        joint = tok(p + rows[merged[0]]["output"])["input_ids"]
        assert joint[: len(tok(p)["input_ids"])] != tok(p)["input_ids"]
    _check_layout(model, tok, rows, layout, max_length)


def test_seed_layouts_against_the_default_layout(tiny, rows):
    """Where joint tokenization merges nothing (the tiny tokenizer has no ':"' merge) and nothing is cut, the
    superfiltering layout is the default layout with the plain template and direct_prefix="none"; the BOS direct
    pass and Cherry's layout score other tokens."""
    model, tok = tiny
    ds = Dataset.from_list(rows[:20])
    direct = {}
    for key, kw in (("none", {"template": "plain", "direct_prefix": "none"}), ("bos", {"template": "plain"}),
                    ("superfiltering", {"layout": "superfiltering"}), ("cherry", {"layout": "cherry"})):
        direct[key] = np.array(IFDScorer(IFDConfig(**kw)).set_model(model, tok)(ds[:])["loss_direct"])
    np.testing.assert_allclose(direct["none"], direct["superfiltering"], rtol=1e-5)
    assert not np.allclose(direct["bos"], direct["superfiltering"], rtol=1e-4)
    assert not np.allclose(direct["superfiltering"], direct["cherry"], rtol=1e-4)


@pytest.mark.parametrize("prefix", ["bos", "none", "response_header"])
def test_direct_prefix_matches_its_stated_layout(tiny, rows, prefix):
    """``direct_prefix`` under the default layout: the same response tokens as the conditioned pass, after the BOS,
    after nothing (the first token is then context only) or after the tokens of ``### Response:``."""
    model, tok = tiny
    sample = rows[:12]
    scorer = IFDScorer(IFDConfig(template="alpaca", direct_prefix=prefix)).set_model(model, tok)
    out = scorer(Dataset.from_list(sample)[:])
    for i, row in enumerate(sample):
        resp = tok(row["output"], add_special_tokens=False)["input_ids"]
        head = {"bos": [tok.bos_token_id], "none": [], "response_header": tok(HEADER)["input_ids"]}[prefix]
        ids = head + resp
        labels = ([-100] * len(head) + resp) if head else list(resp)
        assert math.isclose(out["loss_direct"][i], _hf_loss(model, ids, labels), rel_tol=1e-4)


def test_config_choices_and_conflicts():
    # the project's default: "none" after the chat template, "bos" after a text template (README, "IFD: which tokens")
    assert IFDConfig().resolved_direct_prefix("chat") == "none"
    assert IFDConfig().resolved_direct_prefix("plain") == "bos"
    assert IFDConfig(layout="superfiltering").resolved_direct_prefix() == "none"
    assert IFDConfig(layout="cherry").resolved_direct_prefix() == "response_header"
    with pytest.raises(ValueError, match="direct_prefix must be one of"):
        IFDConfig(direct_prefix="eos")
    with pytest.raises(ValueError, match="layout must be one of"):
        IFDConfig(layout="alpagasus")
    with pytest.raises(ValueError, match=r"IFDConfig.template='chat' conflicts with layout='cherry'"):
        IFDConfig(layout="cherry", template="chat")
    with pytest.raises(ValueError, match=r"IFDConfig.direct_prefix='bos' conflicts"):
        IFDConfig(layout="superfiltering", direct_prefix="bos")
    IFDConfig(layout="cherry", template="alpaca", direct_prefix="response_header")  # the seed's own: fine


def test_one_token_response_has_no_direct_loss_under_superfiltering(tiny):
    model, tok = tiny
    one = next(w for w in ("5", "a", "x") if len(tok(w)["input_ids"]) == 1)
    ds = {"instruction": ["Add 2 and 3.", "Add 2 and 3."], "input": ["", ""], "output": [one, "2 + 3 = 5"]}
    out = IFDScorer(IFDConfig(layout="superfiltering")).set_model(model, tok)(ds)
    assert out["ifd_status"] == ["response_too_short", "ok"] and math.isnan(out["ifd"][0])
    out = IFDScorer(IFDConfig(layout="cherry")).set_model(model, tok)(ds)
    assert out["ifd_status"] == ["ok", "ok"]  # Cherry scores it after "### Response:"


def test_ifd_rule_count_bases():
    """of="all" counts every row (Superfiltering), of="eligible" the rows left after the drop (Cherry LLM)."""
    rng = np.random.default_rng(3)
    n = 400
    v = rng.uniform(0.5, 1.3, n)
    status = rng.choice(["ok", "ok", "ok", "prompt_too_long"], n)
    v = np.where(status == "ok", v, np.nan)
    ds = Dataset.from_dict({"ifd": v.tolist(), "ifd_status": status.tolist()})
    eligible = [i for i in range(n) if status[i] == "ok" and v[i] < 1]
    ranked = sorted(eligible, key=lambda i: (-v[i], i))
    assert ifd_rule(ds, fraction=0.1, of="all").keep.tolist() == sorted(ranked[: int(0.1 * n)])
    assert ifd_rule(ds, fraction=0.1, of="eligible").keep.tolist() == sorted(ranked[: int(0.1 * len(eligible))])
    assert len(ifd_rule(ds, fraction=0.1, of="eligible").keep) < len(ifd_rule(ds, fraction=0.1).keep)
    with pytest.raises(ValueError, match="of must be one of"):
        ifd_rule(ds, fraction=0.1, of="some")


def test_recipes_default_to_the_seed_semantics():
    from importlib import import_module

    sf = import_module("hf_select.recipes.superfilter")
    args = sf.SuperfilterArguments(dataset="demo:8", output_dir="unused")
    assert sf.ifd_config(args).layout == "superfiltering" and args.ifd_column == "ifd_ppl"
    assert sf.selection_steps(args, 100)[0] == {"step": "ifd_rule", "column": "ifd_ppl", "of": "all",
                                                 "fraction": 0.1}
    own = sf.SuperfilterArguments(dataset="demo:8", output_dir="unused", ifd_layout="hf_select", template="alpaca")
    assert sf.ifd_config(own).layout == "hf_select" and sf.ifd_config(own).template == "alpaca"
    with pytest.raises(ValueError, match="ifd_layout must be one of"):
        sf.SuperfilterArguments(dataset="demo:8", output_dir="unused", ifd_layout="cherry")
    ch = import_module("hf_select.recipes.cherry")
    cargs = ch.CherryArguments(dataset="demo:8", output_dir="unused")
    assert cargs.ifd_layout == "cherry"
    assert ch.ifd_rule_step(cargs) == {"step": "ifd_rule", "column": "ifd", "of": "eligible", "fraction": 0.1}


def test_seed_layouts_give_every_row_a_status(tiny):
    """Rows the seed scripts never saw (multi-turn, system prompts, messages) still get a score or a status."""
    model, tok = tiny
    long_prompt = "word " * 400
    batch = {
        "messages": [
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}],
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 3."},
             {"role": "assistant", "content": "5, as 2 + 3 = 5"}],
            [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B b"},
             {"role": "user", "content": "C"}, {"role": "assistant", "content": "D d"}],
            [{"role": "user", "content": "Anything?"}, {"role": "assistant", "content": ""}],
            [{"role": "user", "content": "Anything?"}, {"role": "assistant", "content": "   "}],
            [{"role": "user", "content": long_prompt}, {"role": "assistant", "content": "ok then"}],
            [{"role": "user", "content": "no answer"}],
        ]
    }
    for layout in ("superfiltering", "cherry"):
        out = IFDScorer(IFDConfig(layout=layout, max_length=256)).set_model(model, tok)(batch)
        st = out["ifd_status"]
        assert st[:3] == ["ok", "ok", "ok"] and st[3] == "empty_response" and st[6] == "no_assistant_turn"
        assert st[4] == "ok"  # the scripts score a whitespace-only answer (only "" is skipped)
        assert st[5] == "prompt_too_long"
        assert all(math.isnan(v) == (s != "ok") for v, s in zip(out["ifd"], st, strict=True))
        both = IFDScorer(IFDConfig(layout=layout, turns="all")).set_model(model, tok)(batch)
        assert both["ifd_status"][2] == "ok" and both["ifd"][2] != out["ifd"][2]
