"""Instruction-following difficulty (IFD), its perplexity form, and reverse IFD, as a batched ``Dataset.map``.

For a prompt Q and response A: ``loss_conditioned`` = mean cross-entropy of A's tokens given Q,
``loss_direct`` = mean cross-entropy of A's tokens without Q, ``ifd = loss_conditioned / loss_direct``
(Cherry LLM's loss ratio) and ``ifd_ppl = exp(loss_conditioned - loss_direct)`` (Superfiltering's perplexity
ratio). IFD >= 1 means the prompt does not help predict the answer. With ``reverse=True`` the reverse columns
score the instruction given a fixed prompt that shows the response (Reflection-Tuning's r-IFD).

What "without Q" means is a choice, ``IFDConfig.direct_prefix``:

- ``"none"``: A by itself, as Superfiltering scores it: after the tokenizer's own special prefix when it adds
  one to plain text (Llama's ``<s>``), else A's first token is context only and is not scored in this pass
  (GPT-2, SmolLM2); a one-token A then has no direct loss (status ``response_too_short``). After a chat
  template A ends in end-of-turn tokens, so every row keeps a score.
- ``"bos"``: A's tokens after the tokenizer's BOS token (EOS when it has none); every token of A is scored. With
  SmolLM2 the BOS is ``<|im_start|>``, after which A's first token costs 12-15 nats: that inflates the direct
  loss of short answers. It was the only direct pass before ``direct_prefix`` existed.
- ``"response_header"``: A after the text ``### Response:``, as Cherry LLM scores it.
- ``"auto"`` (the default): ``"none"`` after the chat template, ``"bos"`` after a text template (where
  ``"none"`` would leave one-token answers, e.g. class labels, without a score); a seed layout's own pass.
  Why: benchmarks/RESULTS.md, "IFD direct pass".

``IFDConfig.layout`` chooses the token layout as a whole. ``"hf_select"`` (the default) uses the template's
prompt tokens and the response tokens tokenized on their own, the same tokens in both passes (SFT's view).
``"superfiltering"`` and ``"cherry"`` reproduce the seed scripts (Superfiltering's ``code_ifd`` with its
plain prompt; Cherry LLM's ``cherry_seletion`` in ``cherry`` mode with the Alpaca prompt): prompt and
response are tokenized as one text and the response's tokens are the tokens whose character offsets start
at or after the prompt's end (a token that merges the prompt's last character with the response's first one,
as ``:"`` does, is context, exactly as the scripts count it), each script's truncation, and its skips as
statuses. See :data:`SEED_LAYOUTS`.

Both passes of every item are sequences batched by :func:`~hf_select.scoring.lm_loss.sequence_losses` (length-sorted
and right-padded, or packed with ``IFDConfig.packing``); the template's fixed prefix (its system prompt and user
header, or the Alpaca preamble: :meth:`IFDScorer.template_prefix`) is computed once per batch of rows
(``IFDConfig.prefix_reuse``, :mod:`~hf_select.scoring.prefix`).
``dtype="auto"`` is bfloat16 on a GPU that supports it and on a CPU whose bf16 matrix multiplies measure faster than
fp32 ones, else float32 (:func:`hf_select.models.resolve_dtype` says why).

Example:
    >>> from datasets import Dataset
    >>> from hf_select import score_ifd
    >>> ds = Dataset.from_list([{"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5"}])
    >>> ds = ds.map(score_ifd, batched=True)  # doctest: +SKIP
    >>> ds[0]["ifd_status"]  # doctest: +SKIP
    'ok'
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Features, Value

from ..formats import (
    TEMPLATES,
    TURNS,
    RowError,
    assistant_turns,
    detect_format,
    encode_segments,
    last_user_text,
    resolve_template,
    row_to_messages,
)
from ..models import (
    DEFAULT_LM,
    DTYPES,
    load_causal_lm,
    model_identity,
    resolve_device,
    resolve_dtype,
)
from .base import BaseScorer
from .common import ROW_STATUSES, model_limit
from .config import ScorerConfig, shared
from .ifd_seed import RESPONSE_HEADER, SEED_LAYOUTS, seed_spans
from .lm_loss import sequence_losses, supports_packing
from .prefix import common_prefix

logger = logging.getLogger(__name__)
DIRECT_PREFIXES = ("auto", "bos", "none", "response_header")
LAYOUTS = ("hf_select", "superfiltering", "cherry")
# Probe prompts whose common rendered prefix is the template's fixed text (they share no first character).
PREFIX_PROBES = ("Zebras?", "1 + 1", "(a) or (b)")
REVERSE_PROMPT = (
    "Here is a response written by an assistant. Write the instruction that the response answers.\n\n"
    "### Response:\n{response}\n\n### Instruction:\n"
)
IFD_STATUSES = (
    "ok",
    "empty_response",
    "prompt_too_long",
    "response_too_short",
    *ROW_STATUSES,
    "empty_instruction",  # reverse IFD only: the instruction has no tokens
)


@dataclass
class IFDConfig(ScorerConfig):
    """Configuration of :class:`IFDScorer` (the shared model and batching fields: :class:`ScorerConfig`)."""

    model_name_or_path: str = shared("model_name_or_path", DEFAULT_LM,
                                     help="Causal LM (Hub id or folder) whose losses define IFD.")
    dtype: str = shared(
        "dtype", "auto",
        help=f"One of {DTYPES}. 'auto': bfloat16 on a GPU that supports it and on a CPU whose bf16 matrix multiplies "
        "measure at least 1.3x as fast as fp32 ones (checked once, in 0.3 s; on our AVX512-BF16 Xeon they are half as "
        "fast, so fp32), else float32; 'float32' forces fp32 (seed-exact scores). benchmarks/RESULTS.md, 'IFD on "
        "CPU'.",
    )
    max_length: int = shared("max_length", 1024, help="Maximum tokens of prompt + response (truncated).")
    max_batch_size: int = shared("max_batch_size", 256)
    template: str = field(
        default="auto",
        metadata={
            "help": f"Prompt template, one of {TEMPLATES}; 'auto' = the tokenizer's chat template, else 'plain'."
        },
    )
    turns: str = field(
        default="last",
        metadata={"help": f"Assistant turns to score, one of {TURNS}: 'all' averages the per-turn scores."},
    )
    direct_prefix: str = field(
        default="auto",
        metadata={
            "help": f"Direct (no prompt) pass, one of {DIRECT_PREFIXES}: 'bos' = the response after the BOS token, "
            "'none' = the response alone (Superfiltering; its first token is context), 'response_header' = after "
            "'### Response:' (Cherry LLM); 'auto' = 'none' after the chat template, 'bos' after a text template, the "
            "seed's own under a seed layout."
        },
    )
    layout: str = field(
        default="hf_select",
        metadata={
            "help": f"Token layout, one of {LAYOUTS}: 'hf_select' = template prompt + separately tokenized response "
            "(the same tokens in both passes); 'superfiltering' / 'cherry' = that seed script's exact layout "
            "(joint tokenization, its prompt, truncation and skips)."
        },
    )
    packing: bool = field(
        default=False,
        metadata={
            "help": "Pack several sequences into each row of max_length tokens (own position ids, attention kept "
            "inside each sequence) instead of right-padding length-sorted batches; for models that pass the packing "
            "check (else padded). Worth it with varlen flash attention on a GPU; on a CPU the masked attention over "
            "the full row costs more than the 1% padding it saves (benchmarks/RESULTS.md, 'IFD on CPU')."
        },
    )
    prefix_reuse: bool = field(
        default=True,
        metadata={
            "help": "Compute the template's fixed prefix (its system prompt and user header, or the Alpaca preamble) "
            "once and start each padded batch of prompts that continue it after it, for models that pass the reuse "
            "check; the same scores to rounding, with fewer positions computed (benchmarks/RESULTS.md, 'IFD on "
            "CPU'). Not used with packing."
        },
    )
    reverse: bool = field(default=False, metadata={"help": "Also compute reverse IFD (instruction given response)."})
    fused_head: bool | None = field(
        default=None,
        metadata={"help": "Apply the output head only where a loss is taken (default: when the model allows it)."},
    )

    MIN_MAX_LENGTH = 2
    # Fields added later leave the cache keys of earlier runs valid at their defaults.
    KEY_OMITTED_AT: ClassVar[dict[str, Any]] = {"packing": False, "prefix_reuse": True}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.template not in TEMPLATES:
            raise ValueError(f"IFDConfig.template must be one of {TEMPLATES}, got {self.template!r}")
        if self.turns not in TURNS:
            raise ValueError(f"IFDConfig.turns must be one of {TURNS}, got {self.turns!r}")
        if self.direct_prefix not in DIRECT_PREFIXES:
            raise ValueError(f"IFDConfig.direct_prefix must be one of {DIRECT_PREFIXES}, got {self.direct_prefix!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"IFDConfig.layout must be one of {LAYOUTS}, got {self.layout!r}")
        seed = SEED_LAYOUTS.get(self.layout)
        if seed is not None:
            for name in ("template", "direct_prefix"):
                value = getattr(self, name)
                if value not in ("auto", seed[name]):
                    raise ValueError(
                        f"IFDConfig.{name}={value!r} conflicts with layout={self.layout!r}, which uses "
                        f"{name}={seed[name]!r}; leave {name}='auto' or use layout='hf_select'."
                    )

    def torch_dtype(self, device: Any = None) -> torch.dtype:
        """The dtype the model is loaded in on ``device`` (default: the configured one), ``auto`` resolved.

        Example:
            >>> IFDConfig(dtype="float32").torch_dtype("cpu")
            torch.float32
        """
        return resolve_dtype(self.dtype, resolve_device(device or self.device))

    def resolved_direct_prefix(self, template: str = "chat") -> str:
        """The direct pass in use after the resolved ``template``: ``direct_prefix``, with ``auto`` resolved
        (``none`` after ``chat``, ``bos`` after a text template, or the seed layout's own).

        Example:
            >>> cfg = IFDConfig()
            >>> cfg.resolved_direct_prefix("chat"), cfg.resolved_direct_prefix("alpaca")
            ('none', 'bos')
            >>> IFDConfig(layout="cherry").resolved_direct_prefix()
            'response_header'
        """
        if self.direct_prefix != "auto":
            return self.direct_prefix
        seed = SEED_LAYOUTS.get(self.layout)
        if seed:
            return seed["direct_prefix"]
        return "none" if template == "chat" else "bos"


@dataclass
class _Item:
    row: int
    kind: str  # "forward" or "reverse"
    context: list[int]
    target: list[int]
    direct: list[int]  # context of the direct pass
    direct_target: list[int] | None = None  # tokens scored in the direct pass (None: ``target``)

    @property
    def direct_tokens(self) -> list[int]:
        return self.target if self.direct_target is None else self.direct_target


def _special_prefix(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts in front of plain text by itself (Llama's BOS; none for GPT-2)."""
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a")["input_ids"])
    k = len(full) - len(plain)
    return full[:k] if k > 0 and full[k:] == plain else []


class IFDScorer(BaseScorer):
    """Adds ``ifd``, ``ifd_ppl``, ``loss_conditioned``, ``loss_direct``, ``response_tokens``, ``ifd_status``
    (and with ``reverse=True`` ``ifd_reverse``, ``ifd_reverse_ppl``, ``loss_reverse_conditioned``,
    ``loss_reverse_direct``, ``ifd_reverse_status``).

    Example:
        >>> scorer = IFDScorer(IFDConfig(template="alpaca", max_length=512))
        >>> ds = ds.map(scorer, batched=True)  # doctest: +SKIP
        >>> ds = scorer.score(ds)  # doctest: +SKIP
    """

    name = "ifd"
    config_class = IFDConfig
    forward_columns = ("ifd", "ifd_ppl", "loss_conditioned", "loss_direct", "response_tokens", "ifd_status")
    reverse_columns = (
        "ifd_reverse",
        "ifd_reverse_ppl",
        "loss_reverse_conditioned",
        "loss_reverse_direct",
        "ifd_reverse_status",
    )

    @property
    def features(self) -> Features:
        """The loss and ratio columns are float64, ``response_tokens`` int64, the statuses strings."""
        columns = self.forward_columns + (self.reverse_columns if self.config.reverse else ())
        types = {"response_tokens": "int64", "ifd_status": "string", "ifd_reverse_status": "string"}
        return Features({c: Value(types.get(c, "float64")) for c in columns})

    def passes_per_row(self) -> int:
        """Two forward passes per row (conditioned and direct), four with ``reverse``."""
        return 4 if self.config.reverse else 2

    def model_ids(self) -> list[str]:
        given = self.given_model_identity()  # a model from set_model: the digest of its weights
        if given:
            return [given]
        return [model_identity(None, self.config.model_name_or_path, self.config.revision)]

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return the model and tokenizer (``dtype`` resolved by :meth:`IFDConfig.torch_dtype`)."""
        if "model" not in self._loaded:
            kwargs = {**self.config.load_kwargs(), "dtype": self.config.torch_dtype()}
            model, tok = load_causal_lm(self.config.model_name_or_path, **kwargs)
            self._loaded.update(model=model, tokenizer=tok)
        return self._loaded["model"], self._loaded["tokenizer"]

    def set_model(self, model: Any, tokenizer: Any) -> IFDScorer:
        """Use an already loaded model and tokenizer (e.g. a model just fine-tuned in the same process)."""
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._loaded.update(model=model, tokenizer=tokenizer, given=True)
        return self

    def template_prefix(self, tokenizer: Any, max_length: int | None = None) -> list[int]:
        """The tokens every conditioned context starts with under this config's template and layout: the common
        prefix of three probe prompts without an input (a chat template's system prompt and user header, the Alpaca
        preamble). ``IFDConfig.prefix_reuse`` computes it once per batch of rows; it depends on the template alone.

        Example:
            >>> scorer = IFDScorer(IFDConfig())
            >>> tok = scorer.load()[1]  # doctest: +SKIP
            >>> len(scorer.template_prefix(tok))  # SmolLM2's system prompt and user header  # doctest: +SKIP
            24
        """
        key = ("template_prefix", id(tokenizer), max_length)
        if key not in self._loaded:
            probe = IFDScorer(replace(self.config, column_mapping=None, reverse=False, turns="last"))
            n = len(PREFIX_PROBES)
            batch = {"instruction": list(PREFIX_PROBES), "input": [""] * n, "output": ["Yes."] * n}
            items = [it for it in probe._build_items(batch, n, tokenizer, max_length)[0] if it.kind == "forward"]
            self._loaded[key] = common_prefix([it.context for it in items]) if len(items) == n else []
        return self._loaded[key]

    # -- building items -----------------------------------------------------------------------------------------
    def _bos(self, tokenizer: Any) -> int:
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if bos is None:
            raise ValueError(
                "the tokenizer has neither a BOS nor an EOS token to start the direct (unconditioned) pass"
            )
        return int(bos)

    def _build_items(
        self, batch: dict[str, list[Any]], n: int, tokenizer: Any, max_length: int | None = None
    ) -> tuple[list[_Item], list[str], list[str], list[int]]:
        """Items to score for the batch, with each row's forward and reverse status and response token count.

        Texts are rendered per row, then tokenized in one batched call per side.
        """
        cfg = self.config
        max_length = cfg.max_length if max_length is None else max_length
        seed = SEED_LAYOUTS.get(cfg.layout)
        template = seed["template"] if seed else resolve_template(cfg.template, tokenizer)
        fmt = detect_format(batch.keys(), cfg.column_mapping)
        bos = self._bos(tokenizer)
        status = ["ok"] * n
        rstatus = ["ok"] * n
        tokens = [0] * n
        keys = list(batch.keys())
        requests: list[tuple[list[dict[str, str]], int]] = []
        owners: list[int] = []
        reverse_rows: list[int] = []
        reverse_texts: list[tuple[str, str]] = []
        for r in range(n):
            try:
                messages = row_to_messages({k: batch[k][r] for k in keys}, fmt, cfg.column_mapping)
            except RowError as err:
                status[r] = rstatus[r] = err.status
                continue
            turns = assistant_turns(messages, cfg.turns)
            for t in turns:
                requests.append((messages, t))
                owners.append(r)
            if cfg.reverse:
                reverse_rows.append(r)
                reverse_texts.append((last_user_text(messages, turns[-1]), messages[turns[-1]]["content"]))
        first_error: dict[int, str] = {}
        if seed:
            spans = seed_spans(requests, owners, tokenizer, template, max_length, cfg.layout == "cherry", first_error,
                               tokens)
            items = [_Item(r, "forward", *span) for r, *span in spans]
        else:
            items = self._template_items(requests, owners, tokenizer, template, max_length, first_error, tokens)
        scored_rows = {it.row for it in items}
        for r in set(owners) - scored_rows:
            status[r] = first_error.get(r, "invalid_row")
        if reverse_rows:
            contexts = tokenizer([REVERSE_PROMPT.format(response=resp) for _, resp in reverse_texts])["input_ids"]
            targets = tokenizer([inst for inst, _ in reverse_texts], add_special_tokens=False)["input_ids"]
            for r, ctx, tgt in zip(reverse_rows, contexts, targets, strict=True):
                room = max_length - len(ctx)
                if not tgt:
                    rstatus[r] = "empty_instruction"
                elif room < 1:
                    rstatus[r] = "prompt_too_long"
                else:
                    items.append(_Item(r, "reverse", list(ctx), list(tgt[:room]), [bos]))
        return items, status, rstatus, tokens

    def _template_items(
        self,
        requests: list[tuple[list[dict[str, str]], int]],
        owners: list[int],
        tokenizer: Any,
        template: str,
        max_length: int,
        first_error: dict[int, str],
        tokens: list[int],
    ) -> list[_Item]:
        """Layout ``hf_select``: the template's prompt ids, then the response's own ids; the direct pass scores the
        same ids after ``direct_prefix``."""
        prefix = self.config.resolved_direct_prefix(template)
        if prefix == "bos":
            head = [self._bos(tokenizer)]
        elif prefix == "response_header":
            head = list(tokenizer(RESPONSE_HEADER)["input_ids"])
        else:
            head = _special_prefix(tokenizer)
        items: list[_Item] = []
        for r, seg in zip(owners, encode_segments(tokenizer, requests, template), strict=True):
            if isinstance(seg, RowError):
                first_error.setdefault(r, seg.status)
                continue
            room = max_length - len(seg.prompt_ids)
            if room < 1:
                first_error.setdefault(r, "prompt_too_long")
                continue
            target = seg.response_ids[:room]
            if head:
                item = _Item(r, "forward", seg.prompt_ids, target, head)
            else:  # "none" with a tokenizer that adds nothing: the response's first token is the direct context
                if len(target) < 2:
                    first_error.setdefault(r, "response_too_short")
                    continue
                item = _Item(r, "forward", seg.prompt_ids, target, target[:1], target[1:])
            tokens[r] += len(target)
            items.append(item)
        return items

    # -- scoring --------------------------------------------------------------------------------------------------
    def _score_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        cfg = self.config
        n = len(next(iter(batch.values()))) if batch else 0
        model, tokenizer = self.load()
        limit = model_limit(model, tokenizer, cfg.max_length)
        items, status, rstatus, tokens = self._build_items(batch, n, tokenizer, limit)
        # Both passes of every item are sequences of their own, batched together by length: a conditioned pass
        # (prompt + response) is about twice as long as its direct pass, and a batch holding both padded the
        # shorter one (10% of the computed positions on alpaca rows; benchmarks/RESULTS.md, "IFD on CPU").
        seqs = [(it.context, it.target) for it in items] + [(it.direct, it.direct_tokens) for it in items]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        packed = cfg.packing and supports_packing(model)
        if cfg.packing and not packed:
            logger.warning("IFDConfig.packing: %s fails the packing check; scoring right-padded batches instead.",
                           type(model).__name__)
        shared = self.template_prefix(tokenizer, limit) if cfg.prefix_reuse and not packed else None
        losses, fits = sequence_losses(model, seqs, pad, max_tokens=cfg.token_budget(model),
                                       max_rows=cfg.max_batch_size, fused_head=cfg.fused_head,
                                       pack_width=limit if packed else None, shared_prefix=shared)
        failed = {i % len(items) for i in np.flatnonzero(~fits)}
        return self._assemble(n, items, losses[: len(items)], losses[len(items) :], status, rstatus, tokens, failed)

    def _assemble(
        self,
        n: int,
        items: list[_Item],
        cond: np.ndarray,
        direct: np.ndarray,
        status: list[str],
        rstatus: list[str],
        tokens: list[int],
        oom_items: set[int],
    ) -> dict[str, list[Any]]:
        """The output columns from the per-item losses (``oom_items``: items with a pass that did not fit)."""
        per_row: dict[tuple[int, str], list[tuple[float, float]]] = {}
        for i, it in enumerate(items):
            if i in oom_items:
                (status if it.kind == "forward" else rstatus)[it.row] = "oom"
                continue
            per_row.setdefault((it.row, it.kind), []).append((float(cond[i]), float(direct[i])))
        out: dict[str, list[Any]] = {c: [] for c in self.output_columns}
        for r in range(n):
            for kind, st, prefix in (("forward", status, ""), ("reverse", rstatus, "_reverse")):
                if kind == "reverse" and not self.config.reverse:
                    continue
                pairs = per_row.get((r, kind), [])
                lc = ld = ifd = ppl = math.nan
                if pairs and st[r] == "ok":
                    ratios = [c / d if d > 0 else math.nan for c, d in pairs]
                    lc = float(np.mean([c for c, _ in pairs]))
                    ld = float(np.mean([d for _, d in pairs]))
                    ifd = float(np.mean(ratios))
                    ppl = float(np.mean([math.exp(c - d) for c, d in pairs]))
                    if not all(math.isfinite(v) for v in (lc, ld, ifd, ppl)):
                        st[r] = "non_finite"
                        lc = ld = ifd = ppl = math.nan
                out[f"ifd{prefix}"].append(ifd)
                out[f"ifd{prefix}_ppl"].append(ppl)
                out[f"loss{prefix}_conditioned"].append(lc)
                out[f"loss{prefix}_direct"].append(ld)
                out[f"ifd{prefix}_status"].append(st[r])
            out["response_tokens"].append(tokens[r] if status[r] == "ok" else 0)
        return out


score_ifd = IFDScorer()
"""A ready-made :class:`IFDScorer` with the default config (SmolLM2-135M-Instruct, loaded on first use)."""
