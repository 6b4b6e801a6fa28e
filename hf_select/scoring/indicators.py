"""InstructMining's natural-language indicators as columns, and its linear rule (apply a preset, or fit a new one).

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

The rule (:class:`InstructMiningRule`) predicts the log eval loss of a model fine-tuned on a subset from the
subset's indicator means; applied to single rows it ranks them: *lower predicted loss is better*.

Example:
    >>> from datasets import Dataset
    >>> from hf_select import IndicatorConfig, IndicatorScorer, InstructMiningRule
    >>> ds = Dataset.from_list([{"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5"}])
    >>> ds = IndicatorScorer(IndicatorConfig(perplexity=False)).score(ds)  # doctest: +SKIP
    >>> rule = InstructMiningRule.preset("instructmining")
    >>> rule.columns
    ['ind_reward', 'ind_response_len', 'ind_knn6']
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch

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
from .lm_loss import mean_target_losses
from .quality import (
    QUALITY_STATUSES,
    SCORED_STATUSES,
    QualityConfig,
    QualityScorer,
    loaded_model_identity,
    model_limit,
    split_padding,
)

logger = logging.getLogger(__name__)

KNN_METRICS = ("euclidean", "cosine")
KNN_REDUCE = ("kth", "mean")
PRED_COLUMN = "instructmining_pred"
# ``ind_status``: this scorer's own statuses, then the quality backend's (forwarded for ``ind_reward``).
INDICATOR_STATUSES = tuple(dict.fromkeys((
    "ok", "truncated", "empty_response", "prompt_too_long", "invalid_row", "unknown_role", "no_assistant_turn",
    "template_mismatch", "template_error", "oom", "non_finite", *QUALITY_STATUSES,
)))
MTLD_THRESHOLD = 0.72

# -- MTLD -------------------------------------------------------------------------------------------------------------
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


def mtld_words(text: str) -> list[str]:
    """The words MTLD counts: lower-cased runs of letters and digits (inner apostrophes kept), punctuation dropped.

    Example:
        >>> mtld_words("The cat's hat, THE hat!")
        ['the', "cat's", 'hat', 'the', 'hat']
    """
    return _WORD.findall(text.lower())


def _mtld_pass(words: Sequence[str], threshold: float) -> float:
    """Factor count of one pass: +1 each time the running TTR falls to ``threshold`` or below (then reset), plus a
    partial factor ``(1 - TTR) / (1 - threshold)`` for the unfinished last segment."""
    factors = 0.0
    types: set[str] = set()
    count = 0
    ttr = 1.0
    for w in words:
        count += 1
        types.add(w)
        ttr = len(types) / count
        if ttr <= threshold:
            factors += 1.0
            types, count, ttr = set(), 0, 1.0
    if count:
        factors += (1.0 - ttr) / (1.0 - threshold)
    return factors


def mtld(text: str | Sequence[str], threshold: float = MTLD_THRESHOLD) -> float:
    """Measure of Textual Lexical Diversity (McCarthy and Jarvis, 2010), bidirectional.

    Each pass (forward, then over the reversed words) counts factors: a factor ends when the running type-token
    ratio falls to ``threshold`` (0.72) or below; the unfinished last segment adds ``(1 - TTR) / (1 - threshold)``.
    A pass's MTLD is ``words / factors`` and the result is the mean of the two passes. Conventions here: a text with
    no words gives NaN; a text whose words are all distinct has no factor at all (its TTR never drops) and gets its
    word count (the length of its one unbroken segment).

    Args:
        text: a string (split with :func:`mtld_words`) or an already split list of words.

    Example:
        >>> mtld("a b a b a b a b")
        4.0
        >>> round(mtld("a a b c"), 4)
        4.24
    """
    words = mtld_words(text) if isinstance(text, str) else list(text)
    if not words:
        return math.nan
    if not 0 < threshold < 1:
        raise ValueError(f"the MTLD threshold must be in (0, 1), got {threshold}")
    forward = _mtld_pass(words, threshold)
    backward = _mtld_pass(words[::-1], threshold)
    if forward == 0 or backward == 0:
        return float(len(words))
    return (len(words) / forward + len(words) / backward) / 2.0


# -- KNN-k ------------------------------------------------------------------------------------------------------------
def _as_matrix(embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
    """(n x d float array with zero rows where invalid, valid mask) from an array or a list of float lists/None."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    try:
        mat = np.asarray(embeddings, dtype=np.float64)
    except (TypeError, ValueError):  # ragged, or None rows
        mat = None
    if mat is not None:
        if mat.ndim == 2:
            valid = np.isfinite(mat).all(axis=1)
            return np.where(valid[:, None], mat, 0.0), valid
        if mat.size == 0:
            return np.zeros((0, 0)), np.zeros(0, dtype=bool)
        raise ValueError(f"expected one embedding (a list of floats) per row, got an array of shape {mat.shape}")
    rows = list(embeddings)
    dims = {len(r) for r in rows if r is not None and len(r) > 0}
    if len(dims) > 1:
        raise ValueError(f"the embeddings have different lengths {sorted(dims)}; every row needs the same dimension")
    dim = dims.pop() if dims else 0
    mat = np.zeros((len(rows), dim), dtype=np.float64)
    valid = np.zeros(len(rows), dtype=bool)
    for i, r in enumerate(rows):
        if r is None or dim == 0 or len(r) != dim:
            continue
        v = np.asarray(r, dtype=np.float64)
        if np.isfinite(v).all():
            mat[i], valid[i] = v, True
    return mat, valid


def knn_distance(
    embeddings: Any,
    k: int = 6,
    *,
    metric: str = "euclidean",
    reduce: str = "kth",
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Distance of each row to its ``k``-th nearest *other* row (InstructMining's KNN-k), exact.

    The rows are compared by brute force in chunks of query rows (torch; float64 on CPU, float32 on GPU), so memory
    stays at ``chunk_size x n`` distances. A row is never its own neighbour; exact duplicates are neighbours at
    distance 0. Rows whose embedding is missing (None, empty) or not finite get NaN and are nobody's neighbour.
    With fewer than ``k + 1`` valid rows, ``k`` is lowered to (valid rows - 1), with a warning.

    Args:
        embeddings: an ``n x d`` array/tensor or a list of float lists (e.g. ``dataset["embedding"]``).
        k: which neighbour (6 in InstructMining).
        metric: ``euclidean`` (L2 distance) or ``cosine`` (1 - cosine similarity).
        reduce: ``kth`` (distance to the k-th nearest neighbour) or ``mean`` (mean distance to the k nearest).
        chunk_size: query rows per chunk; default: as many as keep a chunk near 2**25 distances.
        device: default CUDA when available, else CPU.

    Example:
        >>> knn_distance([[0.0], [1.0], [3.0], [7.0]], k=1).tolist()
        [1.0, 1.0, 2.0, 4.0]
        >>> knn_distance([[0.0], [1.0], [3.0], [7.0]], k=2, reduce="mean").tolist()
        [2.0, 1.5, 2.5, 5.0]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if metric not in KNN_METRICS:
        raise ValueError(f"metric must be one of {KNN_METRICS}, got {metric!r}")
    if reduce not in KNN_REDUCE:
        raise ValueError(f"reduce must be one of {KNN_REDUCE}, got {reduce!r}")
    mat, valid = _as_matrix(embeddings)
    n = len(mat)
    out = np.full(n, np.nan)
    idx = np.flatnonzero(valid)
    m = len(idx)
    if m < 2:
        logger.warning("knn_distance: %d valid embeddings; no row has a neighbour (all NaN).", m)
        return out
    k_eff = min(k, m - 1)
    if k_eff < k:
        logger.warning("knn_distance: only %d valid embeddings, so k=%d is lowered to %d.", m, k, k_eff)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float64 if dev.type == "cpu" else torch.float32
    x = torch.as_tensor(mat[idx], dtype=dtype, device=dev)
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    sq = (x * x).sum(1)
    step = chunk_size or max(1, min(m, (1 << 25) // m))
    result = torch.empty(m, dtype=dtype, device=dev)
    for lo in range(0, m, step):
        hi = min(m, lo + step)
        sim = x[lo:hi] @ x.T
        if metric == "euclidean":
            dist = (sq[lo:hi, None] + sq[None, :] - 2 * sim).clamp_min_(0).sqrt_()
        else:
            dist = (1 - sim).clamp_min_(0)
        rows = torch.arange(hi - lo, device=dev)
        dist[rows, rows + lo] = math.inf
        near = torch.topk(dist, k_eff, dim=1, largest=False).values
        result[lo:hi] = near[:, -1] if reduce == "kth" else near.mean(1)
    out[idx] = result.cpu().numpy()
    return out


# -- the per-row scorer -----------------------------------------------------------------------------------------------
@dataclass
class IndicatorConfig:
    """Configuration of :class:`IndicatorScorer`.

    Example:
        >>> IndicatorConfig(perplexity=False, k=6).k
        6
    """

    model_name_or_path: str = field(
        default=DEFAULT_LM, metadata={"help": "Causal LM (Hub id or folder): its tokenizer counts tokens, and it "
                                              "scores the response perplexity."}
    )
    revision: str | None = field(default=None, metadata={"help": "Model revision (branch, tag or commit)."})
    template: str = field(
        default="auto",
        metadata={"help": f"Prompt template for the perplexity, one of {TEMPLATES}; 'auto' = the chat template, "
                          "else 'plain'."},
    )
    max_length: int = field(
        default=1024,
        metadata={"help": "Most tokens of prompt + response for the perplexity (lowered to the model's own limit); "
                          "longer responses are cut at the end, with status 'truncated'."},
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
    dtype: str = field(default="auto", metadata={"help": "auto | bfloat16 | float16 | float32 (auto: bf16 on GPU)."})
    device: str | None = field(default=None, metadata={"help": "Device; default: this process's accelerate device."})
    max_tokens_per_batch: int = field(
        default=16384, metadata={"help": "Token budget of one forward pass (rows x padded length)."}
    )
    max_batch_size: int = field(default=256, metadata={"help": "Most sequences in one forward pass."})
    column_mapping: dict[str, str] | None = field(
        default=None, metadata={"help": "Map your column names to instruction/input/output/messages/... names."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the Hub (off by default)."}
    )
    fused_head: bool | None = field(
        default=None, metadata={"help": "Apply the output head only where a loss is taken (default: when possible)."}
    )

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
        if self.template not in TEMPLATES:
            raise ValueError(f"IndicatorConfig.template must be one of {TEMPLATES}, got {self.template!r}")
        if self.max_length < 2:
            raise ValueError(f"IndicatorConfig.max_length must be >= 2, got {self.max_length}")
        if self.k < 1:
            raise ValueError(f"IndicatorConfig.k must be >= 1, got {self.k}")
        if self.knn_metric not in KNN_METRICS:
            raise ValueError(f"IndicatorConfig.knn_metric must be one of {KNN_METRICS}, got {self.knn_metric!r}")
        if self.knn_reduce not in KNN_REDUCE:
            raise ValueError(f"IndicatorConfig.knn_reduce must be one of {KNN_REDUCE}, got {self.knn_reduce!r}")
        if not 0 < self.mtld_threshold < 1:
            raise ValueError(f"IndicatorConfig.mtld_threshold must be in (0, 1), got {self.mtld_threshold}")
        if self.max_tokens_per_batch < self.max_length:
            raise ValueError(
                f"IndicatorConfig.max_tokens_per_batch ({self.max_tokens_per_batch}) must be >= max_length "
                f"({self.max_length})"
            )
        if self.max_batch_size < 1:
            raise ValueError(f"IndicatorConfig.max_batch_size must be >= 1, got {self.max_batch_size}")


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
    _INT_COLUMNS: ClassVar[tuple[str, ...]] = ("ind_prompt_len", "ind_response_len")

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.quality_scorer = QualityScorer(self.config.quality) if self.config.quality is not None else None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.quality_scorer = QualityScorer(self.config.quality) if self.config.quality is not None else None

    @property
    def output_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        cols = ["ind_prompt_len", "ind_response_len", "ind_mtld"]
        if self.config.perplexity:
            cols.append("ind_ppl")
        if self.config.quality is not None:
            cols.append("ind_reward")
        return (*cols, "ind_status")

    @property
    def knn_column(self) -> str:
        """Name of the KNN column: ``ind_knn{k}``."""
        return f"ind_knn{self.config.k}"

    def _arrow_type(self, column: str) -> pa.DataType:
        if column in self._INT_COLUMNS:
            return pa.int64()
        return super()._arrow_type(column)

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
                model, tok = load_causal_lm(cfg.model_name_or_path, dtype=cfg.dtype, device=cfg.device,
                                            revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
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

        groups = token_budget_batches(lengths, cfg.max_tokens_per_batch, cfg.max_batch_size)
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


# -- the linear rule --------------------------------------------------------------------------------------------------
_PRESETS: dict[str, dict[str, Any]] = {
    "instructmining": {
        "name": "instructmining",
        "intercept": 1.0694,
        "coefficients": {"ind_reward": -0.1498, "ind_response_len": 8.257e-5, "ind_knn6": -0.9350},
        "description": (
            "InstructMining (Cao et al., arXiv 2307.06290): log L = 1.0694 - 0.1498 Rew + 8.257e-5 Len - 0.9350 Knn6. "
            "Rew: reward-model score (ind_reward); Len: read here as the response length in tokens "
            "(ind_response_len); "
            "Knn6: distance to the 6th nearest neighbour in sentence-embedding space (ind_knn6). Fitted in the paper "
            "with its own indicator models: with other reward models or embedders the values are on other scales, so "
            "use it to rank rows, not as a loss estimate."
        ),
    }
}


@dataclass
class InstructMiningRule:
    """A linear rule that predicts log eval loss from indicator columns: ``intercept + sum(coef[c] * row[c])``.

    - :meth:`preset` gives the published rule (``"instructmining"``), which needs the columns ``ind_reward``,
      ``ind_response_len`` and ``ind_knn6`` (:class:`IndicatorScorer` with ``quality`` set to a reward model, on a
      dataset with an embedding column); :func:`fit_rule` fits a new one.
    - :meth:`apply` adds ``instructmining_pred`` (the predicted log loss) to a dataset. Rows are ranked by it in
      ascending order: *lower predicted loss is better*, e.g. ``ds.sort("instructmining_pred").select(range(n))``.
      A row missing any indicator (NaN) gets NaN.
    - Serialisable: :meth:`to_dict` / :meth:`from_dict`, :meth:`to_json` / :meth:`from_json`.

    Example:
        >>> rule = InstructMiningRule(intercept=1.0, coefficients={"ind_reward": -0.5})
        >>> rule.predict({"ind_reward": [0.0, 2.0]}).tolist()
        [1.0, 0.0]
        >>> InstructMiningRule.from_json(rule.to_json()) == rule
        True
    """

    intercept: float = field(metadata={"help": "The rule's constant term (log loss)."})
    coefficients: dict[str, float] = field(metadata={"help": "Indicator column -> coefficient."})
    name: str = field(default="custom", metadata={"help": "A name for the rule (model cards, logs)."})
    description: str = field(default="", metadata={"help": "Where the rule comes from."})
    fit: dict[str, Any] | None = field(
        default=None, metadata={"help": "How it was fitted (experiments, R^2), for fitted rules."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.coefficients, Mapping) or not self.coefficients:
            raise ValueError("InstructMiningRule.coefficients must be a non-empty mapping of column -> coefficient")
        coefs = {}
        for col, value in self.coefficients.items():
            if not isinstance(col, str) or not col:
                raise ValueError(f"InstructMiningRule.coefficients: column names must be strings, got {col!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"InstructMiningRule.coefficients[{col!r}] must be a finite number, got {value!r}")
            coefs[col] = float(value)
        self.coefficients = coefs
        if isinstance(self.intercept, bool) or not isinstance(self.intercept, (int, float)) or not math.isfinite(
            self.intercept
        ):
            raise ValueError(f"InstructMiningRule.intercept must be a finite number, got {self.intercept!r}")
        self.intercept = float(self.intercept)

    PRESETS: ClassVar[tuple[str, ...]] = tuple(_PRESETS)

    @classmethod
    def preset(cls, name: str) -> InstructMiningRule:
        """A published rule by name: ``"instructmining"``.

        Example:
            >>> InstructMiningRule.preset("instructmining").coefficients["ind_knn6"]
            -0.935
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown InstructMiningRule preset {name!r}; expected one of {sorted(_PRESETS)}")
        return cls.from_dict(_PRESETS[name])

    @property
    def columns(self) -> list[str]:
        """The indicator columns the rule reads."""
        return list(self.coefficients)

    def predict(self, values: Mapping[str, Any]) -> np.ndarray:
        """Predicted log loss for column values (scalars or equal-length sequences); NaN where any input is NaN/None.

        Example:
            >>> InstructMiningRule(intercept=1.0, coefficients={"a": 2.0}).predict({"a": [0.5, None]}).tolist()
            [2.0, nan]
        """
        missing = [c for c in self.columns if c not in values]
        if missing:
            raise KeyError(f"the rule {self.name!r} needs the columns {missing}, which are missing")
        total = np.asarray(self.intercept, dtype=np.float64)
        for col, coef in self.coefficients.items():
            total = total + coef * _floats(values[col])
        return np.atleast_1d(total)

    def apply(self, dataset: Any, column: str = PRED_COLUMN) -> Any:
        """Return ``dataset`` with the predicted log loss in ``column`` (replaced if present). Rank ascending.

        Raises:
            KeyError: naming the indicator columns the dataset lacks (and what makes them).

        Example:
            >>> from datasets import Dataset
            >>> rule = InstructMiningRule(intercept=0.0, coefficients={"ind_reward": -1.0})
            >>> list(rule.apply(Dataset.from_dict({"ind_reward": [0.5, 2.0]}))["instructmining_pred"])
            [-0.5, -2.0]
        """
        missing = [c for c in self.columns if c not in dataset.column_names]
        if missing:
            raise KeyError(
                f"the rule {self.name!r} needs the columns {missing}, which the dataset lacks: IndicatorScorer makes "
                "ind_prompt_len/ind_response_len/ind_mtld/ind_ppl, ind_reward (with quality=...), and ind_knn{k} "
                "(with an embedding column, via .score())"
            )
        pred = self.predict({c: dataset[c] for c in self.columns}) if len(dataset) else np.zeros(0)
        if column in dataset.column_names:
            dataset = dataset.remove_columns(column)
        return dataset.add_column(column, [float(x) for x in pred])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (``from_dict`` reads it back)."""
        out: dict[str, Any] = {"name": self.name, "target": "log_eval_loss", "intercept": self.intercept,
                               "coefficients": dict(self.coefficients), "description": self.description}
        if self.fit is not None:
            out["fit"] = self.fit
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstructMiningRule:
        """Build a rule from :meth:`to_dict`'s output (unknown keys are an error)."""
        known = {"name", "target", "intercept", "coefficients", "description", "fit"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"InstructMiningRule.from_dict: unknown keys {unknown}; expected some of {sorted(known)}")
        if data.get("target", "log_eval_loss") != "log_eval_loss":
            raise ValueError(f"InstructMiningRule target must be 'log_eval_loss', got {data['target']!r}")
        if "intercept" not in data or "coefficients" not in data:
            raise ValueError("InstructMiningRule.from_dict needs 'intercept' and 'coefficients'")
        return cls(intercept=data["intercept"], coefficients=dict(data["coefficients"]),
                   name=data.get("name", "custom"), description=data.get("description", ""), fit=data.get("fit"))

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The rule as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> InstructMiningRule:
        """Read a rule from JSON text or from a file holding it."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))


def _floats(value: Any) -> np.ndarray:
    """A float array from a number, a list, an array or a ``datasets`` column; None becomes NaN."""
    if value is None:
        return np.asarray(math.nan)
    if isinstance(value, (int, float, np.number)):
        return np.asarray(float(value))
    return np.asarray([math.nan if x is None else x for x in value], dtype=np.float64)


def indicator_means(dataset: Any, columns: Sequence[str]) -> dict[str, float]:
    """Mean of each indicator column over a (selected) dataset, ignoring NaN/null: one experiment's row for
    :func:`fit_rule`.

    Example:
        >>> from datasets import Dataset
        >>> indicator_means(Dataset.from_dict({"ind_reward": [1.0, 3.0, None]}), ["ind_reward"])
        {'ind_reward': 2.0}
    """
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise KeyError(f"indicator_means: the dataset lacks the columns {missing}")
    out = {}
    for c in columns:
        v = _floats(dataset[c])
        out[c] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
    return out


def fit_rule(
    indicator_means: list[dict[str, float]],
    eval_losses: list[float],
    columns: list[str],
    *,
    name: str = "fitted",
) -> InstructMiningRule:
    """Fit a rule by least squares (scikit-learn ``LinearRegression``) from fine-tuning experiments.

    Each experiment fine-tunes a model on one subset: ``indicator_means[i]`` holds the subset's mean indicators (see
    :func:`indicator_means`) and ``eval_losses[i]`` the eval loss measured after fine-tuning on it. The rule predicts
    ``log(eval_loss)`` from the ``columns``.

    Raises:
        ValueError: with fewer experiments than ``len(columns) + 1``, non-positive or non-finite losses, or a missing
            or non-finite indicator mean (naming the experiment and the column).

    Example:
        >>> means = [{"ind_reward": r, "ind_knn6": d} for r, d in [(0, 0), (1, 0), (0, 1), (1, 1), (2, 1)]]
        >>> losses = [math.exp(1.0 - 0.2 * m["ind_reward"] - 0.5 * m["ind_knn6"]) for m in means]
        >>> rule = fit_rule(means, losses, ["ind_reward", "ind_knn6"])
        >>> [round(v, 6) for v in (rule.intercept, *rule.coefficients.values())]
        [1.0, -0.2, -0.5]
    """
    from sklearn.linear_model import LinearRegression

    if not columns:
        raise ValueError("fit_rule: columns must name at least one indicator column")
    if len(set(columns)) != len(columns):
        raise ValueError(f"fit_rule: columns has duplicates: {columns}")
    if len(indicator_means) != len(eval_losses):
        raise ValueError(
            f"fit_rule: {len(indicator_means)} indicator_means but {len(eval_losses)} eval_losses; "
            "give one of each per experiment"
        )
    n = len(eval_losses)
    if n < len(columns) + 1:
        raise ValueError(
            f"fit_rule: {n} experiments cannot determine {len(columns)} coefficients and an intercept; "
            f"run at least {len(columns) + 1}"
        )
    x = np.empty((n, len(columns)), dtype=np.float64)
    for i, means in enumerate(indicator_means):
        for j, col in enumerate(columns):
            if col not in means:
                raise ValueError(f"fit_rule: experiment {i} has no mean for the column {col!r}")
            value = means[col]
            if value is None or not math.isfinite(float(value)):
                raise ValueError(f"fit_rule: experiment {i} has a non-finite mean for the column {col!r}: {value!r}")
            x[i, j] = float(value)
    losses = np.asarray(eval_losses, dtype=np.float64)
    if not np.isfinite(losses).all() or (losses <= 0).any():
        raise ValueError(
            f"fit_rule: eval_losses must be finite and > 0 (the rule predicts their log), got {eval_losses}"
        )
    y = np.log(losses)
    reg = LinearRegression().fit(x, y)
    residual = y - reg.predict(x)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else math.nan
    return InstructMiningRule(
        intercept=float(reg.intercept_),
        coefficients={c: float(v) for c, v in zip(columns, reg.coef_, strict=True)},
        name=name,
        description=f"fitted by least squares on {n} fine-tuning experiments (target: log eval loss)",
        fit={"n_experiments": n, "r2": r2, "rmse_log_loss": float(np.sqrt((residual**2).mean()))},
    )
