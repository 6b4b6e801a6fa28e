"""Row filters against plain-Python versions written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import Dataset

from hf_select.errors import HFSelectError
from hf_select.selection import (
    dedup_exact,
    dedup_near,
    embedding_matrix,
    ifd_rule,
    select,
    threshold,
    token_budget,
    top,
)
from hf_select.selection.filters import normalise_text, resolve_count

NAN = float("nan")


def reasons_of(result, n):
    out = ["keep"] * n
    for reason, idx in result.dropped.items():
        for i in idx:
            assert out[i] == "keep", "a row is both kept and dropped, or dropped twice"
            out[i] = reason
    assert sorted(result.keep.tolist() + [i for i, r in enumerate(out) if r != "keep"]) == list(range(n))
    return out


@pytest.mark.parametrize("strict", [False, True])
def test_threshold_matches_a_loop(strict):
    rng = np.random.default_rng(0)
    vals = rng.normal(size=200).round(1).tolist()
    for i in range(0, 200, 17):
        vals[i] = NAN
    ds = Dataset.from_dict({"q": vals})
    res = threshold(ds, "q", min=-0.5, max=1.0, strict=strict)
    expected = []
    for v in vals:
        if math.isnan(v):
            expected.append("nan_score")
        elif (v <= -0.5) if strict else (v < -0.5):
            expected.append("below_min")
        elif (v >= 1.0) if strict else (v > 1.0):
            expected.append("above_max")
        else:
            expected.append("keep")
    assert reasons_of(res, 200) == expected


def test_threshold_nan_never_passes_and_errors_name_the_column():
    ds = Dataset.from_dict({"q": [NAN, None, 1.0], "text": ["a", "b", "c"]})
    res = threshold(ds, "q", max=10)
    assert res.keep.tolist() == [2] and res.counts() == {"nan_score": 2}
    with pytest.raises(HFSelectError, match="'quality'"):
        threshold(ds, "quality", min=0)
    with pytest.raises(HFSelectError, match="'text'.*not numbers"):
        threshold(ds, "text", min=0)
    with pytest.raises(ValueError, match="min, max"):
        threshold(ds, "q")


def test_top_fraction_of_all_versus_scored():
    vals = [5.0, NAN, 3.0, 9.0, NAN, 1.0, 7.0, 7.0, NAN, 2.0]  # 7 scored of 10
    ds = Dataset.from_dict({"s": vals})
    assert top(ds, "s", fraction=0.3).keep.tolist() == [3, 6, 7]  # 3 of all 10: 9, then the tied 7s
    assert top(ds, "s", fraction=0.3, of="scored").keep.tolist() == [3, 6]  # floor(0.3 * 7) = 2, tie -> lower row
    res = top(ds, "s", count=2, descending=False)
    assert res.keep.tolist() == [5, 9]
    assert reasons_of(res, 10).count("nan_score") == 3
    with pytest.warns(UserWarning, match="only 7 qualify"):
        assert len(top(ds, "s", count=50).keep) == 7
    with pytest.raises(ValueError, match="exactly one"):
        top(ds, "s", fraction=0.1, count=2)


def test_ifd_rule_matches_a_loop():
    rng = np.random.default_rng(1)
    n = 300
    ifd = rng.uniform(0.2, 1.4, size=n)
    status = rng.choice(["ok", "ok", "ok", "prompt_too_long", "empty_response"], size=n).tolist()
    ifd = [v if s == "ok" else NAN for v, s in zip(ifd, status, strict=True)]
    ds = Dataset.from_dict({"ifd": ifd, "ifd_status": status})
    res = ifd_rule(ds, top=0.1)
    eligible = sorted((i for i in range(n) if status[i] == "ok" and ifd[i] < 1), key=lambda i: (-ifd[i], i))
    assert res.keep.tolist() == sorted(eligible[: int(0.1 * n)])
    r = reasons_of(res, n)
    assert r.count("ifd_status:prompt_too_long") == status.count("prompt_too_long")
    assert r.count("ifd_ge_1") == sum(1 for i in range(n) if status[i] == "ok" and ifd[i] >= 1)
    assert res.info["cutoff"] == pytest.approx(ifd[eligible[int(0.1 * n) - 1]])
    assert len(ifd_rule(ds, fraction=0.1, of="scored").keep) == int(0.1 * len([s for s in status if s == "ok"]))


def test_token_budget_prefix_fill_and_order():
    ds = Dataset.from_dict({"response_tokens": [4, 10, 3, 3, 5], "ifd": [0.1, 0.9, 0.8, NAN, 0.5]})
    res = token_budget(ds, 15, order_by="ifd")  # 1 (10) + 2 (3) = 13, then 4 (5) does not fit: stop
    assert res.keep.tolist() == [1, 2]
    assert reasons_of(res, 5) == ["over_budget", "keep", "keep", "nan_score", "over_budget"]
    assert token_budget(ds, 15, order_by="ifd", fill=True).keep.tolist() == [1, 2]  # 0 (4) would make 17
    assert token_budget(ds, 17, order_by="ifd", fill=True).keep.tolist() == [0, 1, 2]
    assert token_budget(ds, 14).keep.tolist() == [0, 1]  # dataset order
    assert token_budget(ds, 0).keep.tolist() == []


def test_token_budget_with_a_tokenizer():
    from hf_select.testing import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    ds = Dataset.from_dict({"instruction": ["Add 2 and 3.", "Say hi", "Reverse hello"],
                            "output": ["2 + 3 = 5", "hi", "olleh"]})
    counts = [len(tok(f"{r['instruction']}\n{r['output']}", add_special_tokens=False)["input_ids"]) for r in ds]
    res = token_budget(ds, counts[0] + counts[1], tokens_column=None, tokenizer=tok, text="row")
    assert res.keep.tolist() == [0, 1]
    assert res.info["tokens"] == counts[0] + counts[1]
    with pytest.raises(HFSelectError, match="response_tokens"):
        token_budget(ds, 10)


def test_token_budget_sums_a_pair_of_count_columns():
    ds = Dataset.from_dict({"prompt_tokens": [3, 1, 2, None], "response_tokens": [4, 6, 2, 1]})
    res = token_budget(ds, 15, tokens_column=["prompt_tokens", "response_tokens"], fill=True)
    assert res.keep.tolist() == [0, 1]  # 7 + 7 = 14; row 2 (4 more) would make 18; row 3 has no prompt count
    assert reasons_of(res, 4) == ["keep", "keep", "over_budget", "no_token_count"]
    assert res.info == {"tokens": 14, "budget": 15, "counts": "prompt_tokens + response_tokens"}
    assert token_budget(ds, 15).info["counts"] == "response_tokens"


def test_token_budget_never_loads_a_tokenizer():
    ds = Dataset.from_dict({"instruction": ["Say hi"], "output": ["hi"]})
    with pytest.raises(HFSelectError, match=r"token_budget: tokenizer must be a loaded tokenizer object.*"
                                            r"load_tokenizer\(name\)"):
        token_budget(ds, 10, tokenizer="HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(HFSelectError, match=r"token_budget: the dataset has no 'prompt_tokens' column and no "
                                            r"tokenizer.*Fix: name the column"):
        token_budget(ds, 10, tokens_column=["prompt_tokens"])
    with pytest.raises(HFSelectError, match=r"step 1 \(token_budget\): .*tokens_column=.*tokenizer="):
        select(ds, [{"step": "token_budget", "budget": 10}])


def test_dedup_exact_normalises_and_prefers():
    ds = Dataset.from_dict({
        "instruction": ["Say  Hi", "say hi", "Other", "SAY HI\n", "Other"],
        "output": ["Hello", "hello", "x", "HELLO ", "y"],
        "quality": [0.1, 0.9, 0.0, 0.5, 0.0],
    })
    assert dedup_exact(ds).keep.tolist() == [0, 2, 4]
    assert dedup_exact(ds, prefer="quality").keep.tolist() == [1, 2, 4]
    assert dedup_exact(ds, text="instruction").keep.tolist() == [0, 2]
    assert normalise_text("Ｈｉ  there") == "hi there"


def brute_near(x, threshold, order):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    kept: list[int] = []
    for i in order:
        if all(float(u[i] @ u[j]) < threshold for j in kept):
            kept.append(int(i))
    return sorted(kept)


@pytest.mark.parametrize("block_size", [1, 7, 1024])
def test_dedup_near_matches_brute_force(block_size):
    rng = np.random.default_rng(2)
    base = rng.normal(size=(30, 8))
    x = np.concatenate([base, base[:20] + rng.normal(scale=0.05, size=(20, 8)), base[:5] * 3.0])
    perm = rng.permutation(len(x))
    x = x[perm]
    ds = Dataset.from_dict({"embedding": x.astype(np.float32).tolist(), "q": rng.normal(size=len(x)).tolist()})
    res = dedup_near(ds, threshold=0.97, block_size=block_size)
    assert res.keep.tolist() == brute_near(x.astype(np.float32), 0.97, range(len(x)))
    pref = dedup_near(ds, threshold=0.97, prefer="q", block_size=block_size)
    assert pref.keep.tolist() == brute_near(x.astype(np.float32), 0.97, np.argsort(-np.asarray(ds["q"]),
                                                                                     kind="stable"))


def test_embedding_matrix_errors_and_missing_rows():
    ds = Dataset.from_dict({"embedding": [[1.0, 2.0], None, [3.0, NAN], [0.0, 1.0]]})
    x, rows = embedding_matrix(ds)
    assert rows.tolist() == [0, 3] and x.dtype == np.float32
    res = dedup_near(ds)
    assert res.keep.tolist() == [0, 1, 2, 3] and res.info["rows_without_embedding_kept"] == 2
    with pytest.raises(HFSelectError, match="'embedding'.*different sizes"):
        embedding_matrix(Dataset.from_dict({"embedding": [[1.0, 2.0], [1.0, 2.0, 3.0]]}))
    with pytest.raises(HFSelectError, match="no column 'vec'.*hf-select score embed"):
        embedding_matrix(ds, "vec")


def test_resolve_count_rounds_down():
    assert resolve_count(30, 30, fraction=0.1) == 3  # not 2 from 0.1 * 30 = 2.9999999999999996
    with pytest.raises(ValueError, match="fraction"):
        resolve_count(10, 10, fraction=1.5)
