"""Loss reduction (CoLoR-Filter-style, arXiv 2406.10670): how much a row's loss drops under a copy of the scoring
model briefly fine-tuned on a target set.

The scorer loads the base model, fine-tunes a copy of it on the target rows (``steps`` AdamW steps at a constant
``learning_rate``, ``batch_size`` target rows per step, in float32, the completion tokens' loss as TRL's
``SFTTrainer`` computes it), and scores every row's completion loss under both models:

- ``loss_base``: the mean completion-token loss under the base model;
- ``loss_tuned``: the same under the tuned copy;
- ``loss_reduction`` = ``loss_base - loss_tuned``: large where the target data taught the model something this row
  also needs (CoLoR-Filter ranks by this difference, the conditional minus the prior loss, with the sign flipped);
- ``loss_reduction_status``: ``ok``, or why the row has no score (``invalid_row``, ``unknown_role``,
  ``no_assistant_turn``, ``empty_response``, ``prompt_too_long``, ``oom``, ``non_finite``).

Rows are rendered with the model's chat template exactly as the trainer renders them
(:func:`hf_select.chat_tokens.tokenize_prompt_completion`), cut to ``max_length`` tokens (the completion's first
tokens kept), and the losses come from :func:`hf_select.scoring.lm_loss.sequence_losses`. The tuned copy is cast back
to the base model's dtype before scoring, so both losses are computed the same way.

Cost: the tuning is ``steps x batch_size`` target rows forward and backward (:attr:`LossReductionScorer.tuning`
records the steps, the learning rate, the seconds and the target loss before and after), then two forward passes per
scored row (twice an IFD pass's cost without the direct pass), and two copies of the model in memory.

Errors: no target (``LossReductionConfig.target``), a target set with no usable row, and a tuned copy whose loss
goes NaN or infinite (too large a ``learning_rate`` or too many ``steps``) stop the run with one message naming
the field to change; the scorer never falls back to another score.

Example:
    >>> from hf_select.scoring.loss_reduction import LossReductionConfig, LossReductionScorer
    >>> scorer = LossReductionScorer(LossReductionConfig(target="target.jsonl", steps=20))  # doctest: +SKIP
    >>> scored = scorer.score(pool)  # doctest: +SKIP
    >>> scorer.tuning["steps"], scored[0]["loss_reduction"]  # doctest: +SKIP
    (20, 0.12)
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Features, Value

from ..chat_tokens import tokenize_prompt_completion
from ..errors import HFSelectError
from ..formats import RowError, assistant_turns, detect_format, row_to_messages
from ..models import DEFAULT_LM, load_causal_lm, model_identity
from .base import BaseScorer, stable_hash
from .common import model_limit
from .config import ScorerConfig, shared
from .lm_loss import sequence_losses

logger = logging.getLogger(__name__)

LOSS_REDUCTION_STATUSES = ("ok", "invalid_row", "unknown_role", "no_assistant_turn", "empty_response",
                           "prompt_too_long", "oom", "non_finite")


@dataclass
class LossReductionConfig(ScorerConfig):
    """Configuration of :class:`LossReductionScorer` (the shared model and batching fields: :class:`ScorerConfig`).

    Example:
        >>> LossReductionConfig(target="t.jsonl").steps
        20
        >>> LossReductionConfig(steps=0)
        Traceback (most recent call last):
        ...
        ValueError: LossReductionConfig.steps must be >= 1, got 0
    """

    model_name_or_path: str = shared("model_name_or_path", DEFAULT_LM,
                                     help="Causal LM (Hub id or folder) that is scored and, as a copy, fine-tuned.")
    max_length: int = shared("max_length", 1024, help="Maximum tokens of prompt + response (the response is cut).")
    target: str | None = field(
        default=None,
        metadata={"help": "Target rows (a json/jsonl/parquet file or a save_to_disk folder, any row format): the "
                          "kind of data wanted, never the eval set itself. From Python also set_target(rows)."},
    )
    target_limit: int | None = field(default=None, metadata={"help": "Use at most this many target rows."})
    steps: int = field(default=20, metadata={"help": "AdamW steps of fine-tuning on the target rows."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Constant learning rate of the fine-tuning."})
    batch_size: int = field(default=8, metadata={"help": "Target rows per fine-tuning step."})
    micro_batch_tokens: int = field(
        default=2048,
        metadata={"help": "Most tokens (rows x padded width) per forward and backward pass of the fine-tuning: a "
                          "step's rows are split into micro-batches this size and their gradients summed, each "
                          "weighted by its share of the step's completion tokens (the same step as one batch, in "
                          "bounded memory: 8 rows of 1,024 tokens in one pass took over 20 GB on CPU)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the target rows' order (and of torch)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "batch_size", "micro_batch_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LossReductionConfig.{name} must be >= 1, got {value}")
        if self.target_limit is not None and (isinstance(self.target_limit, bool) or self.target_limit < 1):
            raise ValueError(f"LossReductionConfig.target_limit must be >= 1 or None, got {self.target_limit}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            raise ValueError(f"LossReductionConfig.learning_rate must be a finite number > 0, got "
                             f"{self.learning_rate!r}")
        if self.target is not None and not isinstance(self.target, (str, os.PathLike)):
            raise ValueError(f"LossReductionConfig.target must be a file or folder, got {self.target!r}")
        if isinstance(self.target, os.PathLike):
            self.target = os.fspath(self.target)


def prompt_completion_pairs(tokenizer: Any, batch: Mapping[str, Sequence[Any]], limit: int,
                            column_mapping: Mapping[str, str] | None = None
                            ) -> tuple[list[tuple[list[int], list[int]] | None], list[str]]:
    """``(prompt_ids, completion_ids)`` of each row's last assistant turn, as the trainer tokenizes it, cut to
    ``limit`` tokens (None where a row cannot be scored), and the statuses.

    Example:
        >>> from hf_select.testing import make_tiny_tokenizer
        >>> pairs, status = prompt_completion_pairs(make_tiny_tokenizer(), {"instruction": ["Hi", "Yo"],
        ...                                         "output": ["Hello", ""]}, 64)
        >>> status, len(pairs[0][1]) > 0, pairs[1]
        (['ok', 'empty_response'], True, None)
    """
    keys = list(batch.keys())
    n = len(batch[keys[0]]) if keys else 0
    fmt = detect_format(keys, column_mapping)
    rows: list[dict[str, Any] | None] = []
    status: list[str] = []
    for r in range(n):
        try:
            messages = row_to_messages({k: batch[k][r] for k in keys}, fmt, column_mapping)
            t = assistant_turns(messages, "last")[0]
        except RowError as err:
            rows.append(None)
            status.append(err.status)
            continue
        if not str(messages[t]["content"]).strip():
            rows.append(None)
            status.append("empty_response")
            continue
        clean = [{"role": m["role"], "content": m["content"]} for m in messages[: t + 1]]
        rows.append({"prompt": clean[:-1], "completion": clean[-1:]})
        status.append("ok")
    todo = [i for i, row in enumerate(rows) if row is not None]
    tokenized = tokenize_prompt_completion(tokenizer, [rows[i] for i in todo]) if todo else []
    pairs: list[tuple[list[int], list[int]] | None] = [None] * n
    for i, (prompt_ids, completion_ids) in zip(todo, tokenized, strict=True):
        if not prompt_ids:  # nothing predicts the first completion token (TRL never trains on it either)
            prompt_ids, completion_ids = completion_ids[:1], completion_ids[1:]
        room = limit - len(prompt_ids)
        if room < 1 or not completion_ids:
            status[i] = "prompt_too_long" if room < 1 else "empty_response"
            continue
        pairs[i] = (list(prompt_ids), list(completion_ids[:room]))
    return pairs, status


def _file_digest(path: str) -> str:
    """SHA-256 of a target file (a folder: of its files' names, sizes and times), so that new target rows are a
    new score."""
    if os.path.isfile(path):
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]
    if os.path.isdir(path):
        entries = sorted((name, os.path.getsize(os.path.join(path, name)), os.path.getmtime(os.path.join(path, name)))
                         for name in os.listdir(path) if os.path.isfile(os.path.join(path, name)))
        return stable_hash(entries)
    return path


class LossReductionScorer(BaseScorer):
    """Adds ``loss_base``, ``loss_tuned``, ``loss_reduction`` and ``loss_reduction_status`` (see the module
    docstring). The tuned copy is made on first use (:meth:`load`); :attr:`tuning` then says how.

    Example:
        >>> scorer = LossReductionScorer(LossReductionConfig(target="target.jsonl"))
        >>> scorer.output_columns
        ('loss_base', 'loss_tuned', 'loss_reduction', 'loss_reduction_status')
    """

    name = "loss_reduction"
    config_class = LossReductionConfig
    features = Features({"loss_base": Value("float64"), "loss_tuned": Value("float64"),
                         "loss_reduction": Value("float64"), "loss_reduction_status": Value("string")})

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._target_rows: Any = None
        self.tuning: dict[str, Any] | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._target_rows = None
        self.tuning = None

    # -- the target set ------------------------------------------------------------------------------------------
    def set_target(self, rows: Any) -> LossReductionScorer:
        """Use these target rows (a ``datasets.Dataset`` or a list of row dicts) instead of ``config.target``."""
        from datasets import Dataset

        self._target_rows = Dataset.from_list(list(rows)) if isinstance(rows, list) else rows
        self._loaded.pop("tuned", None)
        return self

    def target_rows(self) -> Any:
        """The target rows (``config.target`` read once, cut to ``target_limit``).

        Raises:
            HFSelectError: no target given, or an empty target set.
        """
        cfg = self.config
        rows = self._target_rows
        if rows is None:
            if not cfg.target:
                raise HFSelectError("loss_reduction: no target set; set LossReductionConfig.target to a file of rows "
                                    "of the kind you want (never the eval set itself), or call set_target(rows).")
            from ..io import load_rows

            rows = load_rows(cfg.target)
        if cfg.target_limit is not None and len(rows) > cfg.target_limit:
            rows = rows.select(range(cfg.target_limit))
        if len(rows) == 0:
            raise HFSelectError(f"loss_reduction: the target set {cfg.target or '(given rows)'} is empty; set "
                                "LossReductionConfig.target to a file with at least one row with a response.")
        return rows

    def model_ids(self) -> list[str]:
        given = self.given_model_identity()
        base = given or model_identity(None, self.config.model_name_or_path, self.config.revision)
        if self._target_rows is not None:
            target = f"target-rows:{stable_hash(self._target_rows.to_list())}"
        else:
            target = f"target:{_file_digest(self.config.target) if self.config.target else None}"
        return [base, target]

    # -- models ------------------------------------------------------------------------------------------------
    def load(self) -> tuple[Any, Any, Any]:
        """Load (once) the base model and tokenizer and tune the copy: ``(base, tuned, tokenizer)``."""
        if "model" not in self._loaded:
            model, tok = load_causal_lm(self.config.model_name_or_path, **self.config.load_kwargs())
            self._loaded.update(model=model, tokenizer=tok)
        base, tok = self._loaded["model"], self._loaded["tokenizer"]
        if "tuned" not in self._loaded:
            self._loaded["tuned"] = self.tune(base, tok)
        return base, self._loaded["tuned"], tok

    def set_model(self, model: Any, tokenizer: Any) -> LossReductionScorer:
        """Use an already loaded base model and tokenizer (the copy is tuned from it on first use)."""
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._loaded.pop("tuned", None)
        self._loaded.update(model=model, tokenizer=tokenizer, given=True)
        return self

    def _pad_id(self, tokenizer: Any) -> int:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return int(pad or 0)

    def _target_pairs(self, tokenizer: Any, limit: int) -> list[tuple[list[int], list[int]]]:
        rows = self.target_rows()
        pairs, status = prompt_completion_pairs(tokenizer, rows.to_dict(), limit, self.config.column_mapping)
        usable = [p for p in pairs if p is not None]
        if not usable:
            counts = {s: status.count(s) for s in sorted(set(status))}
            raise HFSelectError(f"loss_reduction: no row of the target set {self.config.target or '(given rows)'} "
                                f"can be trained on ({counts}); set LossReductionConfig.target to rows with a "
                                "prompt and a response that fit max_length.")
        return usable

    def _mean_loss(self, model: Any, tokenizer: Any, pairs: list[tuple[list[int], list[int]]]) -> float:
        losses, fits = sequence_losses(model, pairs, self._pad_id(tokenizer),
                                       max_tokens=self.config.token_budget(model),
                                       max_rows=self.config.max_batch_size)
        weights = np.asarray([len(c) for _, c in pairs], dtype=np.float64)
        ok = fits & np.isfinite(losses)
        if not ok.all():
            return float("nan")
        return float((losses * weights).sum() / weights.sum())

    def _diverged(self, what: str) -> HFSelectError:
        cfg = self.config
        return HFSelectError(f"loss_reduction: the tuned copy's loss on the target rows is {what} (learning_rate="
                             f"{cfg.learning_rate:g}, steps={cfg.steps}); lower LossReductionConfig.learning_rate "
                             "(or steps) and run again.")

    def tune(self, base: Any, tokenizer: Any) -> Any:
        """A copy of ``base`` fine-tuned on the target rows (see the module docstring), in ``base``'s dtype and in
        eval mode; sets :attr:`tuning`.

        Raises:
            HFSelectError: an empty or unusable target set, or a loss that goes NaN or infinite.
        """
        cfg = self.config
        limit = model_limit(base, tokenizer, cfg.max_length)
        pairs = self._target_pairs(tokenizer, limit)
        start = time.perf_counter()
        loss_before = self._mean_loss(base, tokenizer, pairs)
        dtype = next(base.parameters()).dtype
        tuned = copy.deepcopy(base).to(torch.float32)
        tuned.train()
        optimizer = torch.optim.AdamW(tuned.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
        rng = np.random.default_rng(cfg.seed)
        device = next(tuned.parameters()).device
        pad = self._pad_id(tokenizer)
        order: list[int] = []
        train_losses: list[float] = []
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # seeded dropout, without touching the caller's random state
            torch.manual_seed(cfg.seed)
            for step in range(cfg.steps):
                while len(order) < cfg.batch_size:  # epochs over the target rows, each in a new seeded order
                    order.extend(rng.permutation(len(pairs)).tolist())
                idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
                loss = self._accumulate(tuned, [pairs[i] for i in idx], pad, device)
                if not math.isfinite(loss):
                    raise self._diverged(f"{loss} at step {step + 1} of {cfg.steps}")
                train_losses.append(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        del optimizer
        tuned.eval()
        tuned.to(dtype)
        loss_after = self._mean_loss(tuned, tokenizer, pairs)
        if not math.isfinite(loss_after):
            raise self._diverged(f"{loss_after} after {cfg.steps} steps")
        self.tuning = {"steps": cfg.steps, "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size,
                       "target_rows": len(pairs), "seconds": round(time.perf_counter() - start, 3),
                       "target_loss_before": loss_before, "target_loss_after": loss_after,
                       "train_loss_first": train_losses[0], "train_loss_last": train_losses[-1]}
        logger.info("loss_reduction: tuned a copy for %d steps at lr %g on %d target rows in %.1f s (target loss "
                    "%.4f -> %.4f)", cfg.steps, cfg.learning_rate, len(pairs), self.tuning["seconds"], loss_before,
                    loss_after)
        return tuned

    def _accumulate(self, model: Any, rows: Sequence[tuple[list[int], list[int]]], pad: int, device: Any) -> float:
        """Gradients of one step's mean completion-token loss over ``rows``, summed over micro-batches of at most
        ``micro_batch_tokens`` tokens (each micro-batch's mean loss weighted by its share of the step's predicted
        tokens); returns the step's loss."""
        groups = micro_batches(rows, self.config.micro_batch_tokens)
        batches = [_training_batch(group, pad) for group in groups]
        counts = [int((labels[:, 1:] != -100).sum()) for _, labels, _ in batches]
        total = max(1, sum(counts))
        step_loss = 0.0
        for (ids, labels, mask), count in zip(batches, counts, strict=True):
            if not count:
                continue
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device),
                        use_cache=False)
            weighted = out.loss * (count / total)
            step_loss += float(weighted.detach())
            if not math.isfinite(step_loss):
                return step_loss
            weighted.backward()
            del out, weighted
        return step_loss

    # -- scoring -----------------------------------------------------------------------------------------------
    def _score_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        cfg = self.config
        base, tuned, tokenizer = self.load()
        limit = model_limit(base, tokenizer, cfg.max_length)
        pairs, status = prompt_completion_pairs(tokenizer, batch, limit, cfg.column_mapping)
        n = len(status)
        out = {"loss_base": [math.nan] * n, "loss_tuned": [math.nan] * n, "loss_reduction": [math.nan] * n}
        todo = [i for i, p in enumerate(pairs) if p is not None]
        if todo:
            seqs = [pairs[i] for i in todo]
            pad = self._pad_id(tokenizer)
            budget = cfg.token_budget(base)
            with torch.inference_mode():
                before, fit_b = sequence_losses(base, seqs, pad, max_tokens=budget, max_rows=cfg.max_batch_size)
                after, fit_t = sequence_losses(tuned, seqs, pad, max_tokens=budget, max_rows=cfg.max_batch_size)
            for k, i in enumerate(todo):
                if not (fit_b[k] and fit_t[k]):
                    status[i] = "oom"
                elif not (math.isfinite(before[k]) and math.isfinite(after[k])):
                    status[i] = "non_finite"
                else:
                    out["loss_base"][i] = float(before[k])
                    out["loss_tuned"][i] = float(after[k])
                    out["loss_reduction"][i] = float(before[k] - after[k])
        return {**out, "loss_reduction_status": status}


def micro_batches(rows: Sequence[tuple[list[int], list[int]]], max_tokens: int
                  ) -> list[list[tuple[list[int], list[int]]]]:
    """Consecutive groups of ``rows`` whose padded size (rows x longest row) stays within ``max_tokens``; a row
    longer than that is a group of its own.

    Example:
        >>> [len(g) for g in micro_batches([([1], [2])] * 5 + [([1] * 9, [2])], max_tokens=6)]
        [3, 2, 1]
    """
    groups: list[list[tuple[list[int], list[int]]]] = []
    width = 0
    for row in rows:
        size = len(row[0]) + len(row[1])
        if groups and max(width, size) * (len(groups[-1]) + 1) <= max_tokens:
            groups[-1].append(row)
            width = max(width, size)
        else:
            groups.append([row])
            width = size
    return groups


def _training_batch(pairs: Sequence[tuple[list[int], list[int]]], pad: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``labels`` (-100 outside the completions) and ``attention_mask``.

    Example:
        >>> ids, labels, mask = _training_batch([([1, 2], [3]), ([4], [5, 6])], pad=0)
        >>> ids.tolist(), labels.tolist(), mask.tolist()
        ([[1, 2, 3], [4, 5, 6]], [[-100, -100, 3], [-100, 5, 6]], [[1, 1, 1], [1, 1, 1]])
    """
    width = max(len(p) + len(c) for p, c in pairs)
    ids = torch.full((len(pairs), width), pad, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for r, (p, c) in enumerate(pairs):
        seq = torch.tensor([*p, *c], dtype=torch.long)
        ids[r, : len(seq)] = seq
        labels[r, len(p) : len(seq)] = torch.tensor(c, dtype=torch.long)
        mask[r, : len(seq)] = 1
    return ids, labels, mask

