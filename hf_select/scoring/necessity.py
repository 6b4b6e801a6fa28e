"""MoDS necessity as a batched ``Dataset.map``: a seed model answers every prompt, and the quality backend scores
that answer.

The seed model (in MoDS: the base model fine-tuned on the coverage seed set) writes its own answer to each row's
prompt: batched generation with left padding, greedy by default, up to ``max_new_tokens``, stopping at EOS (the
tokenizer's EOS and every EOS id of the model's generation config). The answer is then scored with a
:class:`~hf_select.scoring.quality.QualityScorer` (MoDS: the reward model) on the pair (question, generated
answer). A *low* ``necessity`` means the seed model answers the row badly, so the row is *needed*: MoDS keeps rows
whose necessity is below a threshold.

Columns: ``generated_response`` (the decoded answer, special tokens removed, stripped), ``generated_tokens``
(tokens generated before EOS), ``necessity`` (the quality score of the generated answer) and ``necessity_status``:

- ``ok``;
- ``no_eos``: generation hit ``max_new_tokens`` (or the model's position limit: a prompt of ``p`` tokens gets at
  most ``limit - p`` new tokens) without EOS; the cut answer is still scored, but flagged (a seed model that
  rambles is itself a sign that the row is needed);
- ``empty_generation``: the model wrote EOS at once; the empty answer is still scored (it is a bad answer, and a
  NaN would silently drop the row from a ``necessity < threshold`` selection);
- ``truncated``: the (question, generated answer) pair was cut to fit the quality model (see ``quality.py``);
- ``prompt_too_long``: the prompt alone exceeds ``max_length`` or fills the model's position limit
  (``max_position_embeddings``, the tokenizer's ``model_max_length``): nothing is generated, NaN;
- ``invalid_row``, ``unknown_role``, ``no_assistant_turn``, ``template_mismatch``, ``template_error``, ``oom``,
  ``non_finite``: NaN.

When several apply, the first of ``no_eos``, ``empty_generation``, ``truncated`` in that order is reported.

The prompt is rendered with ``template`` exactly as for IFD (``auto``: the tokenizer's chat template, else plain
text); use the template the seed model was fine-tuned with. Multi-turn rows are answered at their last assistant
turn, with the earlier turns as history.

Example:
    >>> from datasets import Dataset
    >>> from hf_select import NecessityConfig, NecessityScorer, QualityConfig
    >>> ds = Dataset.from_list([{"instruction": "Add 2 and 3.", "input": "", "output": "5"}])
    >>> cfg = NecessityConfig(model_name_or_path="./seed-model", quality=QualityConfig(backend="reward"))
    >>> ds = NecessityScorer(cfg).score(ds)  # doctest: +SKIP
    >>> ds[0]["generated_response"], ds[0]["necessity_status"]  # doctest: +SKIP
    ('2 + 3 = 5', 'ok')
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Features, Value

from ..formats import (
    TEMPLATES,
    RowError,
    assistant_turns,
    detect_format,
    last_user_text,
    prompt_text_for_generation,
    resolve_template,
    row_to_messages,
)
from ..models import DEFAULT_LM, load_causal_lm, model_identity
from .base import BaseScorer
from .batching import run_with_oom_retry, token_budget_batches
from .common import ROW_STATUSES, loaded_model_identity, model_limit
from .config import ScorerConfig, renamed_fields, shared
from .quality import QualityConfig, QualityScorer

logger = logging.getLogger(__name__)

GENERATION_BACKENDS = ("transformers", "vllm")
NECESSITY_STATUSES = (
    "ok",
    "no_eos",
    "empty_generation",
    "truncated",
    "prompt_too_long",
    *ROW_STATUSES,
)

# Statuses whose row has a finite ``necessity`` (the others are NaN).
NECESSITY_SCORED_STATUSES = ("ok", "no_eos", "empty_generation", "truncated")


@renamed_fields(max_prompt_length="max_length")
@dataclass
class NecessityConfig(ScorerConfig):
    """Configuration of :class:`NecessityScorer`: the seed (generator) model and the quality backend (the shared
    model and batching fields: :class:`ScorerConfig`; ``max_length`` is the longest prompt, formerly
    ``max_prompt_length``).

    ``quality`` may be given as a :class:`QualityConfig` or as a dict of its fields (as YAML gives it).

    Example:
        >>> cfg = NecessityConfig(quality={"backend": "reward", "model_name_or_path": "./rm"}, max_new_tokens=128)
        >>> cfg.quality.backend
        'reward'
    """

    model_name_or_path: str = shared("model_name_or_path", DEFAULT_LM,
                                     help="Seed model (Hub id or folder) that answers every prompt.")
    max_length: int = shared("max_length", 1024,
                             help="Longest prompt (tokens) to answer; longer rows get 'prompt_too_long'.")
    max_tokens_per_batch: int | None = shared(
        "max_tokens_per_batch", None,
        help="Generation token budget of one batch: rows x (longest prompt + max_new_tokens); default (None): 32768.",
    )
    quality: QualityConfig = field(
        default_factory=QualityConfig,
        metadata={"help": "Quality backend that scores the generated answers (a QualityConfig or a dict of its "
                          "fields); MoDS uses a reward model: {'backend': 'reward', 'model_name_or_path': ...}."},
    )
    template: str = field(
        default="auto",
        metadata={"help": f"Prompt template, one of {TEMPLATES}; 'auto' = the tokenizer's chat template, else "
                          "'plain'. Use the template the seed model was fine-tuned with."},
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Most tokens generated per answer."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding (greedy by default)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (only with do_sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (only with do_sample)."})
    seed: int = field(default=0, metadata={"help": "Random seed for sampling."})
    backend: str = field(
        default="transformers",
        metadata={"help": f"Generation backend, one of {GENERATION_BACKENDS}; 'vllm' needs the optional vllm package "
                          "(pip install 'hf-select[vllm]')."},
    )

    # Generation: batching many rows pays on a CPU too, so the budget is not lowered there (the value before the rule).
    TOKEN_BUDGET = (32768, 32768)
    KEY_BUDGET = 32768
    KEY_NAMES = {"max_length": "max_prompt_length"}

    def __post_init__(self) -> None:
        if isinstance(self.quality, dict):
            try:
                self.quality = QualityConfig(**self.quality)
            except TypeError as err:
                raise ValueError(f"NecessityConfig.quality: {err}") from err
        if not isinstance(self.quality, QualityConfig):
            raise ValueError(
                "NecessityConfig.quality must be a QualityConfig or a dict of its fields, "
                f"got {type(self.quality).__name__}"
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"NecessityConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        super().__post_init__()
        if self.template not in TEMPLATES:
            raise ValueError(f"NecessityConfig.template must be one of {TEMPLATES}, got {self.template!r}")
        if self.backend not in GENERATION_BACKENDS:
            raise ValueError(f"NecessityConfig.backend must be one of {GENERATION_BACKENDS}, got {self.backend!r}")
        if self.temperature <= 0:
            raise ValueError(f"NecessityConfig.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"NecessityConfig.top_p must be in (0, 1], got {self.top_p}")

    def min_token_budget(self) -> tuple[int, str]:
        return self.max_length + self.max_new_tokens, "max_length + max_new_tokens"


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends an answer: the tokenizer's EOS and the model generation config's EOS id(s).

    Example:
        >>> from hf_select.testing import make_tiny_lm
        >>> model, tok = make_tiny_lm()
        >>> eos_token_ids(model, tok) == [tok.eos_token_id]
        True
    """
    ids: list[int] = []
    candidates: list[Any] = [tokenizer.eos_token_id]
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        candidates.append(gen.eos_token_id)
    for c in candidates:
        for i in c if isinstance(c, (list, tuple)) else [c]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


@torch.inference_mode()
def generate_answers(
    model: Any,
    prompts: list[list[int]],
    *,
    pad_token_id: int,
    eos_ids: list[int],
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> list[tuple[list[int], bool]]:
    """Answer a batch of tokenized prompts with ``model.generate`` (left padding).

    Returns, per prompt, the generated token ids before the first EOS and whether an EOS was written.

    Example:
        >>> from hf_select.testing import make_tiny_lm
        >>> model, tok = make_tiny_lm()
        >>> out = generate_answers(model, [[1, 20], [1, 21, 22]], pad_token_id=0, eos_ids=[2], max_new_tokens=4)
        >>> len(out), all(len(ids) <= 4 for ids, _ in out)
        (2, True)
    """
    if not eos_ids:
        raise ValueError("generation needs at least one EOS token id to stop at")
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.as_tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "eos_token_id": eos_ids,
                              "pad_token_id": pad_token_id}
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=None)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    new = out[:, width:].cpu().tolist()
    eos = set(eos_ids)
    results = []
    for row in new:
        stop = next((j for j, t in enumerate(row) if t in eos), None)
        results.append((row, False) if stop is None else (row[:stop], True))
    return results


class NecessityScorer(BaseScorer):
    """Adds ``generated_response``, ``generated_tokens``, ``necessity`` and ``necessity_status``
    (see the module docstring).

    Example:
        >>> scorer = NecessityScorer(NecessityConfig(model_name_or_path="./seed", max_new_tokens=128))
        >>> scorer.set_model(seed_model, seed_tokenizer)  # doctest: +SKIP
        >>> ds = scorer.score(ds)  # doctest: +SKIP
    """

    name = "necessity"
    config_class = NecessityConfig
    features = Features({"generated_response": Value("string"), "generated_tokens": Value("int64"),
                         "necessity": Value("float64"), "necessity_status": Value("string")})

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.quality_scorer = QualityScorer(self.config.quality)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.quality_scorer = QualityScorer(self.config.quality)

    def model_ids(self) -> list[str]:
        cfg = self.config
        seed = self._loaded.get("identity") or model_identity(None, cfg.model_name_or_path, cfg.revision)
        return [seed, *self.quality_scorer.model_ids()]

    # -- models ------------------------------------------------------------------------------------------------------
    def load(self) -> tuple[Any, Any]:
        """Load (once) and return the seed model and tokenizer (transformers backend)."""
        if "model" not in self._loaded:
            cfg = self.config
            model, tok = load_causal_lm(cfg.model_name_or_path, **cfg.load_kwargs())
            self._loaded.update(model=model, tokenizer=tok)
        return self._loaded["model"], self._loaded["tokenizer"]

    def set_model(self, model: Any, tokenizer: Any) -> NecessityScorer:
        """Use an already loaded seed model and tokenizer (e.g. the seed model just fine-tuned in this process).

        The fingerprint then follows the in-memory weights. Only for the ``transformers`` backend.
        """
        if self.config.backend != "transformers":
            raise ValueError("NecessityScorer.set_model needs NecessityConfig.backend='transformers' (vLLM loads its "
                             "own model from model_name_or_path)")
        if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        self._loaded = {"model": model, "tokenizer": tokenizer, "identity": loaded_model_identity(model, tokenizer)}
        return self

    def set_quality_model(self, model: Any, tokenizer: Any) -> NecessityScorer:
        """Use an already loaded model for the quality backend (see :meth:`QualityScorer.set_model`)."""
        self.quality_scorer.set_model(model, tokenizer)
        return self

    def _tokenizer(self) -> Any:
        if self.config.backend == "vllm" and "tokenizer" not in self._loaded:
            from ..models import load_tokenizer

            self._loaded["tokenizer"] = load_tokenizer(self.config.model_name_or_path, revision=self.config.revision,
                                                       trust_remote_code=self.config.trust_remote_code)
        if self.config.backend == "vllm":
            return self._loaded["tokenizer"]
        return self.load()[1]

    # -- generation --------------------------------------------------------------------------------------------------
    def _position_limit(self, tokenizer: Any) -> int:
        """Most tokens (prompt + answer) the seed model takes: its positions and the tokenizer's limit."""
        cfg = self.config
        if cfg.backend == "transformers":
            return model_limit(self.load()[0], tokenizer, cfg.max_length + cfg.max_new_tokens)
        return model_limit(None, tokenizer, cfg.max_length + cfg.max_new_tokens)

    def _generate_transformers(self, prompts: list[list[int]], new_tokens: list[int], status: list[str],
                               rows: list[int]) -> list[tuple[list[int], bool] | None]:
        cfg = self.config
        model, tokenizer = self.load()
        eos = eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
        if cfg.do_sample:
            torch.manual_seed(cfg.seed)
        results: list[tuple[list[int], bool] | None] = [None] * len(prompts)
        lengths = [len(p) + n for p, n in zip(prompts, new_tokens, strict=True)]

        def run(idx: list[int]) -> list[tuple[list[int], bool]]:
            return generate_answers(model, [prompts[i] for i in idx], pad_token_id=pad, eos_ids=eos,
                                    max_new_tokens=new_tokens[idx[0]], do_sample=cfg.do_sample,
                                    temperature=cfg.temperature, top_p=cfg.top_p)

        def on_oom(idx: list[int]) -> list[None]:
            for i in idx:
                status[rows[i]] = "oom"
            return [None] * len(idx)

        for group in token_budget_batches(lengths, cfg.token_budget(model), cfg.max_batch_size):
            # Rows near the position limit get fewer new tokens: a batch holds rows with the same allowance only.
            subs: list[list[int]] = []
            for i in group:
                if subs and new_tokens[subs[-1][0]] == new_tokens[i]:
                    subs[-1].append(i)
                else:
                    subs.append([i])
            for idx, outs in (pair for sub in subs for pair in run_with_oom_retry(sub, run, on_oom)):
                for i, o in zip(idx, outs, strict=True):
                    results[i] = o
        return results

    def _generate_vllm(self, prompts: list[list[int]]) -> list[tuple[list[int], bool] | None]:
        if importlib.util.find_spec("vllm") is None:
            raise ImportError(
                "NecessityConfig.backend='vllm' needs the vllm package, which is not installed: "
                "pip install 'hf-select[vllm]' (or use backend='transformers')."
            )
        from vllm import LLM, SamplingParams

        from ..models import resolve_model_path

        cfg = self.config
        tokenizer = self._tokenizer()
        if "vllm" not in self._loaded:
            self._loaded["vllm"] = LLM(model=resolve_model_path(cfg.model_name_or_path, cfg.revision),
                                       revision=cfg.revision, dtype=cfg.dtype, seed=cfg.seed,
                                       trust_remote_code=cfg.trust_remote_code)
        llm = self._loaded["vllm"]
        # vLLM also stops at the EOS ids of the model's generation config by itself; finish_reason "stop" covers both.
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        params = SamplingParams(
            max_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature if cfg.do_sample else 0.0,
            top_p=cfg.top_p if cfg.do_sample else 1.0,
            seed=cfg.seed,
            stop_token_ids=eos,
        )
        outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        results: list[tuple[list[int], bool] | None] = []
        for out in outputs:
            comp = out.outputs[0]
            ids = list(comp.token_ids)
            while ids and ids[-1] in eos:
                ids.pop()
            results.append((ids, comp.finish_reason == "stop"))
        return results

    # -- scoring ------------------------------------------------------------------------------------------------------
    def _score_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        cfg = self.config
        n = len(next(iter(batch.values()))) if batch else 0
        tokenizer = self._tokenizer()
        template = resolve_template(cfg.template, tokenizer)
        fmt = detect_format(batch.keys(), cfg.column_mapping)
        keys = list(batch.keys())
        status = ["ok"] * n
        limit = self._position_limit(tokenizer)
        questions: dict[int, str] = {}
        prompts: list[list[int]] = []
        new_tokens: list[int] = []
        rows: list[int] = []
        for r in range(n):
            try:
                messages = row_to_messages({k: batch[k][r] for k in keys}, fmt, cfg.column_mapping)
                turn = assistant_turns(messages, "last")[0]
                text = prompt_text_for_generation(tokenizer, messages, turn, template)
            except RowError as err:
                status[r] = err.status
                continue
            except Exception as err:  # chat templates raise on role orders they do not support
                logger.debug("necessity: the template rejected row %d: %s", r, err)
                status[r] = "template_error"
                continue
            ids = list(tokenizer(text, add_special_tokens=template != "chat")["input_ids"])
            if len(ids) > cfg.max_length or len(ids) >= limit:
                status[r] = "prompt_too_long"
                continue
            if not ids:
                status[r] = "invalid_row"
                continue
            questions[r] = last_user_text(messages, turn)
            prompts.append(ids)
            new_tokens.append(min(cfg.max_new_tokens, limit - len(ids)))
            rows.append(r)
        if cfg.backend == "vllm" and prompts:
            generated = self._generate_vllm(prompts)
        elif prompts:
            generated = self._generate_transformers(prompts, new_tokens, status, rows)
        else:
            generated = []
        responses: list[str | None] = [None] * n
        n_tokens = [0] * n
        scored_rows, q_list, a_list = [], [], []
        for r, out in zip(rows, generated, strict=True):
            if out is None:
                continue
            ids, hit_eos = out
            responses[r] = tokenizer.decode(ids, skip_special_tokens=True).strip()
            n_tokens[r] = len(ids)
            if not hit_eos:
                status[r] = "no_eos"
            elif not responses[r]:
                status[r] = "empty_generation"
            scored_rows.append(r)
            q_list.append(questions[r])
            a_list.append(responses[r])
        quality = self.quality_scorer.score_pairs(q_list, a_list, allow_empty=True)
        necessity = [math.nan] * n
        for r, s, st in zip(scored_rows, quality["score"], quality["status"], strict=True):
            if st in ("ok", "truncated"):
                necessity[r] = s
                if st == "truncated" and status[r] == "ok":
                    status[r] = "truncated"
            else:
                status[r] = st
        return {"generated_response": responses, "generated_tokens": n_tokens, "necessity": necessity,
                "necessity_status": status}


score_necessity = NecessityScorer()
"""A ready-made :class:`NecessityScorer` with the default config (SmolLM2-135M-Instruct answers, and judges, every
prompt; models loaded on first use)."""
