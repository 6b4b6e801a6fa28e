"""Response quality as a batched ``Dataset.map``: a reward model's score, or an LLM judge's expected rating.

Each row is reduced to a pair: ``question`` = the last user turn (for Alpaca rows ``instruction`` [+ ``"\\n"`` +
``input``], as MoDS does) and ``answer`` = the last assistant turn. Multi-turn rows are scored on that last
exchange; system prompts are not shown to the scoring model.

- ``backend="reward"``: any ``AutoModelForSequenceClassification`` reward model (MoDS uses
  ``OpenAssistant/reward-model-deberta-v3-large-v2``). Tokenizers with a chat template get the pair rendered as
  ``[user, assistant]`` with it; others get the text pair ``tokenizer(question, answer)``. ``quality`` is the
  reward logit.
- ``backend="judge"`` (the offline default, with SmolLM2-135M-Instruct): an instruct model reads a prompt asking
  for a rating from 1 to N and answering with a single digit; the next-token distribution after the generation
  prompt is restricted to the N rating tokens (their ids come from the tokenizer, in context) and renormalised,
  and ``quality`` is the expected rating, always within ``[1, N]``. ``judge_mass`` is the probability the model
  gave to the rating tokens before renormalising (low mass: the judge did not really answer with a digit).

Both backends write the score to one column, ``quality``, and the backend's name to ``quality_backend``
(``judge`` or ``reward``), so a selection step reads ``quality`` whatever made it. (The judge's column was
``judge_score`` before; selection steps still read that name, with a warning:
:data:`hf_select.selection.base.LEGACY_COLUMNS`.)

Every row also gets ``quality_status``:

- ``ok``;
- ``truncated``: the pair was longer than the limit (``max_length``, and the model's own limit); it is still
  scored, after keeping the *start of the question and the end of the answer*: when both do not fit, each keeps
  at least half of the room left by the template (a shorter side keeps all of its tokens and leaves the rest to
  the other), the question losing its end and the answer its beginning;
- ``empty_response``, ``prompt_too_long`` (the template alone does not fit), ``invalid_row``, ``unknown_role``,
  ``no_assistant_turn``, ``template_error``, ``oom``, ``non_finite``: no score (NaN).

Example:
    >>> from datasets import Dataset
    >>> from hf_select import QualityConfig, QualityScorer, score_quality
    >>> ds = Dataset.from_list([{"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5"}])
    >>> ds = ds.map(score_quality, batched=True)  # doctest: +SKIP
    >>> ds[0]["quality"], ds[0]["quality_backend"]  # doctest: +SKIP
    (4.1, 'judge')
    >>> rm = QualityScorer(QualityConfig(backend="reward"))  # OpenAssistant/reward-model-deberta-v3-large-v2
    >>> ds = rm.score(ds)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Features, Value

from ..formats import RowError, assistant_turns, detect_format, last_user_text, row_to_messages
from ..models import DEFAULT_LM, load_causal_lm, model_identity
from .base import BaseScorer
from .batching import run_with_oom_retry, token_budget_batches
from .common import (
    Encoded,
    FittedPair,
    fit_pair,
    forward_accepts,
    load_reward_model,
    loaded_model_identity,
    model_limit,
    pad_id_set,
    pad_right,
    split_padding,
    unused_token_id,
)
from .config import ScorerConfig, shared
from .lm_loss import _softcap, supports_fused_head

logger = logging.getLogger(__name__)

DEFAULT_REWARD_MODEL = "OpenAssistant/reward-model-deberta-v3-large-v2"
QUALITY_BACKENDS = ("judge", "reward")
QUALITY_TEMPLATES = ("auto", "chat", "plain")
QUALITY_STATUSES = (
    "ok",
    "truncated",
    "empty_response",
    "prompt_too_long",
    "invalid_row",
    "unknown_role",
    "no_assistant_turn",
    "template_error",
    "oom",
    "non_finite",
)
# Statuses that still carry a score.
SCORED_STATUSES = ("ok", "truncated")

JUDGE_PROMPT = (
    "Rate how well the response answers the instruction, on a scale of 1 to {scale}: 1 means unhelpful, wrong or "
    "off-topic; {scale} means helpful, correct and complete.\n\n"
    "### Instruction:\n{question}\n\n"
    "### Response:\n{answer}\n\n"
    "Reply with a single digit from 1 to {scale} and nothing else."
)
# Plain (no chat template) judge prompts end with a "Rating:" cue. (text after the prompt, text before the digit):
# the first variant whose N rating strings are each one token in context is used. After a newline, digits are
# separate tokens in most tokenizers; the other two variants cover tokenizers that merge a space into them.
_PLAIN_JUDGE_SUFFIXES = (("\nRating:\n", ""), ("\nRating:", " "), ("\nRating: ", ""))
_CHAT_JUDGE_SUFFIXES = (("", ""),)


@dataclass
class QualityConfig(ScorerConfig):
    """Configuration of :class:`QualityScorer` (the shared model and batching fields: :class:`ScorerConfig`).

    Example:
        >>> QualityConfig(backend="reward").resolved_model_name_or_path
        'OpenAssistant/reward-model-deberta-v3-large-v2'
        >>> QualityConfig().resolved_model_name_or_path
        'HuggingFaceTB/SmolLM2-135M-Instruct'
    """

    model_name_or_path: str | None = shared(
        "model_name_or_path", None,
        help=f"Model id or folder; default {DEFAULT_LM} for 'judge', {DEFAULT_REWARD_MODEL} for 'reward'.",
    )
    max_length: int = shared(
        "max_length", 1024,
        help="Most tokens per scored sequence (lowered to the model's own limit); longer pairs keep the start of the "
             "question and the end of the answer, with status 'truncated'.",
    )
    backend: str = field(
        default="judge",
        metadata={"help": f"Scoring backend, one of {QUALITY_BACKENDS}: a sequence-classification reward model "
                          "('reward') or an instruct LM's expected rating ('judge'); both write the column 'quality' "
                          "and their name to 'quality_backend'."},
    )
    template: str = field(
        default="auto",
        metadata={"help": f"One of {QUALITY_TEMPLATES}. 'chat': the tokenizer's chat template ([user, assistant] "
                          "for a reward model, the judge prompt as a user turn for a judge); 'plain': the text pair "
                          "tokenizer(question, answer) / the judge prompt followed by 'Rating:'; 'auto': 'chat' when "
                          "the tokenizer has a chat template, else 'plain'."},
    )
    scale: int = field(default=5, metadata={"help": "Judge: ratings run from 1 to this (each must be one token)."})
    judge_prompt: str = field(
        default=JUDGE_PROMPT,
        metadata={"help": "Judge: the rating request, with the placeholders {question}, {answer} and {scale}."},
    )
    reward_index: int = field(
        default=0, metadata={"help": "Reward: which output logit is the reward (for models with several labels)."}
    )

    MIN_MAX_LENGTH = 8
    KEY_BUDGET = 16384
    KEY_EXTRA = {"score_column": "quality"}  # the judge wrote judge_score before: those cached results are not reused
    KEY_ORDER = ("backend", "model_name_or_path", "revision", "template", "max_length", "scale", "judge_prompt",
                 "reward_index", "dtype", "device", "max_tokens_per_batch", "max_batch_size", "column_mapping",
                 "trust_remote_code")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend not in QUALITY_BACKENDS:
            raise ValueError(f"QualityConfig.backend must be one of {QUALITY_BACKENDS}, got {self.backend!r}")
        if self.template not in QUALITY_TEMPLATES:
            raise ValueError(f"QualityConfig.template must be one of {QUALITY_TEMPLATES}, got {self.template!r}")
        if self.scale < 2:
            raise ValueError(f"QualityConfig.scale must be >= 2, got {self.scale}")
        if self.reward_index < 0:
            raise ValueError(f"QualityConfig.reward_index must be >= 0, got {self.reward_index}")
        for name in ("{question}", "{answer}"):
            if name not in self.judge_prompt:
                raise ValueError(f"QualityConfig.judge_prompt must contain the placeholder {name}")
        try:
            self.judge_prompt.format(question="q", answer="a", scale=self.scale)
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                "QualityConfig.judge_prompt may only use the placeholders {question}, {answer} and {scale} "
                f"(write other braces as {{{{ and }}}}): {err!r}"
            ) from err

    @property
    def resolved_model_name_or_path(self) -> str:
        """``model_name_or_path``, or the backend's default model when it is ``None``."""
        if self.model_name_or_path:
            return self.model_name_or_path
        return DEFAULT_LM if self.backend == "judge" else DEFAULT_REWARD_MODEL


# -- reading rows -----------------------------------------------------------------------------------------------------
def row_pair(row: dict[str, Any], fmt: str, column_mapping: dict[str, str] | None) -> tuple[str, str]:
    """``(question, answer)`` of a row: the last user turn before the last assistant turn, and that turn.

    Raises:
        RowError: for rows that cannot be read (``invalid_row``, ``unknown_role``, ``no_assistant_turn``).

    Example:
        >>> row_pair({"instruction": "Add", "input": "2 and 3", "output": "5"}, "alpaca", None)
        ('Add\\n2 and 3', '5')
    """
    messages = row_to_messages(row, fmt, column_mapping)
    turn = assistant_turns(messages, "last")[0]
    return last_user_text(messages, turn), messages[turn]["content"]


# -- the scorer -------------------------------------------------------------------------------------------------------
class QualityScorer(BaseScorer):
    """Adds ``quality``, ``quality_backend`` and ``quality_status`` (and ``judge_mass`` with the judge backend).
    See the module docstring for the statuses and the truncation rule.

    Example:
        >>> scorer = QualityScorer(QualityConfig(backend="judge", scale=5))
        >>> scorer.score_column, scorer.output_columns
        ('quality', ('quality', 'quality_backend', 'judge_mass', 'quality_status'))
        >>> ds = ds.map(scorer, batched=True)  # doctest: +SKIP
        >>> ds = scorer.score(ds)              # doctest: +SKIP
    """

    name = "quality"
    config_class = QualityConfig

    @property
    def features(self) -> Features:
        """``quality`` (float64), ``quality_backend`` (string), ``judge_mass`` (float64, judge only),
        ``quality_status`` (string)."""
        judge = {"judge_mass": Value("float64")} if self.config.backend == "judge" else {}
        return Features({"quality": Value("float64"), "quality_backend": Value("string"), **judge,
                         "quality_status": Value("string")})

    @property
    def score_column(self) -> str:
        """The column holding the score, ``quality``, whatever the backend."""
        return "quality"

    def model_ids(self) -> list[str]:
        if "identity" in self._loaded:
            return [self._loaded["identity"]]
        return [model_identity(None, self.config.resolved_model_name_or_path, self.config.revision)]

    # -- models ------------------------------------------------------------------------------------------------------
    def load(self) -> tuple[Any, Any]:
        """Load (once) and return the model and tokenizer of the configured backend."""
        if "model" not in self._loaded:
            cfg = self.config
            name = cfg.resolved_model_name_or_path
            if cfg.backend == "judge":
                model, tok = load_causal_lm(name, **cfg.load_kwargs())
            else:
                model, tok = load_reward_model(name, **cfg.load_kwargs())
            self._loaded.update(model=model, tokenizer=tok)
        return self._loaded["model"], self._loaded["tokenizer"]

    def set_model(self, model: Any, tokenizer: Any) -> QualityScorer:
        """Use an already loaded model and tokenizer (a causal LM for 'judge', a classifier for 'reward').

        The fingerprint then follows the in-memory weights, so cached shards of other weights are never reused.
        """
        if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        self._loaded = {"model": model, "tokenizer": tokenizer, "identity": loaded_model_identity(model, tokenizer)}
        return self

    def _template(self, tokenizer: Any) -> str:
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if self.config.template == "auto":
            return "chat" if has_chat else "plain"
        if self.config.template == "chat" and not has_chat:
            raise ValueError(
                "QualityConfig.template='chat' but the tokenizer has no chat template; use 'plain' or 'auto'"
            )
        return self.config.template

    # -- rendering ----------------------------------------------------------------------------------------------------
    def _reward_render(self, tokenizer: Any, template: str) -> Callable[[str, str], Encoded]:
        if template == "chat":

            def render(q: str, a: str) -> Encoded:
                msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                text = tokenizer.apply_chat_template(msgs, tokenize=False)
                return list(tokenizer(text, add_special_tokens=False)["input_ids"]), None

            return render

        def render_pair(q: str, a: str) -> Encoded:
            enc = tokenizer(q, a)
            types = enc.get("token_type_ids")
            return list(enc["input_ids"]), (list(types) if types is not None else None)

        return render_pair

    def _judge_text(self, tokenizer: Any, template: str, q: str, a: str, suffix: str) -> str:
        cfg = self.config
        prompt = cfg.judge_prompt.format(question=q, answer=a, scale=cfg.scale)
        if template == "chat":
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
            return text + suffix
        return prompt + suffix

    def rating_token_ids(self, tokenizer: Any | None = None) -> tuple[list[int], str]:
        """Judge: the token ids of the ratings ``"1"`` .. ``str(scale)`` as the model would write them after the
        generation prompt, and the text that follows the judge prompt.

        The ids are found in context: ``tokenizer(prompt + rating)`` must be ``tokenizer(prompt)`` plus exactly one
        token.

        Raises:
            ValueError: naming every rating that is not a single token (e.g. ``"10"`` for digit-split tokenizers).
        """
        if tokenizer is None:
            tokenizer = self.load()[1]
        template = self._template(tokenizer)
        ratings = [str(i) for i in range(1, self.config.scale + 1)]
        variants = _CHAT_JUDGE_SUFFIXES if template == "chat" else _PLAIN_JUDGE_SUFFIXES
        failures: dict[str, list[int]] = {}
        for suffix, sep in variants:
            base = self._judge_text(tokenizer, template, "Question", "Answer", suffix)
            base_ids = list(tokenizer(base, add_special_tokens=False)["input_ids"])
            ids: list[int] = []
            failures = {}
            for r in ratings:
                full = list(tokenizer(base + sep + r, add_special_tokens=False)["input_ids"])
                if full[: len(base_ids)] == base_ids and len(full) == len(base_ids) + 1:
                    ids.append(full[-1])
                else:
                    failures[r] = list(tokenizer(sep + r, add_special_tokens=False)["input_ids"])
            if not failures and len(set(ids)) == len(ids):
                return ids, suffix
        if not failures:
            raise ValueError(f"the judge's rating strings {ratings} do not map to distinct tokens for this tokenizer")
        raise ValueError(
            f"QualityConfig.scale={self.config.scale}: the judge's rating strings {sorted(failures, key=int)} are not "
            f"single tokens for this tokenizer (they encode to {[failures[r] for r in sorted(failures, key=int)]}); "
            "each rating 1..scale must be one token, so use a smaller scale (e.g. scale <= 9)."
        )

    # -- scoring ------------------------------------------------------------------------------------------------------
    def score_pairs(
        self, questions: Sequence[str], answers: Sequence[str], *, allow_empty: bool = False
    ) -> dict[str, list[Any]]:
        """Score ``(question, answer)`` pairs; returns ``{"score", "mass", "status"}`` lists (mass: judge only, else
        NaN). With ``allow_empty`` an empty answer is scored instead of getting ``empty_response``.

        Example:
            >>> out = QualityScorer(QualityConfig()).score_pairs(["Add 2 and 3."], ["5"])  # doctest: +SKIP
            >>> out["status"]  # doctest: +SKIP
            ['ok']
        """
        if len(questions) != len(answers):
            raise ValueError(f"score_pairs got {len(questions)} questions and {len(answers)} answers")
        n = len(questions)
        score = [math.nan] * n
        mass = [math.nan] * n
        status = ["ok"] * n
        if n == 0:
            return {"score": score, "mass": mass, "status": status}
        model, tokenizer = self.load()
        cfg = self.config
        template = self._template(tokenizer)
        limit = model_limit(model, tokenizer, cfg.max_length)
        if cfg.backend == "judge":
            rating_ids, suffix = self.rating_token_ids(tokenizer)
            add_special = template != "chat"

            def render(q: str, a: str) -> Encoded:
                text = self._judge_text(tokenizer, template, q, a, suffix)
                return list(tokenizer(text, add_special_tokens=add_special)["input_ids"]), None

        else:
            render = self._reward_render(tokenizer, template)
        encoded: dict[int, FittedPair] = {}
        for i, (q, a) in enumerate(zip(questions, answers, strict=True)):
            if not isinstance(a, str) or not isinstance(q, str):
                status[i] = "invalid_row"
                continue
            if not a.strip() and not allow_empty:
                status[i] = "empty_response"
                continue
            try:
                fitted = fit_pair(tokenizer, q, a, render, limit)
            except RowError as err:
                status[i] = err.status
                continue
            except Exception as err:  # chat templates raise on contents they reject
                logger.debug("quality: the template rejected a pair: %s", err)
                status[i] = "template_error"
                continue
            encoded[i] = fitted
            if fitted.truncated:
                status[i] = "truncated"
        rows = sorted(encoded)
        lengths = [len(encoded[r].input_ids) for r in rows]

        def run(idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
            fits = [encoded[rows[i]] for i in idx]
            if cfg.backend == "judge":
                return self._judge_forward(model, tokenizer, fits, rating_ids)
            return self._reward_forward(model, tokenizer, fits), np.full(len(idx), np.nan)

        def on_oom(idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
            for i in idx:
                status[rows[i]] = "oom"
            return np.full(len(idx), np.nan), np.full(len(idx), np.nan)

        groups = token_budget_batches(lengths, cfg.token_budget(model), cfg.max_batch_size)
        for group in (sub for g in groups for sub in split_padding(g, lengths)):
            for idx, (s, m) in run_with_oom_retry(group, run, on_oom):
                for i, sv, mv in zip(idx, s, m, strict=True):
                    r = rows[i]
                    if status[r] == "oom":
                        continue
                    if not math.isfinite(float(sv)):
                        status[r] = "non_finite"
                        continue
                    score[r] = float(sv)
                    mass[r] = float(mv)
        return {"score": score, "mass": mass, "status": status}

    @torch.inference_mode()
    def _judge_forward(self, model: Any, tokenizer: Any, fits: list[FittedPair],
                       rating_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids, mask = pad_right([f.input_ids for f in fits], pad)
        ids, mask = ids.to(device), mask.to(device)
        last = mask.sum(-1) - 1
        rows = torch.arange(ids.shape[0], device=device)
        if supports_fused_head(model):
            hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            logits = model.get_output_embeddings()(hidden[rows, last]).float()
            cap = _softcap(model)
            if cap:
                logits = torch.tanh(logits / cap) * cap
        else:
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[rows, last].float()
        rating_logits = logits[:, torch.as_tensor(rating_ids, device=device)]
        probs = torch.softmax(rating_logits, dim=-1)
        values = torch.arange(1, len(rating_ids) + 1, device=device, dtype=probs.dtype)
        expected = (probs * values).sum(-1)
        mass = torch.exp(torch.logsumexp(rating_logits, -1) - torch.logsumexp(logits, -1))
        return expected.double().cpu().numpy(), mass.double().cpu().numpy()

    @torch.inference_mode()
    def _reward_forward(self, model: Any, tokenizer: Any, fits: list[FittedPair]) -> np.ndarray:
        device = next(model.parameters()).device
        seqs = [f.input_ids for f in fits]
        vocab = int(getattr(model.config, "vocab_size", 0) or len(tokenizer))
        pad = unused_token_id(seqs, [tokenizer.pad_token_id, getattr(model.config, "pad_token_id", None),
                                     tokenizer.unk_token_id], vocab)
        ids, mask = pad_right(seqs, pad)
        kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if all(f.token_type_ids is not None for f in fits) and forward_accepts(model, "token_type_ids"):
            types, _ = pad_right([f.token_type_ids for f in fits], 0)  # type: ignore[misc]
            kwargs["token_type_ids"] = types.to(device)
        with pad_id_set(model, pad):
            logits = model(**kwargs).logits.float()
        if logits.ndim == 1:
            logits = logits[:, None]
        if self.config.reward_index >= logits.shape[-1]:
            raise ValueError(
                f"QualityConfig.reward_index={self.config.reward_index} but the model has {logits.shape[-1]} outputs"
            )
        return logits[:, self.config.reward_index].double().cpu().numpy()

    def _score_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        n = len(next(iter(batch.values()))) if batch else 0
        fmt = detect_format(batch.keys(), self.config.column_mapping)
        keys = list(batch.keys())
        questions, answers, pending, pre_status = [], [], [], ["ok"] * n
        for r in range(n):
            try:
                q, a = row_pair({k: batch[k][r] for k in keys}, fmt, self.config.column_mapping)
            except RowError as err:
                pre_status[r] = err.status
                continue
            questions.append(q)
            answers.append(a)
            pending.append(r)
        out = self.score_pairs(questions, answers)
        score, mass, status = [math.nan] * n, [math.nan] * n, pre_status
        for j, r in enumerate(pending):
            score[r], mass[r], status[r] = out["score"][j], out["mass"][j], out["status"][j]
        out: dict[str, list[Any]] = {"quality": score, "quality_backend": [self.config.backend] * n}
        if self.config.backend == "judge":
            out["judge_mass"] = mass
        out["quality_status"] = status
        return out


score_quality = QualityScorer()
"""A ready-made :class:`QualityScorer` with the default config (LLM judge with SmolLM2-135M-Instruct, loaded on first
use)."""
