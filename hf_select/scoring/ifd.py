"""Instruction-following difficulty (IFD), its perplexity form, and reverse IFD, as a batched ``Dataset.map``.

For a prompt Q and response A: ``loss_conditioned`` = mean cross-entropy of A's tokens given Q,
``loss_direct`` = mean cross-entropy of the same tokens after only a BOS token (EOS when the tokenizer has
no BOS), ``ifd = loss_conditioned / loss_direct`` (Cherry LLM) and ``ifd_ppl = exp(loss_conditioned -
loss_direct)`` (Superfiltering's perplexity ratio). IFD >= 1 means the prompt does not help predict the
answer. With ``reverse=True`` the reverse columns score the instruction given a fixed prompt that shows
the response (Reflection-Tuning's r-IFD).

Example:
    >>> from datasets import Dataset
    >>> from hf_select import score_ifd
    >>> ds = Dataset.from_list([{"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5"}])
    >>> ds = ds.map(score_ifd, batched=True)  # doctest: +SKIP
    >>> ds[0]["ifd_status"]  # doctest: +SKIP
    'ok'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
from ..models import DEFAULT_LM, load_causal_lm, model_identity
from .base import BaseScorer
from .batching import default_token_budget, run_with_oom_retry, token_budget_batches
from .lm_loss import mean_target_losses

REVERSE_PROMPT = (
    "Here is a response written by an assistant. Write the instruction that the response answers.\n\n"
    "### Response:\n{response}\n\n### Instruction:\n"
)
IFD_STATUSES = (
    "ok",
    "empty_response",
    "prompt_too_long",
    "invalid_row",
    "unknown_role",
    "no_assistant_turn",
    "template_mismatch",
    "template_error",
    "oom",
    "non_finite",
    "empty_instruction",  # reverse IFD only: the instruction has no tokens
)


@dataclass
class IFDConfig:
    """Configuration of :class:`IFDScorer`."""

    model_name_or_path: str = field(
        default=DEFAULT_LM, metadata={"help": "Causal LM (Hub id or folder) whose losses define IFD."}
    )
    revision: str | None = field(default=None, metadata={"help": "Model revision (branch, tag or commit)."})
    template: str = field(
        default="auto",
        metadata={
            "help": f"Prompt template, one of {TEMPLATES}; 'auto' = the tokenizer's chat template, else 'plain'."
        },
    )
    max_length: int = field(default=1024, metadata={"help": "Maximum tokens of prompt + response (truncated)."})
    turns: str = field(
        default="last",
        metadata={"help": f"Assistant turns to score, one of {TURNS}: 'all' averages the per-turn scores."},
    )
    reverse: bool = field(default=False, metadata={"help": "Also compute reverse IFD (instruction given response)."})
    dtype: str = field(default="auto", metadata={"help": "auto | bfloat16 | float16 | float32 (auto: bf16 on GPU)."})
    device: str | None = field(default=None, metadata={"help": "Device; default: this process's accelerate device."})
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "Token budget of one forward pass (rows x padded length); default 32768 on GPU, 1024 on "
            "CPU (a CPU is compute-bound: bigger batches only add padding and memory traffic)."
        },
    )
    max_batch_size: int = field(default=256, metadata={"help": "Most sequences in one forward pass."})
    column_mapping: dict[str, str] | None = field(
        default=None, metadata={"help": "Map your column names to instruction/input/output/messages/... names."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the Hub (off by default)."}
    )
    fused_head: bool | None = field(
        default=None,
        metadata={"help": "Apply the output head only where a loss is taken (default: when the model allows it)."},
    )

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(f"IFDConfig.template must be one of {TEMPLATES}, got {self.template!r}")
        if self.turns not in TURNS:
            raise ValueError(f"IFDConfig.turns must be one of {TURNS}, got {self.turns!r}")
        if self.max_length < 2:
            raise ValueError(f"IFDConfig.max_length must be >= 2, got {self.max_length}")
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < 1:
            raise ValueError(f"IFDConfig.max_tokens_per_batch must be >= 1, got {self.max_tokens_per_batch}")
        if self.max_batch_size < 1:
            raise ValueError(f"IFDConfig.max_batch_size must be >= 1, got {self.max_batch_size}")


@dataclass
class _Item:
    row: int
    kind: str  # "forward" or "reverse"
    context: list[int]
    target: list[int]
    direct: list[int]


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
    def output_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.forward_columns + (self.reverse_columns if self.config.reverse else ())

    def model_ids(self) -> list[str]:
        given = self.given_model_identity()  # a model from set_model: the digest of its weights
        return [given or model_identity(None, self.config.model_name_or_path, self.config.revision)]

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return the model and tokenizer."""
        if "model" not in self._loaded:
            model, tok = load_causal_lm(
                self.config.model_name_or_path,
                dtype=self.config.dtype,
                device=self.config.device,
                revision=self.config.revision,
                trust_remote_code=self.config.trust_remote_code,
            )
            self._loaded.update(model=model, tokenizer=tok)
        return self._loaded["model"], self._loaded["tokenizer"]

    def set_model(self, model: Any, tokenizer: Any) -> IFDScorer:
        """Use an already loaded model and tokenizer (e.g. a model just fine-tuned in the same process)."""
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._loaded.update(model=model, tokenizer=tokenizer, given=True)
        return self

    # -- building items -----------------------------------------------------------------------------------------
    def _bos(self, tokenizer: Any) -> int:
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if bos is None:
            raise ValueError(
                "the tokenizer has neither a BOS nor an EOS token to start the direct (unconditioned) pass"
            )
        return int(bos)

    def max_length_for(self, model: Any, tokenizer: Any) -> int:
        """``max_length`` lowered to the model's own limit (``max_position_embeddings``, the tokenizer's
        ``model_max_length``): longer sequences would index past the position table and stop the whole run."""
        limit = self.config.max_length
        tok_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 10**9:
            limit = min(limit, tok_max)
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            limit = min(limit, positions)
        return limit

    def _build_items(
        self, batch: dict[str, list[Any]], n: int, tokenizer: Any, max_length: int | None = None
    ) -> tuple[list[_Item], list[str], list[str], list[int]]:
        """Items to score for the batch, with each row's forward and reverse status and response token count.

        Texts are rendered per row, then tokenized in one batched call per side.
        """
        cfg = self.config
        max_length = cfg.max_length if max_length is None else max_length
        template = resolve_template(cfg.template, tokenizer)
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
        items: list[_Item] = []
        first_error: dict[int, str] = {}
        for r, seg in zip(owners, encode_segments(tokenizer, requests, template), strict=True):
            if isinstance(seg, RowError):
                first_error.setdefault(r, seg.status)
                continue
            room = max_length - len(seg.prompt_ids)
            if room < 1:
                first_error.setdefault(r, "prompt_too_long")
                continue
            target = seg.response_ids[:room]
            tokens[r] += len(target)
            items.append(_Item(r, "forward", seg.prompt_ids, target, [bos]))
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

    # -- scoring --------------------------------------------------------------------------------------------------
    def _score_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        cfg = self.config
        n = len(next(iter(batch.values()))) if batch else 0
        model, tokenizer = self.load()
        items, status, rstatus, tokens = self._build_items(batch, n, tokenizer, self.max_length_for(model, tokenizer))
        cond = np.full(len(items), np.nan)
        direct = np.full(len(items), np.nan)
        oom_items: set[int] = set()
        lengths = [len(it.context) + len(it.target) + len(it.target) + 1 for it in items]
        budget = 2 * default_token_budget(cfg.max_tokens_per_batch, model)  # both passes of an item share a batch
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        for group in token_budget_batches(lengths, budget, cfg.max_batch_size):

            def run(idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
                c = mean_target_losses(
                    model, [(items[i].context, items[i].target) for i in idx], pad, fused_head=cfg.fused_head
                )
                d = mean_target_losses(
                    model, [(items[i].direct, items[i].target) for i in idx], pad, fused_head=cfg.fused_head
                )
                return c.numpy(), d.numpy()

            def on_oom(idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
                oom_items.update(idx)
                return np.full(len(idx), np.nan), np.full(len(idx), np.nan)

            for idx, (c, d) in run_with_oom_retry(group, run, on_oom):
                cond[idx] = c
                direct[idx] = d
        return self._assemble(n, items, cond, direct, status, rstatus, tokens, oom_items)

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
