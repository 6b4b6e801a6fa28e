"""The held-out completion loss of a causal LM on an eval set, computed directly: every completion token's
cross-entropy given its prompt, summed over the eval set and divided by the tokens scored, with an account of every
row that was cut or could not be scored.

The rows go through :func:`hf_select.training.to_prompt_completion` (every assistant turn given the conversation
before it, with ``turns="all"``) and are tokenized exactly as TRL's ``SFTTrainer`` tokenizes them for training
(:func:`hf_select.chat_tokens.tokenize_prompt_completion`); the losses come from the batched
:func:`hf_select.scoring.lm_loss.sequence_losses` (eval mode, no gradients). Unlike the Trainer's ``eval_loss``
(:func:`hf_select.training.evaluate_loss`: a mean over batches of per-batch token means, at the training
``max_length``, long rows silently dropped or cut), the headline :attr:`HeldoutResult.loss` does not depend on the
batching, and the length limit is the eval's own, lowered to the model's ``max_position_embeddings``:

- a row whose completion does not fit is scored on the completion tokens that fit (``rows_truncated``);
- a row that cannot be scored is listed by reason in ``unscored``: ``prompt_too_long`` (the prompt alone fills the
  limit), ``empty_completion`` (an empty response), ``unreadable`` (no prompt and completion could be read from the
  row), ``no_fit`` (out of memory even alone).

Example:
    >>> from datasets import Dataset
    >>> from hf_select.testing import make_tiny_lm
    >>> model, tok = make_tiny_lm()
    >>> ds = Dataset.from_list([{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    ...                         {"instruction": "Say nothing.", "input": "", "output": ""}])
    >>> result = heldout_loss(model, ds, tokenizer=tok, max_length=64)
    >>> result.rows, result.rows_scored, result.tokens_scored, result.unscored
    (2, 1, 3, {'empty_completion': [1]})
    >>> result.loss > 0
    True
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .chat_tokens import tokenize_prompt_completion
from .columns import ROW_ID
from .errors import HFSelectError

logger = logging.getLogger(__name__)

UNSCORED_REASONS = ("prompt_too_long", "empty_completion", "unreadable", "no_fit")
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DEFAULT_MAX_BATCH_SIZE = 64


@dataclass
class HeldoutResult:
    """What :func:`heldout_loss` returns.

    ``loss``: the sum of every scored completion token's loss over the tokens scored (the headline metric);
    ``row_mean_loss``: the mean over scored rows of each row's mean token loss. A "row" in the counts is one
    prompt-completion row (an assistant turn with the conversation before it: several per multi-turn eval row
    with ``turns="all"``), except ``rows``, the eval rows read; ``items`` counts the prompt-completion rows.
    ``tokens_total``: the completion tokens of every readable row before any cut. ``unscored``: reason -> the
    eval-row positions of the rows not scored. ``max_length``: the length limit applied (the eval's, lowered to the
    model's ``max_position_embeddings``).
    """

    loss: float
    row_mean_loss: float
    rows: int
    items: int
    rows_scored: int
    tokens_scored: int
    tokens_total: int
    rows_truncated: int
    max_length: int
    unscored: dict[str, list[int]] = field(default_factory=dict)
    dtype: str = "float32"
    tokens_per_batch: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of every field.

        Example:
            >>> HeldoutResult(1.5, 1.4, 2, 2, 2, 10, 12, 1, 64).to_dict()["unscored"]
            {}
        """
        out = dataclasses.asdict(self)
        out["unscored"] = {k: list(v) for k, v in self.unscored.items()}
        return out


def _model_limit(model: Any, max_length: int) -> int:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    limit = getattr(config, "max_position_embeddings", None)
    return min(int(max_length), int(limit)) if limit else int(max_length)


def _apply_chat_template_path(model: Any, tokenizer: Any, path: str) -> tuple[Any, Any, str | None]:
    """As TRL's ``SFTTrainer`` applies ``chat_template_path``: a .jinja/.j2 file is the template (returned, the
    tokenizer is left alone); anything else is a tokenizer to clone it from (``trl.clone_chat_template``)."""
    if os.path.isfile(path) and path.endswith((".jinja", ".j2")):
        with open(path, encoding="utf-8") as fh:
            return model, tokenizer, fh.read()
    from trl import clone_chat_template

    model, tokenizer, _ = clone_chat_template(model, tokenizer, path)
    return model, tokenizer, None


def heldout_loss(
    model: Any,
    eval_dataset: Any,
    *,
    tokenizer: Any = None,
    max_length: int = 2048,
    precision: str = "auto",
    max_tokens_per_batch: int | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    turns: str = "all",
    column_mapping: Mapping[str, str] | None = None,
    chat_template_path: str | None = None,
    name: str | None = None,
) -> HeldoutResult:
    """Held-out completion loss of ``model`` on ``eval_dataset`` (any format :mod:`hf_select.formats` reads); see
    the module docstring.

    ``model`` is a Hub id or a folder (loaded for inference in the dtype of ``precision``: ``auto`` is bf16 on a GPU
    that supports it, else fp32; see :func:`hf_select.training.resolve_precision`) or a loaded model, then used as it
    is (its dtype and device), with ``tokenizer``. The length limit is ``min(max_length,
    max_position_embeddings)``. Batches: right-padded, length-sorted, at most ``max_tokens_per_batch`` tokens
    (None: 32768 on a GPU, 1024 on a CPU) and ``max_batch_size`` rows. ``name`` (default: the dataset's) names the
    eval set in errors.

    Raises:
        HFSelectError: when no row can be scored (the reasons, with counts), or the tokenizer has no chat template.

    Example:
        >>> heldout_loss("out/final", load_eval_dataset("alpaca_eval_gpt4_805.json")).loss  # doctest: +SKIP
        1.91
    """
    import numpy as np

    from .scoring.batching import default_token_budget
    from .scoring.lm_loss import sequence_losses
    from .training import TURN_MODES, _free_memory, resolve_precision, to_prompt_completion

    if turns not in TURN_MODES:
        raise ValueError(f"heldout_loss: turns must be one of {TURN_MODES}, got {turns!r}")
    if int(max_length) < 2:
        raise ValueError(f"heldout_loss: max_length must be >= 2 (a prompt token and a completion token), got "
                         f"{max_length}")
    if int(max_batch_size) < 1:
        raise ValueError(f"heldout_loss: max_batch_size must be >= 1, got {max_batch_size}")
    label = name or "the eval set"
    loaded_here = isinstance(model, (str, os.PathLike))
    if loaded_here:
        from .models import load_causal_lm

        model, tokenizer = load_causal_lm(str(model), dtype=DTYPE_NAMES[resolve_precision(precision)])
    elif tokenizer is None:
        raise ValueError("heldout_loss: pass the tokenizer together with a loaded model")
    template = None
    if chat_template_path:
        model, tokenizer, template = _apply_chat_template_path(model, tokenizer, str(chat_template_path))
    model_name = getattr(getattr(model, "config", None), "_name_or_path", None) or "the model"
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise HFSelectError(f"{model_name} has no chat template, which the held-out loss of {label} needs (its rows "
                            "are rendered as the trainer renders them); set chat_template_path (an instruct model's "
                            "folder or a .jinja file).")
    limit = _model_limit(model, max_length)
    n_rows = len(eval_dataset)
    plain = eval_dataset.remove_columns(ROW_ID) if ROW_ID in eval_dataset.column_names else eval_dataset
    try:
        pc = to_prompt_completion(plain, column_mapping=column_mapping, turns=turns, drop_empty=False)
    except HFSelectError as err:
        raise HFSelectError(f"{label}: no row could be scored: {err}") from err
    unscored: dict[str, list[int]] = {}
    positions = [int(p) for p in pc[ROW_ID]]
    for missing in sorted(set(range(n_rows)) - set(positions)):
        unscored.setdefault("unreadable", []).append(missing)
    empty = [not str(c[0]["content"]).strip() for c in pc["completion"]]
    keep = [i for i in range(len(pc)) if not empty[i]]
    pairs = tokenize_prompt_completion(tokenizer, pc.select(keep).select_columns(["prompt", "completion"]),
                                       chat_template=template) if keep else []
    seqs: list[tuple[list[int], list[int]]] = []
    seq_item: list[int] = []
    tokens_total = rows_truncated = 0
    truncated_items: set[int] = set()
    by_item = dict(zip(keep, pairs, strict=True))
    for i in range(len(pc)):
        if i not in by_item or not by_item[i][1]:
            unscored.setdefault("empty_completion", []).append(positions[i])
            continue
        prompt_ids, completion_ids = by_item[i]
        tokens_total += len(completion_ids)
        if not prompt_ids:  # nothing predicts the first completion token (TRL never trains on it either)
            prompt_ids, completion_ids = completion_ids[:1], completion_ids[1:]
        room = limit - len(prompt_ids)
        if room < 1 or not completion_ids:
            unscored.setdefault("prompt_too_long", []).append(positions[i])
            continue
        if len(completion_ids) > room:
            completion_ids = completion_ids[:room]
            truncated_items.add(i)
        seqs.append((prompt_ids, completion_ids))
        seq_item.append(i)

    was_training = model.training
    model.eval()
    budget = default_token_budget(max_tokens_per_batch, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    try:
        means, fits = sequence_losses(model, seqs, int(pad), max_tokens=budget, max_rows=int(max_batch_size))
    finally:
        model.train(was_training)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    total_loss = 0.0
    tokens_scored = 0
    row_means: list[float] = []
    for k, i in enumerate(seq_item):
        if not fits[k] or not np.isfinite(means[k]):
            unscored.setdefault("no_fit", []).append(positions[i])
            continue
        n = len(seqs[k][1])
        total_loss += float(means[k]) * n
        tokens_scored += n
        row_means.append(float(means[k]))
        rows_truncated += i in truncated_items
    if loaded_here:
        del model
        _free_memory()
    unscored = {reason: sorted(unscored[reason]) for reason in UNSCORED_REASONS if reason in unscored}
    if not row_means:
        reasons = ", ".join(f"{reason}={len(rows)}" for reason, rows in unscored.items())
        raise HFSelectError(f"{label}: no row could be scored ({reasons}) at max_length {limit}; raise the eval "
                            "max_length (at most the model's max_position_embeddings), give the rows responses, or "
                            "lower max_tokens_per_batch if rows did not fit in memory.")
    if unscored:
        logger.warning("held-out loss of %s: rows not scored: %s", label,
                       ", ".join(f"{k}={len(v)}" for k, v in unscored.items()))
    return HeldoutResult(
        loss=total_loss / tokens_scored, row_mean_loss=float(np.mean(row_means)), rows=n_rows, items=len(pc),
        rows_scored=len(row_means), tokens_scored=tokens_scored, tokens_total=tokens_total,
        rows_truncated=rows_truncated, max_length=limit, unscored=unscored, dtype=dtype, tokens_per_batch=budget,
    )
