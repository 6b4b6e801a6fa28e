"""Held-out completion loss as an ``evaluate`` metric: :func:`hf_select.heldout.heldout_loss` over the rows given to
``compute``. Load it from the installed package, offline: ``evaluate.load(str(hf_select.metrics.HELDOUT_LOSS))``.

Inputs: ``instruction`` and ``output`` (one prompt and its response per row, rendered with the model's chat
template as TRL's ``SFTTrainer`` renders them for training). Keyword arguments of ``compute``: ``model`` (a folder or
Hub id, or a loaded model together with ``tokenizer``; required), and ``max_length``, ``precision``,
``max_tokens_per_batch``, ``max_batch_size``, ``chat_template_path`` as :func:`~hf_select.heldout.heldout_loss` takes
them. The result: ``heldout_loss`` (the summed loss of the completion tokens over the tokens scored),
``row_mean_loss``, ``rows_scored``, ``tokens_scored``, ``rows_truncated`` and ``unscored`` (reason -> rows not
scored).

Example:
    >>> from hf_select.testing import make_tiny_lm
    >>> model, tok = make_tiny_lm()
    >>> metric = HeldoutLoss(keep_in_memory=True)  # what evaluate.load(path) returns, without a cache file
    >>> out = metric.compute(instruction=["Add 2 and 3.", "Say hi."], output=["5", "Hi!"], model=model, tokenizer=tok,
    ...                      max_length=64)
    >>> out["rows_scored"], out["heldout_loss"] > 0, out["unscored"]
    (2, True, {})
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

from hf_select.errors import HFSelectError
from hf_select.heldout import heldout_loss

_DESCRIPTION = """The held-out completion loss of a causal LM: every response token's cross-entropy given its prompt,
summed over the rows and divided by the tokens scored (hf_select.heldout.heldout_loss). A response that does not fit
in max_length is scored on the tokens that fit; rows that cannot be scored are counted by reason."""

_KWARGS_DESCRIPTION = """
Args:
    instruction (list of str): the prompts.
    output (list of str): the responses scored.
    model (str or a loaded model): a folder or Hub id, or a loaded causal LM given with `tokenizer`.
    tokenizer: the loaded model's tokenizer (only with a loaded model).
    max_length (int): most tokens per row (prompt + response), default 2048, lowered to the model's limit.
    precision (str): auto, fp32, bf16 or fp16 for a model loaded from a path; default auto.
    max_tokens_per_batch (int): tokens per forward pass (default: 32768 on a GPU, 1024 on a CPU).
    max_batch_size (int): rows per forward pass, default 64.
    chat_template_path (str): a .jinja file or a tokenizer folder to take the chat template from.
Returns:
    heldout_loss (float), row_mean_loss (float), rows_scored (int), tokens_scored (int), rows_truncated (int),
    unscored (dict: reason -> rows not scored).
Examples:
    >>> metric = evaluate.load(str(hf_select.metrics.HELDOUT_LOSS))
    >>> metric.compute(instruction=["Add 2 and 3."], output=["5"], model="runs/quickstart-cpu/model")["heldout_loss"]
"""

_OPTIONS = ("max_length", "precision", "max_tokens_per_batch", "max_batch_size", "chat_template_path")


class HeldoutLoss(evaluate.Metric):
    """The held-out completion loss of :func:`hf_select.heldout.heldout_loss` as an ``evaluate.Metric``."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"instruction": datasets.Value("string"), "output": datasets.Value("string")}),
        )

    def _compute(self, instruction: list[str], output: list[str], model: Any = None, tokenizer: Any = None,
                 **options: Any) -> dict[str, Any]:
        if model is None:
            raise HFSelectError("heldout_loss metric: pass the model to compute: compute(instruction=..., "
                                "output=..., model=FOLDER_OR_HUB_ID), or a loaded model with tokenizer=...")
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise HFSelectError(f"heldout_loss metric: unknown options {unknown}; it takes model, tokenizer and "
                                f"{', '.join(_OPTIONS)}")
        rows = datasets.Dataset.from_dict({"instruction": list(instruction), "input": [""] * len(instruction),
                                           "output": list(output)})
        result = heldout_loss(model, rows, tokenizer=tokenizer, name="the rows given to the heldout_loss metric",
                              **options)
        return {"heldout_loss": result.loss, "row_mean_loss": result.row_mean_loss,
                "rows_scored": result.rows_scored, "tokens_scored": result.tokens_scored,
                "rows_truncated": result.rows_truncated,
                "unscored": {reason: len(where) for reason, where in result.unscored.items()}}
