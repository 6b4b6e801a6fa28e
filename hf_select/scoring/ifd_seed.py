"""IFD's seed layouts: the token layouts of the Superfiltering and Cherry LLM scripts, reproduced exactly.

``IFDConfig(layout="superfiltering")`` / ``layout="cherry"`` tokenize prompt + response as one text (as the scripts
do), take the response's tokens from the character offsets, and follow each script's truncation and skips
(:data:`SEED_LAYOUTS`). :class:`~hf_select.scoring.ifd.IFDScorer` builds its items from the spans made here.

Example:
    >>> seed_prompt_text([{"role": "user", "content": "Add\\n2", "instruction": "Add", "input": "2"},
    ...                   {"role": "assistant", "content": "4"}], 1, "plain")
    'Add\\n2\\n'
"""

from __future__ import annotations

from typing import Any

from ..formats import ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT, render_prompt_text

RESPONSE_HEADER = "### Response:"
"""The text Cherry LLM puts before the response in the direct pass (``direct_prefix="response_header"``)."""
SEED_LAYOUTS: dict[str, dict[str, str]] = {
    "superfiltering": {"template": "plain", "direct_prefix": "none"},
    "cherry": {"template": "alpaca", "direct_prefix": "response_header"},
}
"""Each seed layout's prompt template and direct pass.

- ``superfiltering``: prompt ``"{instruction}\\n"`` (``"{instruction}\\n{input}\\n"`` when the input is not
  empty); conditioned pass: prompt + response as one text, cut to ``max_length`` tokens; direct pass: the
  response alone, cut to ``max_length - prompt_tokens + 1`` tokens, its first token unscored unless the tokenizer
  adds a BOS. Skipped (NaN + status): an empty response (``empty_response``), a prompt of ``max_length`` tokens
  or more (``prompt_too_long``), no token left to score in a pass (``response_too_short``).
- ``cherry``: the Alpaca prompt ending in ``### Response:``; conditioned pass: prompt + response as one text, cut
  to ``max_length``; direct pass: ``"### Response:" + response`` as one text, cut to
  ``max_length - prompt_tokens - 2`` tokens. Skipped: ``max_length - prompt_tokens - 2 <= 4``
  (``prompt_too_long``), no response token left in a pass (``response_too_short``, e.g. a response ``"-"``
  whose only character merges with the prompt's ``:``).

Both score a whitespace-only response (only ``""`` is skipped), as the scripts do. Rows the scripts never read
(system prompts, history, other formats) get the same template with the history written out, as
:func:`hf_select.formats.render_prompt_text` does; the token layout is the same.
"""

SEED_STATUSES = ("empty_response", "prompt_too_long", "response_too_short")
"""The statuses a seed layout gives a row it skips (all in :data:`hf_select.scoring.ifd.IFD_STATUSES`)."""
Span = tuple[int, list[int], list[int], list[int], list[int]]
"""(row, conditioned context, conditioned target, direct context, direct target) token ids of one scored turn."""


def seed_prompt_text(messages: list[dict[str, str]], turn: int, template: str) -> str:
    """The seed scripts' prompt text: for a one-turn row with instruction/input, their own rule (the input part
    appears when ``input != ""``); other conversations are rendered with the same template."""
    if turn == 1 and messages[0]["role"] == "user" and "instruction" in messages[0]:
        inst, inp = messages[0]["instruction"], messages[0].get("input", "")
        if template == "alpaca":
            return (ALPACA_PROMPT_INPUT if inp != "" else ALPACA_PROMPT_NO_INPUT).format(instruction=inst, input=inp)
        return f"{inst}\n{inp}\n" if inp != "" else f"{inst}\n"
    return render_prompt_text(messages, turn, template)


def joint_split(tokenizer: Any, texts: list[str], cut: list[int]) -> list[tuple[list[int], int]]:
    """Tokenize each text as one sequence; return its ids and the index of its first token whose character offset
    starts at or after ``cut`` (the response's first token). Special tokens are context."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "IFDConfig.layout 'superfiltering'/'cherry' tokenizes prompt + response as one text and needs a fast "
            "tokenizer (character offsets); load a fast tokenizer or use layout='hf_select'."
        )
    enc = tokenizer(texts, return_offsets_mapping=True, return_special_tokens_mask=True)
    out = []
    for ids, offsets, special, c in zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"], cut,
                                        strict=True):
        start = next((i for i, (o, sp) in enumerate(zip(offsets, special, strict=True)) if not sp and o[0] >= c),
                     len(ids))
        out.append((list(ids), start))
    return out


def seed_spans(
    requests: list[tuple[list[dict[str, str]], int]],
    owners: list[int],
    tokenizer: Any,
    template: str,
    max_length: int,
    cherry: bool,
    first_error: dict[int, str],
    tokens: list[int],
) -> list[Span]:
    """Layouts ``superfiltering`` and ``cherry`` (``cherry=True``): each script's token layout, truncation and
    skips (see :data:`SEED_LAYOUTS`), as one :data:`Span` per scored turn.

    ``requests`` are (messages, assistant turn) pairs and ``owners`` their rows; a skipped row gets its reason in
    ``first_error``, and ``tokens[row]`` counts its scored response tokens.
    """
    rows: list[int] = []
    prompts: list[str] = []
    responses: list[str] = []
    for r, (messages, turn) in zip(owners, requests, strict=True):
        response = messages[turn]["content"]
        if response == "":
            first_error.setdefault(r, "empty_response")
            continue
        rows.append(r)
        prompts.append(seed_prompt_text(messages, turn, template))
        responses.append(response)
    if not rows:
        return []
    prompt_lens = [min(len(ids), max_length) for ids in tokenizer(prompts)["input_ids"]]
    joint = joint_split(tokenizer, [p + a for p, a in zip(prompts, responses, strict=True)],
                        [len(p) for p in prompts])
    if cherry:
        direct = joint_split(tokenizer, [RESPONSE_HEADER + a for a in responses],
                             [len(RESPONSE_HEADER)] * len(responses))
    else:
        direct = [(list(ids), 1) for ids in tokenizer(responses)["input_ids"]]
    spans: list[Span] = []
    for r, p_len, (ids, start), (d_ids, d_start) in zip(rows, prompt_lens, joint, direct, strict=True):
        d_limit = max_length - p_len - 2 if cherry else max_length - p_len + 1
        if (cherry and d_limit <= 4) or (not cherry and p_len >= max_length) or start >= max_length:
            first_error.setdefault(r, "prompt_too_long")
            continue
        ids, d_ids = ids[:max_length], d_ids[:d_limit]
        if start >= len(ids) or d_start >= len(d_ids) or start == 0 or d_start == 0:
            first_error.setdefault(r, "response_too_short")
            continue
        tokens[r] += len(ids) - start
        spans.append((r, ids[:start], ids[start:], d_ids[:d_start], d_ids[d_start:]))
    return spans
