"""Property-based tests (hypothesis) over the row formats: whatever a row holds, reading it gives a conversation or
a row status (never another exception); scoring keeps every row, in order, NaN exactly where the status is not ok;
the tolerant reader neither loses nor invents lines; selection never keeps a NaN and accounts for every row.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from hf_select.formats import FORMATS, DatasetFormatError, RowError, detect_format, row_to_messages
from hf_select.scoring.ifd import IFD_STATUSES, IFDConfig, IFDScorer

# Hypothesis keeps caches in ./.hypothesis by default: keep the working tree clean (examples are not stored either).
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "hf-select-hypothesis")

# Text as messy as real data: any code point, surrogates and NUL included, plus the usual suspects.
WEIRD = st.sampled_from(["", " ", "\n\t", "\x00", "\ud800", "\u202e", "👨‍👩‍👧", "\ufeff", "\x1b[0m", "a" * 3000])
TEXT = st.one_of(st.text(st.characters(codec=None, exclude_categories=()), max_size=40), WEIRD)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), TEXT)
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)
ROLE = st.one_of(st.sampled_from(["user", "assistant", "system", "human", "gpt", "tool", "robot", "USER ", ""]),
                 SCALAR)


def turn(role_key: str, content_key: str):
    return st.one_of(st.fixed_dictionaries({role_key: ROLE, content_key: st.one_of(TEXT, VALUE)}), VALUE)


ROWS = st.one_of(
    st.fixed_dictionaries({"instruction": st.one_of(TEXT, VALUE), "output": st.one_of(TEXT, VALUE)},
                          optional={"input": st.one_of(TEXT, VALUE), "system": st.one_of(TEXT, VALUE),
                                    "history": VALUE}),
    st.fixed_dictionaries({"conversations": st.one_of(st.lists(turn("from", "value"), max_size=4), VALUE)},
                          optional={"chosen": VALUE, "system": st.one_of(TEXT, VALUE)}),
    st.fixed_dictionaries({"messages": st.one_of(st.lists(turn("role", "content"), max_size=4), VALUE)}),
    st.fixed_dictionaries({"prompt": st.one_of(TEXT, st.lists(turn("role", "content"), max_size=2), VALUE),
                           "completion": st.one_of(TEXT, st.lists(turn("role", "content"), max_size=2), VALUE)}),
    st.fixed_dictionaries({"_raw": st.one_of(TEXT, st.builds(json.dumps, VALUE))}),
)
ROLES = {"system", "user", "assistant", "tool"}


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(ROWS)
def test_any_row_gives_a_conversation_or_a_row_status(row):
    fmt = detect_format(row.keys())
    assert fmt in FORMATS
    try:
        messages = row_to_messages(row, fmt)
    except RowError as err:
        assert err.status in IFD_STATUSES
        return
    assert messages and {m["role"] for m in messages} <= ROLES
    assert any(m["role"] == "assistant" for m in messages) and any(m["role"] == "user" for m in messages)
    for m in messages:
        assert isinstance(m["content"], str) and "\x00" not in m["content"]
        m["content"].encode("utf-8")  # text every tokenizer and Arrow column can hold


@pytest.fixture(scope="module")
def scorer(tiny_lm_path):
    return IFDScorer(IFDConfig(model_name_or_path=str(tiny_lm_path), max_length=96, template="chat"))


ALPACA_BATCH = st.lists(st.fixed_dictionaries({"instruction": st.one_of(TEXT, SCALAR), "input": SCALAR,
                                               "output": st.one_of(TEXT, SCALAR)}), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(rows=ALPACA_BATCH)
def test_scoring_keeps_every_row_and_marks_each_failure(scorer, rows):
    batch = {k: [r[k] for r in rows] for k in ("instruction", "input", "output")}
    out = scorer(batch)
    assert {len(v) for v in out.values()} == {len(rows)}
    for i, status in enumerate(out["ifd_status"]):
        assert status in IFD_STATUSES
        values = [out[c][i] for c in ("ifd", "ifd_ppl", "loss_conditioned", "loss_direct")]
        if status == "ok":
            assert all(math.isfinite(v) and v > 0 for v in values[:1] + values[2:])
            assert out["response_tokens"][i] > 0
        else:
            assert all(math.isnan(v) for v in values) and out["response_tokens"][i] == 0
    for r, status in zip(rows, out["ifd_status"], strict=True):  # a row's status depends on the row alone
        assert scorer({k: [r[k]] for k in batch})["ifd_status"] == [status]


LINE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20)
GOOD_LINE = st.builds(lambda i, o: json.dumps({"instruction": i, "input": "", "output": o}), LINE_TEXT,
                      LINE_TEXT.filter(str.strip))
BAD_LINE = st.sampled_from(['{"instruction": "x", "output": ', "[1, 2]", '"text"', "42", "{oops", "null", "nan"])
BLANK = st.sampled_from(["", "  ", "\t"])


@settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(GOOD_LINE, GOOD_LINE, BAD_LINE, BLANK), min_size=1, max_size=12))
def test_json_lines_reader_neither_loses_nor_invents_rows(lines, tmp_path_factory):
    from hf_select.errors import HFSelectError
    from hf_select.io import load_rows

    path = tmp_path_factory.mktemp("lines") / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    content = [line for line in lines if line.strip()]
    good = [line for line in content if line.startswith('{"instruction"') and line.endswith("}")]
    try:
        ds = load_rows(path)
    except HFSelectError:
        assert not good  # only a file without a single good row may be refused as a whole
        return
    try:
        fmt = detect_format(ds.column_names)
    except DatasetFormatError:
        assert not good  # rows, but none in a known format (e.g. a lone JSON list): a file-level error
        return
    assert len(ds) == len(content)
    readable = []
    for row in ds:
        try:
            readable.append(json.dumps(row_to_messages(row, fmt)[0]["content"]))
        except RowError as err:
            assert err.status == "invalid_row"
    assert readable == [json.dumps(json.loads(line)["instruction"]) for line in good]


SCORES = st.lists(st.one_of(st.floats(min_value=-5, max_value=5), st.just(math.nan)), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None, database=None)
@given(scores=SCORES, count=st.integers(1, 10), seed=st.integers(0, 2**31 - 1))
def test_selection_never_keeps_nan_and_accounts_for_every_row(scores, count, seed):
    from datasets import Dataset

    from hf_select.selection import select

    ds = Dataset.from_dict({"q": scores})
    steps = [{"step": "threshold", "column": "q", "min": -1.0}, {"step": "random", "count": count}]
    first, again = select(ds, steps, seed=seed), select(ds, steps, seed=seed)
    assert first.row_ids == again.row_ids  # the same seed gives the same rows
    values = np.asarray(scores)
    kept = first.row_ids
    assert all(np.isfinite(values[i]) and values[i] >= -1.0 for i in kept)
    dropped = list(first.dropped["_row_id"])
    assert sorted(kept + dropped) == list(range(len(scores)))  # every row kept or dropped, exactly once
    assert first.dropped_counts().get("nan_score", 0) == int(np.isnan(values).sum())
