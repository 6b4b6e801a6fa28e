"""What a comparison will cost, before it starts: the fine-tunes it runs, the tokens each trains on and evaluates,
the shared scoring passes, and an estimate in minutes from a short timing of the model on this machine.

:func:`make_plan` counts; :func:`measure_rates` times a few forward and forward+backward passes of the base model
(a few seconds) to turn the counts into minutes. ``hf-select compare --dry-run`` prints the plan and stops.

Example:
    >>> plan = Plan(fine_tunes=[("random (seed 0)", 300, 9000)], train_tokens_per_row=80.0, epochs=1.0,
    ...             eval_tokens=40000, score_tokens=0, rates={"train": 250.0, "forward": 800.0})
    >>> round(plan.minutes()["train"], 2), round(plan.minutes()["eval"], 2)
    (1.6, 1.67)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# forward passes over each pool row per shared score (IFD: conditioned + direct; reverse adds two more)
SCORE_PASSES = {"ifd": 2, "reverse": 2, "quality": 1, "embedding": 0.1, "target": 0.0}


@dataclass
class Plan:
    """The fine-tunes (label, rows, supervised tokens), the tokens processed per trained row (prompt included),
    epochs, the tokens every trained model is evaluated on (all eval sets, base model included once), the pool
    tokens the shared scoring reads, and the measured rates (tokens per second: ``train``, ``forward``)."""

    fine_tunes: list[tuple[str, int, int]]
    train_tokens_per_row: float
    epochs: float
    eval_tokens: int
    score_tokens: float
    rates: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def minutes(self) -> dict[str, float]:
        """Estimated minutes per part (``train``, ``eval``, ``score``, ``total``); empty without rates."""
        if not self.rates.get("train") or not self.rates.get("forward"):
            return {}
        train_tokens = sum(rows for _, rows, _ in self.fine_tunes) * self.train_tokens_per_row * self.epochs
        out = {"train": train_tokens / self.rates["train"] / 60,
               "eval": self.eval_tokens * (len(self.fine_tunes) + 1) / self.rates["forward"] / 60,
               "score": self.score_tokens / self.rates["forward"] / 60}
        out["total"] = sum(out.values())
        return out

    def text(self) -> str:
        """The plan as a few printable lines."""
        rows = sum(r for _, r, _ in self.fine_tunes)
        tokens = sum(t for _, _, t in self.fine_tunes)
        lines = [f"compare plan: {len(self.fine_tunes)} fine-tunes, {rows} rows and {tokens} supervised tokens in all "
                 f"(x {self.epochs:g} epochs), each trained model evaluated on {self.eval_tokens} eval tokens, "
                 f"{self.score_tokens:.0f} pool tokens read by the shared scoring"]
        for label, r, t in self.fine_tunes:
            lines.append(f"  - {label}: about {r} rows, {t} supervised tokens")
        minutes = self.minutes()
        if minutes:
            lines.append(f"  estimated: {minutes['total']:.0f} min ({minutes['train']:.0f} training, "
                         f"{minutes['eval']:.0f} evals, {minutes['score']:.0f} scoring) at the measured "
                         f"{self.rates['train']:.0f} training and {self.rates['forward']:.0f} forward tokens/s; "
                         "finished stages in the output folder are reused and cost nothing")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"fine_tunes": [list(f) for f in self.fine_tunes], "train_tokens_per_row": self.train_tokens_per_row,
                "epochs": self.epochs, "eval_tokens": self.eval_tokens, "score_tokens": self.score_tokens,
                "rates": self.rates, "minutes": self.minutes(), "notes": self.notes}


def measure_rates(model_name_or_path: str, *, batch_size: int, length: int, precision: str = "fp32",
                  repeats: int = 2) -> dict[str, float]:
    """Tokens per second of the base model here: ``forward`` (no grad, as the evals and scoring run) and ``train``
    (forward + backward), timed on ``repeats`` random batches of ``batch_size x length`` after one warm-up."""
    import torch

    from ..training import load_model_for_training

    model, _ = load_model_for_training(model_name_or_path)
    # bf16 as the trainer runs it (autocast over fp32 weights), fp32 otherwise
    autocast = torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16,
                              enabled=precision == "bf16")
    if torch.cuda.is_available():
        model = model.cuda()
    vocab = int(model.config.vocab_size)
    ids = torch.randint(0, vocab, (batch_size, length), generator=torch.Generator().manual_seed(0))
    ids = ids.to(next(model.parameters()).device)
    tokens = batch_size * length * repeats
    model.eval()
    with torch.no_grad(), autocast:
        model(input_ids=ids[:, :8])
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(input_ids=ids)
        forward = tokens / (time.perf_counter() - t0)
    model.train()
    t0 = time.perf_counter()
    for _ in range(repeats):
        with autocast:
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
    train = tokens / (time.perf_counter() - t0)
    del model
    return {"forward": round(forward, 1), "train": round(train, 1)}


def eval_token_total(specs: Sequence[Mapping[str, Any]], model_name_or_path: str, *, max_length: int,
                     questions: str | None, limit: int | None) -> int:
    """Prompt + completion tokens of every eval row (cut at ``max_length``), over all eval sets."""
    from ..chat_tokens import tokenize_prompt_completion
    from ..models import load_tokenizer, resolve_model_path
    from ..training import load_eval_dataset, to_prompt_completion

    tokenizer = load_tokenizer(resolve_model_path(model_name_or_path))
    total = 0
    for spec in specs:
        rows = to_prompt_completion(load_eval_dataset(spec["path"], questions=questions, limit=limit), turns="all")
        for prompt, completion in tokenize_prompt_completion(tokenizer, rows):
            total += min(len(prompt) + len(completion), max_length)
    return total


def prompt_tokens_per_row(pool: Any, model_name_or_path: str, *, sample: int = 200) -> float:
    """The mean prompt tokens of up to ``sample`` evenly spaced pool rows (what training reads besides the
    supervised tokens)."""
    from ..chat_tokens import tokenize_prompt_completion
    from ..models import load_tokenizer, resolve_model_path
    from ..training import to_prompt_completion

    tokenizer = load_tokenizer(resolve_model_path(model_name_or_path))
    n = len(pool)
    step = max(1, n // sample)
    rows = to_prompt_completion(pool.select(range(0, n, step)))
    pairs = tokenize_prompt_completion(tokenizer, rows)
    return sum(len(p) for p, _ in pairs) / max(1, len(pairs))


def make_plan(config: Any, pool: Any, counts: Any, specs: Sequence[Mapping[str, Any]], k: int, *,
              measure: bool = True) -> Plan:
    """The :class:`Plan` of a comparison (``counts``: the pool's :class:`~hf_select.compare.budget.TokenCounts`,
    or None). ``measure`` times the model (a few seconds) for the minutes; a failed timing leaves them out."""
    from .config import RECIPES, run_seeds
    from .steps import method_needs

    n = len(pool)
    per_row = counts.total / n if counts is not None and n else 0.0
    notes: list[str] = []
    fine_tunes: list[tuple[str, int, int]] = []
    if config.train:
        for method in config.methods:
            for seed in run_seeds(config, method):
                label = method if seed is None else f"{method} (seed {seed})"
                if method == "full":
                    rows, tokens = n, counts.total if counts is not None else 0
                elif config.budget_tokens is not None:
                    rows = int(round(config.budget_tokens / per_row)) if per_row else k
                    tokens = config.budget_tokens
                else:
                    rows, tokens = k, int(round(k * per_row))
                fine_tunes.append((label, rows, tokens))
                if method in RECIPES:
                    notes.append(f"{method} trains extra models of its own (seed or pre-experienced) not counted here")
    eval_tokens = 0
    if config.train:
        try:
            eval_tokens = eval_token_total(specs, config.model_name_or_path, max_length=config.eval_max_length,
                                           questions=config.eval_questions, limit=config.eval_limit)
        except Exception as err:  # the plan is a forecast: never stop a run over it
            notes.append(f"eval tokens not counted ({type(err).__name__}: {err})")
    step_methods = [m for m in config.methods if m not in RECIPES and m not in
                    ("random", "longest", "random_per_source", "longest_per_source", "full")]
    needs: set[str] = set()
    for m in step_methods:
        try:
            needs |= method_needs(m, config.step_methods)
        except Exception:  # noqa: BLE001 - an unknown method fails later, with its own error
            continue
    try:
        prompt = prompt_tokens_per_row(pool, config.model_name_or_path)
    except Exception as err:  # noqa: BLE001
        notes.append(f"prompt tokens not counted ({type(err).__name__})")
        prompt = 0.0
    row_tokens = prompt + per_row
    score_tokens = n * row_tokens * sum(SCORE_PASSES.get(need, 1.0) for need in needs)
    rates: dict[str, float] = {}
    if measure and (fine_tunes or score_tokens):
        try:
            from ..training import resolve_precision

            rates = measure_rates(config.model_name_or_path, batch_size=config.per_device_train_batch_size,
                                  length=min(config.max_length, 256), precision=resolve_precision(config.precision))
        except Exception as err:  # noqa: BLE001
            notes.append(f"no timing ({type(err).__name__}: {err})")
    return Plan(fine_tunes=fine_tunes, train_tokens_per_row=row_tokens, epochs=float(config.num_train_epochs),
                eval_tokens=eval_tokens, score_tokens=score_tokens, rates=rates, notes=sorted(set(notes)))
