"""``transformers.TrainerCallback`` s for training on a selected subset.

- :class:`SelectionProvenanceCallback`: how the training rows were chosen, in the logs, in
  ``selection_provenance.json`` beside the checkpoints and as a section of the trainer's model card (README.md).
- :class:`ProbeEvalCallback`: at each evaluation, the IFD and the conditioned loss of a small probe set (a
  held-out signal of how the model's instruction following moves), added to the eval metrics and the log history.
- :class:`PerRowLossCallback` with :class:`RowIdCollator`: the training loss of every row each time it is seen,
  recorded by its ``_row_id`` (an index into the dataset the rows came from), e.g. as a necessity signal.

Each callback checks its arguments when built and logs only on the main process.

Publishing a model trained by your own code with the selection's provenance: push the subset first
(:meth:`hf_select.selection.SelectionResult.push_to_hub`, private by default), give its id to the callback, and after
training write the trainer's card (TRL's ``create_model_card(dataset_name=...)`` puts the subset under ``datasets:``
in its metadata), add the selection section with :meth:`SelectionProvenanceCallback.update_model_card` and upload the
folder in one commit. ``trainer.push_to_hub()`` alone would write the trainer's card again without the section;
``selection_provenance.json`` (the steps and row ids) goes with either::

    result = SelectionResult.load("chosen/")                      # the folder `hf-select select` wrote
    result.push_to_hub("me/alpaca-top10")                         # the subset, its card, private
    callback = SelectionProvenanceCallback(result, method="selection", dataset_link="me/alpaca-top10")
    trainer = SFTTrainer(model, train_dataset=result.dataset, args=config, callbacks=[callback])
    trainer.train()
    trainer.save_model()
    trainer.create_model_card(dataset_name="me/alpaca-top10")     # README.md with `datasets: [me/alpaca-top10]`
    callback.update_model_card(trainer.args.output_dir)           # + "Data selection (hf-select)"
    api = HfApi()
    api.create_repo("me/smollm2-top10", private=True, exist_ok=True)
    api.upload_folder(folder_path=trainer.args.output_dir, repo_id="me/smollm2-top10",
                      ignore_patterns=["checkpoint-*", "_*"])

Example:
    >>> from hf_select.callbacks import SelectionProvenanceCallback
    >>> cb = SelectionProvenanceCallback([{"step": "ifd_rule", "params": {"fraction": 0.1}, "rows_in": 100,
    ...                                    "rows_out": 10, "dropped": {"ifd>=1": 5}}], method="superfiltering")
    >>> print(cb.card_section().splitlines()[0])
    ## Data selection (hf-select)
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .columns import ROW_ID

logger = logging.getLogger(__name__)

CARD_MARKER = "<!-- hf-select:selection -->"


def _provenance_list(selection: Any) -> list[dict[str, Any]]:
    """Provenance steps from a SelectionResult, its ``to_dict()``, or a list of step dicts."""
    if hasattr(selection, "provenance"):
        steps = selection.provenance
    elif isinstance(selection, Mapping):
        steps = selection.get("provenance", selection.get("steps"))
    else:
        steps = selection
    if not isinstance(steps, Sequence) or isinstance(steps, (str, bytes)):
        raise TypeError(
            "SelectionProvenanceCallback needs a SelectionResult, its to_dict(), or a list of provenance dicts "
            f"(step, params, rows_in, rows_out, dropped); got {type(selection).__name__}"
        )
    steps = list(steps)
    for i, s in enumerate(steps):
        if not isinstance(s, Mapping) or "step" not in s:
            raise ValueError(f"SelectionProvenanceCallback: provenance entry {i} has no 'step' key: {s!r}")
    return [dict(s) for s in steps]


class SelectionProvenanceCallback(TrainerCallback):
    """Puts the selection provenance into the logs, ``<output_dir>/selection_provenance.json`` and the model card.

    Args:
        selection: a ``SelectionResult``, its ``to_dict()``, or the list of provenance steps.
        method: the selection method's name (``mods``, ``cherry``, ``superfiltering``, ``instruct_mining``, ...).
        dataset_link: where the selected subset lives (Hub dataset id or local folder), linked from the card.

    Example:
        >>> cb = SelectionProvenanceCallback([{"step": "random", "params": {"count": 5}, "rows_in": 9, "rows_out": 5}])
        >>> cb.rows_out
        5
    """

    def __init__(self, selection: Any, *, method: str | None = None, dataset_link: str | None = None):
        self.steps = _provenance_list(selection)
        self.method = method
        self.dataset_link = dataset_link
        row_ids = getattr(selection, "row_ids", None)
        if row_ids is None and isinstance(selection, Mapping):
            row_ids = selection.get("row_ids")
        self.row_ids = [int(r) for r in row_ids] if row_ids is not None else None

    @property
    def card_tags(self) -> list[str]:
        """Tags for the trainer's model card."""
        return ["hf-select"] + ([self.method] if self.method else [])

    @property
    def rows_in(self) -> int | None:
        return self.steps[0].get("rows_in") if self.steps else None

    @property
    def rows_out(self) -> int | None:
        return self.steps[-1].get("rows_out") if self.steps else None

    def summary(self) -> str:
        """One line: method, rows in -> rows out, and the steps."""
        chain = " -> ".join(f"{s['step']}({s.get('rows_in', '?')}->{s.get('rows_out', '?')})" for s in self.steps)
        return f"selection[{self.method or 'custom'}]: {self.rows_in} -> {self.rows_out} rows: {chain}"

    def card_section(self) -> str:
        """Markdown section for the model card."""
        lines = ["## Data selection (hf-select)", "", CARD_MARKER, ""]
        if self.method:
            lines.append(f"Method: **{self.method}**.")
        if self.dataset_link:
            lines.append(f"Selected subset: {self.dataset_link}")
        lines += ["", f"Rows: {self.rows_in} -> {self.rows_out}.", "", "| step | parameters | rows in | rows out | "
                  "dropped |", "|---|---|---|---|---|"]
        for s in self.steps:
            params = json.dumps(s.get("params", {}), sort_keys=True, default=str)
            dropped = ", ".join(f"{k}: {v}" for k, v in (s.get("dropped") or {}).items()) or "-"
            rows = f"{s.get('rows_in', '')} | {s.get('rows_out', '')}"
            lines.append(f"| {s['step']} | `{params}` | {rows} | {dropped} |")
        return "\n".join(lines) + "\n"

    def _payload(self) -> dict[str, Any]:
        return {"method": self.method, "dataset": self.dataset_link, "provenance": self.steps,
                "row_ids": self.row_ids}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is not None and hasattr(model, "add_model_tags"):
            model.add_model_tags(self.card_tags)
        if state.is_world_process_zero:
            logger.info(self.summary())
            state.log_history.append({"selection_rows_in": self.rows_in, "selection_rows_out": self.rows_out,
                                      "step": state.global_step})

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.write(args.output_dir)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.write(args.output_dir)

    def write(self, folder: str | os.PathLike) -> Path:
        """Write ``selection_provenance.json`` into ``folder``."""
        path = Path(folder) / "selection_provenance.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self._payload(), indent=2, default=str))
        return path

    def update_model_card(self, folder: str | os.PathLike) -> Path | None:
        """Append (or replace) the selection section of ``folder/README.md`` (the trainer's model card)."""
        readme = Path(folder) / "README.md"
        if not readme.is_file():
            return None
        text = readme.read_text(encoding="utf-8")
        head = "## Data selection (hf-select)"
        if head in text:
            text = text[: text.index(head)].rstrip() + "\n"
        readme.write_text(text.rstrip() + "\n\n" + self.card_section(), encoding="utf-8")
        self.write(folder)
        return readme


class ProbeEvalCallback(TrainerCallback):
    """At each evaluation, score a small held-out probe set with the model being trained: mean IFD, mean conditioned
    loss (held-out completion loss) and the share of rows with IFD >= 1, as ``probe_ifd``, ``probe_loss`` and
    ``probe_ifd_ge1`` in the eval metrics and the log history. Runs on the main process only.

    Args:
        probe_dataset: rows in any supported format (a few dozen is plenty).
        template: prompt template for IFD (``auto``: the tokenizer's chat template).
        max_length: tokens per probe row.
        prefix: metric name prefix.

    Example:
        >>> from datasets import Dataset
        >>> probe = Dataset.from_list([{"instruction": "Add 2 and 3.", "input": "", "output": "5"}])
        >>> ProbeEvalCallback(probe).prefix
        'probe'
    """

    def __init__(self, probe_dataset: Any, *, template: str = "auto", max_length: int = 512, prefix: str = "probe"):
        from .formats import detect_format
        from .scoring.ifd import IFDConfig

        if probe_dataset is None or len(probe_dataset) == 0:
            raise ValueError("ProbeEvalCallback: probe_dataset is empty; pass a few held-out rows")
        detect_format(probe_dataset.column_names)  # raises a DatasetFormatError naming the expected columns
        if not prefix or not prefix.replace("_", "").isalnum():
            raise ValueError(f"ProbeEvalCallback: prefix must be a plain name, got {prefix!r}")
        self.config = IFDConfig(template=template, max_length=max_length)  # validates template and max_length
        self.probe = probe_dataset
        self.prefix = prefix
        self.history: list[dict[str, float]] = []

    def compute(self, model: Any, tokenizer: Any) -> dict[str, float]:
        """Score the probe set with ``model`` now; returns the metrics."""
        import numpy as np

        from .scoring.ifd import IFDScorer

        was_training = model.training
        model.eval()
        try:
            scorer = IFDScorer(self.config).set_model(model, tokenizer)
            out = scorer(self.probe[:])
        finally:
            model.train(was_training)
        ifd = np.asarray(out["ifd"], dtype=float)
        loss = np.asarray(out["loss_conditioned"], dtype=float)
        ok = np.isfinite(ifd)
        return {
            f"{self.prefix}_ifd": float(np.mean(ifd[ok])) if ok.any() else math.nan,
            f"{self.prefix}_loss": float(np.mean(loss[ok])) if ok.any() else math.nan,
            f"{self.prefix}_ifd_ge1": float(np.mean(ifd[ok] >= 1)) if ok.any() else math.nan,
            f"{self.prefix}_rows": int(ok.sum()),
        }

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    model: Any = None, processing_class: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or model is None:
            return
        tokenizer = processing_class if processing_class is not None else kwargs.get("tokenizer")
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
        values = self.compute(model, tokenizer)
        self.history.append({"step": state.global_step, **values})
        state.log_history.append({**{f"eval_{k}": v for k, v in values.items()}, "step": state.global_step})
        if metrics is not None:
            metrics.update({f"eval_{k}": v for k, v in values.items()})
        logger.info("step %d: %s", state.global_step, ", ".join(f"{k}={v:.4g}" for k, v in values.items()))


class RowIdCollator:
    """Wraps a collator so that each batch also carries ``_row_id`` (a LongTensor, one per sequence).

    The wrapped collator sees only the tokenised columns (``input_ids``, ``labels``, ...); the model never sees
    ``_row_id``: :class:`PerRowLossCallback` takes it out of the forward call. Needs the trainer's
    ``remove_unused_columns=False`` (so ``_row_id`` reaches the collator) and no packing.

    Example:
        >>> collate = RowIdCollator(lambda rows: {"n": len(rows)})
        >>> collate([{"input_ids": [1], "_row_id": 7}])["_row_id"].tolist()
        [7]
    """

    KEEP = ("input_ids", "labels", "attention_mask", "seq_lengths", "completion_mask", "assistant_masks",
            "position_ids")

    def __init__(self, collator: Any):
        if not callable(collator):
            raise TypeError(f"RowIdCollator wraps a callable collator, got {type(collator).__name__}")
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if not examples or ROW_ID not in examples[0]:
            raise KeyError(
                f"RowIdCollator: the batch has no {ROW_ID!r} column; add it (hf_select.training.to_prompt_completion "
                "does) and set the trainer's remove_unused_columns=False"
            )
        ids = torch.tensor([int(e[ROW_ID]) for e in examples], dtype=torch.long)
        batch = self.collator([{k: v for k, v in e.items() if k in self.KEEP} for e in examples])
        batch[ROW_ID] = ids
        return batch


class PerRowLossCallback(TrainerCallback):
    """Records the training loss of every row, each time it is seen, by its ``_row_id``.

    On train begin it hooks the model: a forward pre-hook takes ``_row_id`` out of the forward call (put there by
    :class:`RowIdCollator`) and a forward hook turns the output into one mean token loss per sequence (from TRL's
    fused ``log_probs``/``label_mask``, or from ``logits`` and ``labels``). Only forward passes in training mode are
    recorded. At train end the records of all processes are gathered; the main process writes
    ``<output_dir>/row_losses.json`` when ``save`` is set.

    Args:
        save: write ``row_losses.json`` into the trainer's output_dir at the end.

    Example:
        >>> cb = PerRowLossCallback()
        >>> cb.records
        []
    """

    def __init__(self, *, save: bool = True):
        if not isinstance(save, bool):
            raise TypeError(f"PerRowLossCallback: save must be a bool, got {type(save).__name__}")
        self.save = save
        self.records: list[tuple[int, int, float, int]] = []  # (global step, row id, mean loss, tokens)
        self._handles: list[Any] = []
        self._pending: Any = None
        self._labels: Any = None
        self._step = 0

    # -- hooks -----------------------------------------------------------------------------------------------------
    def _pre_hook(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        self._pending = kwargs.pop(ROW_ID, None)
        self._labels = kwargs.get("labels")
        return args, kwargs

    def _hook(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        import torch

        ids, self._pending = self._pending, None
        if ids is None or not module.training:
            return
        with torch.no_grad():
            log_probs = getattr(output, "log_probs", None)
            mask = getattr(output, "label_mask", None)
            if log_probs is not None and mask is not None:
                if log_probs.shape[0] != ids.shape[0]:
                    return  # packed / padding-free batches have no per-row sequences
                tokens = mask.sum(-1)
                losses = -(log_probs.detach().float() * mask).sum(-1) / tokens.clamp(min=1)
            else:
                logits = getattr(output, "logits", None)
                labels = kwargs.get("labels", self._labels)
                if logits is None or labels is None or logits.shape[0] != ids.shape[0]:
                    return
                shift_logits = logits[:, :-1].detach().float()
                shift_labels = labels[:, 1:].to(shift_logits.device)
                per_tok = torch.nn.functional.cross_entropy(
                    shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100,
                    reduction="none",
                ).view(shift_labels.shape)
                mask = shift_labels != -100
                tokens = mask.sum(-1)
                losses = (per_tok * mask).sum(-1) / tokens.clamp(min=1)
        for rid, loss, n in zip(ids.tolist(), losses.tolist(), tokens.tolist(), strict=True):
            if n > 0:
                self.records.append((self._step, int(rid), float(loss), int(n)))

    # -- events ------------------------------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is None:
            raise ValueError("PerRowLossCallback needs the model at train begin")
        if getattr(args, "remove_unused_columns", False):
            logger.warning("PerRowLossCallback: remove_unused_columns=True drops `_row_id`; nothing will be recorded")
        self.remove_hooks()
        self._handles = [
            model.register_forward_pre_hook(self._pre_hook, with_kwargs=True),
            model.register_forward_hook(self._hook, with_kwargs=True),
        ]

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step = state.global_step

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.remove_hooks()
        self.records = self._gather(self.records)
        if state.is_world_process_zero:
            logger.info("PerRowLossCallback: %d row losses over %d rows", len(self.records), len(self.mean_losses()))
            if self.save:
                path = Path(args.output_dir) / "row_losses.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"records": self.records, "mean": self.mean_losses()}))

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @staticmethod
    def _gather(records: list[Any]) -> list[Any]:
        try:
            import torch.distributed as dist
        except ImportError:  # pragma: no cover
            return records
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return records
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, records)
        return sorted(r for part in parts for r in part)

    def mean_losses(self) -> dict[int, float]:
        """Mean recorded loss per row id (over epochs)."""
        sums: dict[int, list[float]] = {}
        for _, rid, loss, _ in self.records:
            sums.setdefault(rid, []).append(loss)
        return {rid: sum(v) / len(v) for rid, v in sorted(sums.items())}

    def last_losses(self) -> dict[int, float]:
        """The last recorded loss per row id."""
        out: dict[int, float] = {}
        for _, rid, loss, _ in sorted(self.records):
            out[rid] = loss
        return out
