"""Row formats and templates: every format reaches the same conversation; templates give exact token ids."""

from __future__ import annotations

import pytest

from hf_select.formats import (
    ALPACA_PROMPT_INPUT,
    ALPACA_PROMPT_NO_INPUT,
    DatasetFormatError,
    RowError,
    assistant_turns,
    detect_format,
    encode_segment,
    render_prompt_text,
    resolve_template,
    row_to_messages,
)
from hf_select.testing import make_tiny_tokenizer

EXPECTED = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]


def _strip(messages):
    return [{"role": m["role"], "content": m["content"]} for m in messages]


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"instruction": "Say hi", "input": "", "output": "hi"}, "alpaca"),
        ({"conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi"}]}, "sharegpt"),
        ({"messages": EXPECTED}, "messages"),
        ({"prompt": "Say hi", "completion": "hi"}, "prompt_completion"),
        ({"prompt": [EXPECTED[0]], "completion": [EXPECTED[1]]}, "prompt_completion"),
        ({"question": "Say hi", "answer": "hi"}, "alpaca"),
        ({"instruction": "Say hi", "response": "hi"}, "alpaca"),
        ({"query": "Say hi", "response": "hi"}, "alpaca"),
    ],
)
def test_every_format_gives_the_same_conversation(row, fmt):
    assert detect_format(row.keys()) == fmt
    assert _strip(row_to_messages(row, fmt)) == EXPECTED


def test_column_mapping_and_unknown_columns():
    row = {"q": "Say hi", "a": "hi"}
    mapping = {"q": "instruction", "a": "output"}
    assert detect_format(row.keys(), mapping) == "alpaca"
    assert _strip(row_to_messages(row, "alpaca", mapping)) == EXPECTED
    with pytest.raises(DatasetFormatError, match="column_mapping"):
        detect_format(row.keys())
    with pytest.raises(DatasetFormatError, match="'missing'"):
        detect_format(row.keys(), {"missing": "instruction"})


def test_alpaca_input_history_and_system():
    row = {"instruction": "Q2", "input": "ctx", "output": "A2", "history": [["Q1", "A1"]], "system": "Be brief."}
    msgs = row_to_messages(row, "alpaca")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[3]["content"] == "Q2\nctx" and msgs[3]["instruction"] == "Q2" and msgs[3]["input"] == "ctx"
    assert assistant_turns(msgs, "last") == [4] and assistant_turns(msgs, "all") == [2, 4]


def test_sharegpt_roles_and_dpo_chosen():
    row = {
        "conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"}],
        "chosen": {"from": "gpt", "value": "A"},
    }
    msgs = row_to_messages(row, "sharegpt")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    tool = {
        "conversations": [
            {"from": "human", "value": "Q"},
            {"from": "function_call", "value": "{}"},
            {"from": "observation", "value": "42"},
            {"from": "gpt", "value": "A"},
        ]
    }
    assert [m["role"] for m in row_to_messages(tool, "sharegpt")] == ["user", "assistant", "tool", "assistant"]


@pytest.mark.parametrize(
    ("row", "fmt", "status"),
    [
        ({"instruction": None, "input": "", "output": "x"}, "alpaca", "invalid_row"),
        ({"instruction": 3, "input": "", "output": "x"}, "alpaca", "invalid_row"),
        ({"instruction": ["a"], "input": "", "output": "x"}, "alpaca", "invalid_row"),
        ({"instruction": "a\x00b", "input": "", "output": "x"}, "alpaca", "invalid_row"),
        (
            {"messages": [{"role": "user", "content": "Q"}, {"role": "wizard", "content": "A"}]},
            "messages",
            "unknown_role",
        ),
        ({"messages": [{"role": "user", "content": "Q"}]}, "messages", "no_assistant_turn"),
        ({"messages": "not a list"}, "messages", "invalid_row"),
        ({"conversations": [{"from": "gpt", "value": "A"}]}, "sharegpt", "invalid_row"),
    ],
)
def test_bad_rows_raise_row_error_with_status(row, fmt, status):
    with pytest.raises(RowError) as info:
        row_to_messages(row, fmt)
    assert info.value.status == status


def test_plain_alpaca_vicuna_prompts():
    msgs = row_to_messages({"instruction": "Add.", "input": "2 3", "output": "5"}, "alpaca")
    assert render_prompt_text(msgs, 1, "plain") == "Add.\n2 3\n"
    assert render_prompt_text(msgs, 1, "alpaca") == ALPACA_PROMPT_INPUT.format(instruction="Add.", input="2 3")
    no_input = row_to_messages({"instruction": "Add.", "input": "", "output": "5"}, "alpaca")
    assert render_prompt_text(no_input, 1, "plain") == "Add.\n"
    assert render_prompt_text(no_input, 1, "alpaca") == ALPACA_PROMPT_NO_INPUT.format(instruction="Add.")
    vicuna = render_prompt_text(no_input, 1, "vicuna")
    assert vicuna.endswith("USER: Add. ASSISTANT:")


@pytest.mark.parametrize("template", ["plain", "alpaca", "vicuna"])
def test_text_templates_are_exact_token_concatenations(template):
    tok = make_tiny_tokenizer()
    msgs = row_to_messages({"instruction": "Sort 3 1 2", "input": "", "output": "1 2 3"}, "alpaca")
    seg = encode_segment(tok, msgs, 1, template)
    assert seg.prompt_ids == tok(render_prompt_text(msgs, 1, template))["input_ids"]
    assert seg.response_ids == tok("1 2 3", add_special_tokens=False)["input_ids"]


def test_chat_template_prompt_is_a_prefix_and_response_ends_the_turn():
    tok = make_tiny_tokenizer()
    msgs = _strip(row_to_messages({"messages": EXPECTED * 2}, "messages"))
    seg = encode_segment(tok, msgs, 3, "chat")
    full = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]
    assert seg.prompt_ids + seg.response_ids == full
    assert tok.decode(seg.response_ids).startswith("hi<|im_end|>")


def test_chat_template_mismatch_and_empty_response():
    tok = make_tiny_tokenizer()
    # A template that renders the assistant header differently with and without the generation prompt.
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}BOT: {% else %}USER: {% endif %}{{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}ASSISTANT: {% endif %}"
    )
    with pytest.raises(RowError) as info:
        encode_segment(tok, EXPECTED, 1, "chat")
    assert info.value.status == "template_mismatch"
    with pytest.raises(RowError) as info:
        encode_segment(tok, [EXPECTED[0], {"role": "assistant", "content": "  "}], 1, "plain")
    assert info.value.status == "empty_response"


def test_resolve_template():
    tok = make_tiny_tokenizer()
    assert resolve_template("auto", tok) == "chat"
    plain_tok = make_tiny_tokenizer(chat_template=False)
    assert resolve_template("auto", plain_tok) == "plain"
    with pytest.raises(ValueError, match="chat template"):
        resolve_template("chat", plain_tok)
    with pytest.raises(ValueError, match="template must be one of"):
        resolve_template("llama", tok)


def test_raw_rows_find_their_own_format():
    import json

    assert detect_format(["_raw"]) == "raw"
    row = {"_raw": json.dumps({"messages": EXPECTED})}
    assert _strip(row_to_messages(row, "raw")) == EXPECTED
    with pytest.raises(RowError):
        row_to_messages({"_raw": "null"}, "raw")
