"""Row formats and prompt templates.

Every supported row format is turned into one conversation form, a list of messages
``{"role": "system" | "user" | "assistant" | "tool", "content": str}``. Templates then turn a conversation
and the index of one assistant turn into token ids: ``prompt_ids`` (everything before the turn) and
``response_ids`` (the turn itself), such that ``prompt_ids + response_ids`` is exactly what a model
sees during fine-tuning.

Supported row formats (detected from the column names):

- ``alpaca``: ``instruction`` / ``input`` / ``output`` (plus optional ``system`` and ``history``, a list of
  ``[question, answer]`` pairs as in LIMA or LLaMA-Factory data).
- ``sharegpt``: ``conversations`` as a list of ``{"from": ..., "value": ...}``. A conversation that ends
  with a user turn is completed from a ``chosen`` column when there is one (ShareGPT-style DPO data).
- ``messages``: OpenAI-style ``messages`` as a list of ``{"role": ..., "content": ...}``.
- ``prompt_completion``: ``prompt`` / ``completion`` (TRL's format; either may also be a message list).
- Other names through a column mapping, e.g. ``{"question": "instruction", "answer": "output"}``.
  ``question``/``answer``, ``query``/``response`` and ``instruction``/``response`` are recognised without one.

Example:
    >>> row = {"instruction": "Add 2 and 3.", "input": "", "output": "5"}
    >>> detect_format(row.keys())
    'alpaca'
    >>> row_to_messages(row, "alpaca")[1]["content"]
    '5'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import HFSelectError

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion", "raw")
TEMPLATES = ("auto", "chat", "alpaca", "vicuna", "plain")
TURNS = ("last", "all")

# The prompts used by Stanford Alpaca and, after it, by Cherry LLM's IFD scripts.
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
# The Vicuna v1.1 system line and its USER/ASSISTANT turn markers.
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

_ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "prompter": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "function_call": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
    "ipython": "tool",
}

# Column aliases recognised without an explicit mapping: alias -> canonical alpaca field.
_DEFAULT_ALIASES = {
    "question": "instruction",
    "query": "instruction",
    "response": "output",
    "answer": "output",
}


class RowError(HFSelectError, ValueError):
    """A row that cannot be scored. ``status`` is the value written to the ``*_status`` column."""

    def __init__(self, status: str, message: str = ""):
        super().__init__(message or status)
        self.status = status


class DatasetFormatError(HFSelectError, ValueError):
    """The dataset as a whole has no recognisable format (raised once, before any scoring)."""


@dataclass(frozen=True)
class Segment:
    """One scored unit: the tokens before an assistant turn and the turn's own tokens."""

    prompt_ids: list[int]
    response_ids: list[int]


def _canonical_columns(columns: Iterable[str], column_mapping: Mapping[str, str] | None) -> dict[str, str]:
    """Map canonical field name -> actual column name."""
    columns = list(columns)
    out: dict[str, str] = {}
    for col in columns:
        out.setdefault(col, col)
    for alias, canon in _DEFAULT_ALIASES.items():
        if alias in columns and canon not in columns:
            out.setdefault(canon, alias)
    if "prompt" in columns and "output" in out and "completion" not in columns and "instruction" not in out:
        out["instruction"] = "prompt"
    for src, canon in (column_mapping or {}).items():
        if src not in columns:
            raise DatasetFormatError(
                f"column_mapping names the column {src!r}, which the dataset does not have (columns: {columns})."
            )
        out[canon] = src
    return out


def detect_format(columns: Iterable[str], column_mapping: Mapping[str, str] | None = None) -> str:
    """Return the row format of a dataset from its column names.

    Raises:
        DatasetFormatError: when none of the known column sets is present. The message lists them.

    Example:
        >>> detect_format(["conversations"])
        'sharegpt'
        >>> detect_format(["question", "answer"])
        'alpaca'
    """
    cols = _canonical_columns(columns, column_mapping)
    if "_raw" in cols:
        return "raw"
    if "messages" in cols:
        return "messages"
    if "conversations" in cols:
        return "sharegpt"
    if "prompt" in cols and "completion" in cols:
        return "prompt_completion"
    if "instruction" in cols and "output" in cols:
        return "alpaca"
    raise DatasetFormatError(
        f"none of the known row formats matches the columns {sorted(columns)}: expected 'messages' "
        "(role/content), 'conversations' (from/value), 'prompt'+'completion', or 'instruction'+'output' "
        "(also 'question'+'answer', 'instruction'+'response'); for other names map your columns: with hf-select "
        "score/select/report, --column-mapping your_col=instruction --column-mapping your_answer_col=output; in "
        "Python or a recipe config, column_mapping={'your_col': 'instruction', 'your_answer_col': 'output'}."
    )


def _text(value: Any, field: str) -> str:
    if value is None:
        raise RowError("invalid_row", f"field {field!r} is missing (None)")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError("invalid_row", f"field {field!r} is {type(value).__name__}, expected text")
    if not isinstance(value, str):
        raise RowError("invalid_row", f"field {field!r} is a number, expected text")
    if "\x00" in value:
        raise RowError("invalid_row", f"field {field!r} contains a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:  # an unpaired surrogate: no tokenizer or Arrow column can hold it
        raise RowError("invalid_row", f"field {field!r} holds text that is not valid Unicode") from err
    return value


def _optional_text(value: Any, field: str) -> str:
    return "" if value is None else _text(value, field)


def _normalise_messages(items: Any, role_key: str, content_key: str, field: str) -> list[dict[str, str]]:
    if not isinstance(items, (list, tuple)):
        raise RowError("invalid_row", f"field {field!r} is {type(items).__name__}, expected a list of turns")
    out = []
    for turn in items:
        if not isinstance(turn, Mapping):
            raise RowError("invalid_row", f"a turn in {field!r} is {type(turn).__name__}, expected a mapping")
        role = turn.get(role_key, turn.get("role", turn.get("from")))
        content = turn.get(content_key, turn.get("content", turn.get("value")))
        if not isinstance(role, str) or role.strip().lower() not in _ROLE_ALIASES:
            raise RowError("unknown_role", f"unknown role {role!r} in {field!r}")
        out.append({"role": _ROLE_ALIASES[role.strip().lower()], "content": _text(content, f"{field}.{content_key}")})
    return out


def row_to_messages(
    row: Mapping[str, Any], fmt: str, column_mapping: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """Turn one row into a list of messages. Alpaca user turns keep ``instruction``/``input`` as extra keys.

    Raises:
        RowError: with ``status`` ``invalid_row``, ``unknown_role`` or ``no_assistant_turn``.

    Example:
        >>> row_to_messages({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        ...                 "sharegpt")
        [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}]
    """
    if fmt == "raw":  # rows kept as JSON text by the tolerant loader: each row finds its own format
        try:
            obj = json.loads(row["_raw"])
        except (TypeError, ValueError) as err:
            raise RowError("invalid_row", "the line is not valid JSON") from err
        if not isinstance(obj, dict):
            raise RowError("invalid_row", "the line is not a JSON object")
        try:
            own = detect_format(obj.keys(), column_mapping)
        except DatasetFormatError as err:
            raise RowError("invalid_row", str(err)) from err
        return row_to_messages(obj, own, column_mapping)
    present = [k for k, v in row.items() if v is not None]
    if len(present) < len(row):  # a file that mixes formats: other formats' columns are null in this row
        try:
            own = detect_format(present, column_mapping)
        except DatasetFormatError:
            own = fmt
        if own != fmt:
            return row_to_messages({k: row[k] for k in present}, own, column_mapping)
    cols = _canonical_columns(row.keys(), column_mapping)

    def get(name: str) -> Any:
        return row.get(cols.get(name, name))

    if fmt == "alpaca":
        messages: list[dict[str, str]] = []
        system = get("system")
        if system:
            messages.append({"role": "system", "content": _text(system, "system")})
        history = get("history")
        if history:
            if not isinstance(history, (list, tuple)):
                raise RowError("invalid_row", "field 'history' is not a list of [question, answer] pairs")
            for pair in history:
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise RowError("invalid_row", "field 'history' is not a list of [question, answer] pairs")
                messages.append({"role": "user", "content": _text(pair[0], "history")})
                messages.append({"role": "assistant", "content": _text(pair[1], "history")})
        instruction = _text(get("instruction"), cols.get("instruction", "instruction"))
        inp = _optional_text(get("input"), "input")
        content = f"{instruction}\n{inp}" if inp.strip() else instruction
        messages.append({"role": "user", "content": content, "instruction": instruction, "input": inp})
        messages.append({"role": "assistant", "content": _text(get("output"), cols.get("output", "output"))})
    elif fmt == "sharegpt":
        messages = _normalise_messages(get("conversations"), "from", "value", "conversations")
        chosen = row.get("chosen")
        if messages and messages[-1]["role"] == "user" and chosen is not None:
            messages += _normalise_messages(
                [chosen] if isinstance(chosen, Mapping) else chosen, "from", "value", "chosen"
            )
        system = row.get("system")
        if system and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": _text(system, "system")})
    elif fmt == "messages":
        messages = _normalise_messages(get("messages"), "role", "content", "messages")
    elif fmt == "prompt_completion":
        prompt, completion = get("prompt"), get("completion")
        if isinstance(prompt, (list, tuple)):
            messages = _normalise_messages(prompt, "role", "content", "prompt")
        else:
            messages = [{"role": "user", "content": _text(prompt, "prompt")}]
        if isinstance(completion, (list, tuple)):
            messages += _normalise_messages(completion, "role", "content", "completion")
        else:
            messages.append({"role": "assistant", "content": _text(completion, "completion")})
    else:
        raise ValueError(f"unknown row format {fmt!r}; expected one of {FORMATS}")
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("no_assistant_turn", "the conversation has no assistant turn")
    if not any(m["role"] == "user" for m in messages):
        raise RowError("invalid_row", "the conversation has no user turn")
    return messages


def assistant_turns(messages: Sequence[Mapping[str, str]], turns: str = "last") -> list[int]:
    """Indices of the assistant turns to score: the last one (default) or every one.

    Example:
        >>> assistant_turns([{"role": "user"}, {"role": "assistant"}, {"role": "user"}, {"role": "assistant"}], "all")
        [1, 3]
    """
    idx = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if turns == "last":
        return idx[-1:]
    if turns == "all":
        return idx
    raise ValueError(f"turns must be one of {TURNS}, got {turns!r}")


def last_user_text(messages: Sequence[Mapping[str, str]], before: int | None = None) -> str:
    """The content of the last user message before index ``before`` (the instruction for that turn)."""
    end = len(messages) if before is None else before
    for m in reversed(messages[:end]):
        if m["role"] == "user":
            return m["content"]
    return ""


def resolve_template(template: str, tokenizer: Any) -> str:
    """``auto`` becomes ``chat`` when the tokenizer has a chat template, else ``plain``."""
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    if template == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "template='chat' but the tokenizer has no chat template; use template='alpaca', 'vicuna' or 'plain'."
        )
    return template


def _plain_user(m: Mapping[str, str]) -> str:
    if "instruction" in m:
        inp = m.get("input", "")
        return f"{m['instruction']}\n{inp}\n" if inp.strip() else f"{m['instruction']}\n"
    return f"{m['content']}\n"


def render_prompt_text(messages: Sequence[Mapping[str, str]], turn: int, template: str) -> str:
    """The text of the prompt before assistant turn ``turn`` for the text templates (alpaca, vicuna, plain).

    Earlier turns are written out in the same template, each answer followed directly by the next prompt.

    Example:
        >>> render_prompt_text([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], 1, "plain")
        'Hi\\n'
    """
    history = list(messages[:turn])
    system = "\n".join(m["content"] for m in history if m["role"] == "system")
    dialogue = [m for m in history if m["role"] != "system"]
    parts: list[str] = []
    if template == "vicuna":
        parts.append((system or VICUNA_SYSTEM) + " ")
        for m in dialogue:
            if m["role"] == "assistant":
                parts.append(f"ASSISTANT: {m['content']}</s>")
            elif m["role"] == "tool":
                parts.append(f"OBSERVATION: {m['content']} ")
            else:
                parts.append(f"USER: {m['content']} ")
        parts.append("ASSISTANT:")
        return "".join(parts)
    if system:
        parts.append(system + "\n")
    for k, m in enumerate(dialogue):
        is_last_user = m["role"] == "user" and all(x["role"] != "user" for x in dialogue[k + 1 :])
        if m["role"] == "assistant":
            parts.append(m["content"] + "\n")
        elif template == "alpaca" and is_last_user:
            inst = m.get("instruction", m["content"])
            inp = m.get("input", "")
            tmpl = ALPACA_PROMPT_INPUT if inp.strip() else ALPACA_PROMPT_NO_INPUT
            parts.append(tmpl.format(instruction=inst, input=inp))
        elif template == "alpaca":
            parts.append(m["content"] + "\n")
        else:  # plain
            parts.append(_plain_user(m))
    return "".join(parts)


def _chat_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def encode_segment(tokenizer: Any, messages: Sequence[Mapping[str, str]], turn: int, template: str) -> Segment:
    """Token ids of the prompt before assistant turn ``turn`` and of the turn itself.

    - ``alpaca``/``vicuna``/``plain``: ``tokenizer(prompt).input_ids`` followed by
      ``tokenizer(response, add_special_tokens=False).input_ids``.
    - ``chat``: the chat template rendered up to the turn (with the generation prompt) and with the turn;
      the prompt's ids must be a prefix of the whole conversation's ids (else ``template_mismatch``), and the
      response is the rest, end-of-turn tokens included (what SFT trains on).

    Raises:
        RowError: ``empty_response``, ``template_error`` or ``template_mismatch``.
    """
    result = encode_segments(tokenizer, [(messages, turn)], template)[0]
    if isinstance(result, RowError):
        raise result
    return result


def _segment_texts(messages: Sequence[Mapping[str, str]], turn: int, template: str, tokenizer: Any) -> tuple[str, str]:
    """(prompt text, full conversation text) for ``chat``; (prompt text, response text) for the text templates."""
    response = messages[turn]["content"]
    if not response.strip():
        raise RowError("empty_response", "the response is empty")
    if template != "chat":
        return render_prompt_text(messages, turn, template), response
    msgs = _chat_messages(messages[: turn + 1])
    try:
        prompt_text = tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(msgs, tokenize=False)
    except Exception as err:  # templates raise on role orders they do not support
        raise RowError("template_error", f"the chat template rejected this conversation: {err}") from err
    return prompt_text, full_text


def encode_segments(
    tokenizer: Any, requests: Sequence[tuple[Sequence[Mapping[str, str]], int]], template: str
) -> list[Segment | RowError]:
    """:func:`encode_segment` for many ``(messages, turn)`` requests, with one batched tokenizer call per side.

    Returns a ``Segment`` or the ``RowError`` of each request, in order.
    """
    results: list[Segment | RowError | None] = [None] * len(requests)
    texts_a: list[str] = []
    texts_b: list[str] = []
    where: list[int] = []
    for i, (messages, turn) in enumerate(requests):
        try:
            a, b = _segment_texts(messages, turn, template, tokenizer)
        except RowError as err:
            results[i] = err
            continue
        texts_a.append(a)
        texts_b.append(b)
        where.append(i)
    if where:
        chat = template == "chat"
        ids_a = tokenizer(texts_a, add_special_tokens=not chat)["input_ids"]
        ids_b = tokenizer(texts_b, add_special_tokens=False)["input_ids"]
        for i, a, b in zip(where, ids_a, ids_b, strict=True):
            a, b = list(a), list(b)
            if chat:
                if b[: len(a)] != a or len(b) <= len(a):
                    results[i] = RowError(
                        "template_mismatch", "the rendered prompt's tokens are not a prefix of the conversation's"
                    )
                else:
                    results[i] = Segment(a, b[len(a) :])
            elif not b:
                results[i] = RowError("empty_response", "the response has no tokens")
            else:
                results[i] = Segment(a, b)
    return results  # type: ignore[return-value]


def prompt_text_for_generation(tokenizer: Any, messages: Sequence[Mapping[str, str]], turn: int, template: str) -> str:
    """The prompt a model should continue to answer assistant turn ``turn`` (for generation)."""
    if template == "chat":
        return tokenizer.apply_chat_template(
            _chat_messages(messages[:turn]), tokenize=False, add_generation_prompt=True
        )
    return render_prompt_text(messages, turn, template)
