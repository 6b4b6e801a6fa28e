"""InstructMining's natural-language indicators as columns (the linear rule that reads them is in
:mod:`hf_select.scoring.rule`; MTLD and KNN-k themselves in :mod:`hf_select.scoring.diversity`).

Per-row indicators (:class:`IndicatorScorer`, a batched ``Dataset.map``):

- ``ind_prompt_len`` / ``ind_response_len``: tokens of the question (the last user turn; Alpaca ``instruction``
  [+ ``"\\n"`` + ``input``]) and of the response (the last assistant turn), with the model's tokenizer and no
  template or special tokens;
- ``ind_mtld``: MTLD lexical diversity of the response (:func:`mtld`);
- ``ind_ppl``: perplexity of the response given the templated prompt, ``exp`` of its mean token loss under the
  causal LM (off with ``perplexity=False``);
- ``ind_reward``: the quality backend's score of (question, response), when ``quality`` is given (InstructMining's
  ``Rew``: a reward model);
- ``ind_status``: ``ok``; ``truncated`` (the response was cut to ``max_length`` for the perplexity, or the pair for
  the reward; still scored); or why the model-based indicators are NaN: ``empty_response``, ``prompt_too_long``,
  ``invalid_row``, ``unknown_role``, ``no_assistant_turn``, ``template_mismatch``, ``template_error``, ``oom``,
  ``non_finite``. Lengths and MTLD need only the text and are filled whenever the row can be read (else null).

Whole-dataset indicator: ``ind_knn6`` (``ind_knn{k}``), the distance of each row to its k-th nearest other row in
embedding space (:func:`knn_distance`). It needs every row, so only :meth:`IndicatorScorer.score` adds it, and only
when the dataset has the embedding column (``embedding`` by default: any column of float lists, e.g. made by the
embedding scorer).

Example:
    >>> from datasets import Dataset
    >>> from hf_select import IndicatorConfig, IndicatorScorer
    >>> ds = Dataset.from_list([{"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5"}])
    >>> ds = IndicatorScorer(IndicatorConfig(perplexity=False)).score(ds)  # doctest: +SKIP
    >>> IndicatorScorer(IndicatorConfig(perplexity=False)).output_columns
    ('ind_prompt_len', 'ind_response_len', 'ind_mtld', 'ind_status')
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Features, Value

from ..formats import (
    TEMPLATES,
    RowError,
    assistant_turns,
    detect_format,
    encode_segment,
    last_user_text,
    resolve_template,
    row_to_messages,
)
from ..models import DEFAULT_LM, load_causal_lm, load_tokenizer, model_identity
from .base import BaseScorer
from .batching import run_with_oom_retry, token_budget_batches
from .common import ROW_STATUSES, loaded_model_identity, model_limit, split_padding
from .config import ScorerConfig, shared
from .diversity import KNN_METRICS, KNN_REDUCE, MTLD_THRESHOLD, knn_distance, mtld
from .lm_loss import mean_target_losses
from .quality import QUALITY_STATUSES, SCORED_STATUSES, QualityConfig, QualityScorer

logger = logging.getLogger(__name__)

# ``ind_status``: this scorer's own statuses, then the quality backend's (forwarded for ``ind_reward``).
INDICATOR_STATUSES = tuple(dict.fromkeys((
    "ok", "truncated", "empty_response", "prompt_too_long", *ROW_STATUSES, *QUALITY_STATUSES,
)))

# -- the per-row scorer -----------------------------------------------------------------------------------------------
@dataclass
class IndicatorConfig(ScorerConfig):
    """Configuration of :class:`IndicatorScorer` (the shared model and batching fields: :class:`ScorerConfig`).

    Example:
        >>> IndicatorConfig(perplexity=False, k=6).k
        6
    """

    model_name_or_path: str = shared(
        "model_name_or_path", DEFAULT_LM,
        help="Causal LM (Hub id or folder): its tokenizer counts tokens, and it scores the response perplexity.",
    )
    max_length: int = shared(
        "max_length", 1024,
        help="Most tokens of prompt + response for the perplexity (lowered to the model's own limit); longer "
             "responses are cut at the end, with status 'truncated'.",
    )
    max_batch_size: int = shared("max_batch_size", 256)
    template: str = field(
        default="auto",
        metadata={"help": f"Prompt template for the perplexity, one of {TEMPLATES}; 'auto' = the chat template, "
                          "else 'plain'."},
    )
    perplexity: bool = field(default=True, metadata={"help": "Compute ind_ppl (needs the causal LM)."})
    quality: QualityConfig | None = field(
        default=None,
        metadata={"help": "Quality backend for ind_reward (a QualityConfig or a dict of its fields; InstructMining's "
                          "Rew is a reward model: {'backend': 'reward', 'model_name_or_path': ...}); None: none."},
    )
    embedding_column: str = field(
        default="embedding", metadata={"help": "Column of float-list embeddings for ind_knn{k} (added by .score())."}
    )
    k: int = field(default=6, metadata={"help": "KNN-k: the neighbour whose distance is taken (6 in InstructMining)."})
    knn_metric: str = field(default="euclidean", metadata={"help": f"KNN distance, one of {KNN_METRICS}."})
    knn_reduce: str = field(
        default="kth", metadata={"help": f"One of {KNN_REDUCE}: distance to the k-th neighbour, or mean over the k."}
    )
    mtld_threshold: float = field(default=MTLD_THRESHOLD, metadata={"help": "MTLD's TTR threshold (0.72)."})
    fused_head: bool | None = field(
        default=None, metadata={"help": "Apply the output head only where a loss is taken (default: when possible)."}
    )

    MIN_MAX_LENGTH = 2
    KEY_BUDGET = 16384

    def __post_init__(self) -> None:
        if isinstance(self.quality, dict):
            try:
                self.quality = QualityConfig(**self.quality)
            except TypeError as err:
                raise ValueError(f"IndicatorConfig.quality: {err}") from err
        if self.quality is not None and not isinstance(self.quality, QualityConfig):
            raise ValueError(
                "IndicatorConfig.quality must be None, a QualityConfig or a dict of its fields, "
                f"got {type(self.quality).__name__}"
            )
        super().__post_init__()
        if self.template not in TEMPLATES:
            raise ValueError(f"IndicatorConfig.template must be one of {TEMPLATES}, got {self.template!r}")
        if self.k < 1:
            raise ValueError(f"IndicatorConfig.k must be >= 1, got {self.k}")
        if self.knn_metric not in KNN_METRICS:
            raise ValueError(f"IndicatorConfig.knn_metric must be one of {KNN_METRICS}, got {self.knn_metric!r}")
        if self.knn_reduce not in KNN_REDUCE:
            raise ValueError(f"IndicatorConfig.knn_reduce must be one of {KNN_REDUCE}, got {self.knn_reduce!r}")
        if not 0 < self.mtld_threshold < 1:
            raise ValueError(f"IndicatorConfig.mtld_threshold must be in (0, 1), got {self.mtld_threshold}")


class IndicatorScorer(BaseScorer):
    """Adds ``ind_prompt_len``, ``ind_response_len``, ``ind_mtld``, ``ind_ppl`` (with ``perplexity``),
    ``ind_reward`` (with ``quality``) and ``ind_status``; :meth:`score` also adds ``ind_knn{k}`` when the dataset has
    the embedding column. See the module docstring.

    Example:
        >>> scorer = IndicatorScorer(IndicatorConfig(quality={"backend": "reward", "model_name_or_path": "./rm"}))
        >>> scorer.output_columns
        ('ind_prompt_len', 'ind_response_len', 'ind_mtld', 'ind_ppl', 'ind_reward', 'ind_status')
        >>> ds = scorer.score(ds)  # doctest: +SKIP
    """

    name = "indicators"
    config_class = IndicatorConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.quality_scorer = QualityScorer(self.config.quality) if self.config.quality is not None else None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.quality_scorer = QualityScorer(self.config.quality) if self.config.quality is not None else None

    @property
    def features(self) -> Features:
        """Token counts int64, MTLD, perplexity and reward float64, ``ind_status`` string (``ind_knn{k}``, added by
        :meth:`score`, is float64 too)."""
        cols = {"ind_prompt_len": Value("int64"), "ind_response_len": Value("int64"), "ind_mtld": Value("float64")}
        if self.config.perplexity:
            cols["ind_ppl"] = Value("float64")
        if self.config.quality is not None:
            cols["ind_reward"] = Value("float64")
        return Features({**cols, "ind_status": Value("string")})

    @property
    def knn_column(self) -> str:
        """Name of the KNN column: ``ind_knn{k}``."""
        return f"ind_knn{self.config.k}"

    def model_ids(self) -> list[str]:
        cfg = self.config
        own = self._loaded.get("identity") or model_identity(None, cfg.model_name_or_path, cfg.revision)
        return [own, *(self.quality_scorer.model_ids() if self.quality_scorer is not None else [])]

    # -- models ------------------------------------------------------------------------------------------------------
    def load(self) -> tuple[Any, Any]:
        """Load (once) the causal LM (only with ``perplexity``; else None) and its tokenizer."""
        cfg = self.config
        if "tokenizer" not in self._loaded:
            if cfg.perplexity:
                model, tok = load_causal_lm(cfg.model_name_or_path, **cfg.load_kwargs())
                self._loaded.update(model=model, tokenizer=tok)
            else:
                self._loaded["tokenizer"] = load_tokenizer(cfg.model_name_or_path, revision=cfg.revision,
                                                           trust_remote_code=cfg.trust_remote_code)
        return self._loaded.get("model"), self._loaded["tokenizer"]

    def set_model(self, model: Any, tokenizer: Any) -> IndicatorScorer:
        """Use an already loaded causal LM and tokenizer (model may be None with ``perplexity=False``)."""
        if model is None and self.config.perplexity:
            raise ValueError("IndicatorScorer.set_model: a model is needed while IndicatorConfig.perplexity=True")
        if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        ident = loaded_model_identity(model, tokenizer) if model is not None else f"tokenizer:{tokenizer.name_or_path}"
        self._loaded = {"model": model, "tokenizer": tokenizer, "identity": ident}
        return self

    # -- per-row ----------------------------------------------------------------------------------------------------
    def _score_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        cfg = self.config
        n = len(next(iter(batch.values()))) if batch else 0
        model, tokenizer = self.load()
        template = resolve_template(cfg.template, tokenizer) if cfg.perplexity else "plain"
        fmt = detect_format(batch.keys(), cfg.column_mapping)
        keys = list(batch.keys())
        prompt_len: list[int | None] = [None] * n
        response_len: list[int | None] = [None] * n
        diversity = [math.nan] * n
        ppl = [math.nan] * n
        reward = [math.nan] * n
        status = ["ok"] * n
        limit = model_limit(model, tokenizer, cfg.max_length) if cfg.perplexity else cfg.max_length
        items: list[tuple[list[int], list[int]]] = []
        item_rows: list[int] = []
        pairs: list[tuple[int, str, str]] = []
        for r in range(n):
            try:
                messages = row_to_messages({k: batch[k][r] for k in keys}, fmt, cfg.column_mapping)
            except RowError as err:
                status[r] = err.status
                continue
            turn = assistant_turns(messages, "last")[0]
            question, response = last_user_text(messages, turn), messages[turn]["content"]
            prompt_len[r] = len(tokenizer(question, add_special_tokens=False)["input_ids"])
            response_len[r] = len(tokenizer(response, add_special_tokens=False)["input_ids"]) if response else 0
            diversity[r] = mtld(response, cfg.mtld_threshold)
            if not response.strip():
                status[r] = "empty_response"
                continue
            pairs.append((r, question, response))
            if not cfg.perplexity:
                continue
            try:
                seg = encode_segment(tokenizer, messages, turn, template)
            except RowError as err:
                status[r] = err.status
                continue
            except Exception as err:  # chat templates raise on role orders they do not support
                logger.debug("indicators: the template rejected row %d: %s", r, err)
                status[r] = "template_error"
                continue
            room = limit - len(seg.prompt_ids)
            if room < 1:
                status[r] = "prompt_too_long"
                continue
            if len(seg.response_ids) > room:
                status[r] = "truncated"
            items.append((seg.prompt_ids, seg.response_ids[:room]))
            item_rows.append(r)
        if items:
            self._perplexities(model, tokenizer, items, item_rows, ppl, status)
        if self.quality_scorer is not None and pairs:
            out = self.quality_scorer.score_pairs([q for _, q, _ in pairs], [a for _, _, a in pairs])
            for (r, _, _), s, st in zip(pairs, out["score"], out["status"], strict=True):
                if st in SCORED_STATUSES:
                    reward[r] = s
                if status[r] == "ok" and st != "ok" or status[r] == "truncated" and st not in SCORED_STATUSES:
                    status[r] = st
        cols: dict[str, list[Any]] = {"ind_prompt_len": prompt_len, "ind_response_len": response_len,
                                      "ind_mtld": diversity}
        if cfg.perplexity:
            cols["ind_ppl"] = ppl
        if self.quality_scorer is not None:
            cols["ind_reward"] = reward
        cols["ind_status"] = status
        return cols

    def _perplexities(self, model: Any, tokenizer: Any, items: list[tuple[list[int], list[int]]],
                      item_rows: list[int], ppl: list[float], status: list[str]) -> None:
        cfg = self.config
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        lengths = [len(c) + len(t) for c, t in items]

        def run(idx: list[int]) -> np.ndarray:
            return mean_target_losses(model, [items[i] for i in idx], pad, fused_head=cfg.fused_head).numpy()

        def on_oom(idx: list[int]) -> np.ndarray:
            for i in idx:
                status[item_rows[i]] = "oom"
            return np.full(len(idx), np.nan)

        groups = token_budget_batches(lengths, cfg.token_budget(model), cfg.max_batch_size)
        for group in (sub for g in groups for sub in split_padding(g, lengths)):
            for idx, losses in run_with_oom_retry(group, run, on_oom):
                for i, loss in zip(idx, losses, strict=True):
                    r = item_rows[i]
                    if status[r] == "oom":
                        continue
                    value = math.exp(float(loss)) if math.isfinite(float(loss)) and loss < 700 else math.nan
                    if math.isfinite(value):
                        ppl[r] = value
                    else:
                        status[r] = "non_finite"

    # -- whole dataset ------------------------------------------------------------------------------------------------
    def score(self, dataset: Any, **kwargs: Any) -> Any:
        """Score the per-row indicators (sharded, cached, resumable: see :meth:`BaseScorer.score`) and, when the
        dataset has ``embedding_column``, add ``ind_knn{k}`` over the whole dataset.

        Example:
            >>> ds = IndicatorScorer(IndicatorConfig(perplexity=False)).score(ds)  # doctest: +SKIP
        """
        out = super().score(dataset, **kwargs)
        col = self.config.embedding_column
        if col not in dataset.column_names:
            logger.info("indicators: no %r column, so no %s (make embeddings first).", col, self.knn_column)
            return out
        if len(dataset) == 0:
            return out.add_column(self.knn_column, []) if self.knn_column not in out.column_names else out
        try:
            emb = dataset.with_format("numpy", columns=[col])[col]
        except Exception:  # ragged or null rows: plain lists
            emb = dataset[col]
        dist = knn_distance(emb, self.config.k, metric=self.config.knn_metric, reduce=self.config.knn_reduce)
        if self.knn_column in out.column_names:
            out = out.remove_columns(self.knn_column)
        return out.add_column(self.knn_column, dist.tolist())


score_indicators = IndicatorScorer()
"""A ready-made :class:`IndicatorScorer` with the default config (SmolLM2-135M-Instruct tokens and perplexity)."""
