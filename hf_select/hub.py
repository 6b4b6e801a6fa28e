"""Dataset and model cards for a selected subset and the model trained on it, saved locally and pushed to the Hub.

The cards are rendered from the Jinja templates in ``model_cards/`` through ``huggingface_hub``'s
``DatasetCard.from_template`` / ``ModelCard.from_template`` (YAML metadata from ``DatasetCardData`` /
``ModelCardData``). A recipe's ``hub`` stage writes two folders that are exactly what gets pushed:

- ``hub/dataset/``: ``data/train.parquet`` (the subset, with ``_row_id``), ``row_ids.json`` (the exact row ids),
  ``selection.json`` (full provenance), ``plots/*.png`` (the report's plots) and ``README.md`` (the card);
- ``hub/model/``: the final model and tokenizer (hard links to the trained files) and ``README.md`` (the card);

plus ``hub/card_context.json``, from which :func:`push_outputs` re-renders both cards with the Hub ids before
pushing. Repositories are created private unless ``allow_public=True``. A token never appears in logs, cards or
errors (:func:`hf_select.errors.redact`).

Example:
    >>> from hf_select.hub import size_category
    >>> size_category(4000)
    '1K<n<10K'
    >>> push_outputs("runs/mods/hub", dataset_id="me/alpaca-mods-4k", model_id="me/smollm2-mods")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .card_text import (
    DATASET_PLACEHOLDER,
    METHOD_INTROS,
    MODEL_PLACEHOLDER,
    corrupted_shares,
    hub_safe,
    method_text,
    scorer_records,
)
from .errors import HFSelectError, redact, scrub

logger = logging.getLogger(__name__)

DATASET_TEMPLATE = "dataset_card.md.j2"
MODEL_TEMPLATE = "model_card.md.j2"
ROW_IDS_INLINE_MAX = 300
SUBSET_FILE = "data/train.parquet"  # config "default": the selected rows
POOL_CONFIG = "pool"
POOL_FILE = "pool/train.parquet"  # config "pool" (``--with-pool``): every pool row with its verdict
VERDICT_COLUMNS = ("selected", "drop_step", "drop_reason")
UNKNOWN_LICENSE_NAME = "same-as-source"  # license: other, when the source's licence could not be read
HELDOUT_METRIC = "heldout_loss"  # the model-index metric type of the held-out completion loss

METHODS = {name: intro for name, intro in METHOD_INTROS.items()}  # (title, introduction) per recipe method
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def templates_dir() -> Path:
    """Folder of the card templates: ``$HF_SELECT_CARD_TEMPLATES`` or the package's ``hf_select/model_cards/``
    (shipped in the wheel; ``model_cards/`` at the top of a checkout points there)."""
    env = os.environ.get("HF_SELECT_CARD_TEMPLATES")
    folder = Path(env) if env else Path(__file__).resolve().parent / "model_cards"
    if not (folder / DATASET_TEMPLATE).is_file() or not (folder / MODEL_TEMPLATE).is_file():
        raise HFSelectError(f"card templates {DATASET_TEMPLATE} / {MODEL_TEMPLATE} not found in {folder}; set "
                            "HF_SELECT_CARD_TEMPLATES to the folder that holds them (hf_select/model_cards/ in the "
                            "package).")
    return folder


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows.

    Example:
        >>> size_category(500)
        'n<1K'
    """
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "10M<n<100M"


def is_hub_id(name: str | None) -> bool:
    """True for ``owner/name`` strings that are not local paths.

    Example:
        >>> is_hub_id("tatsu-lab/alpaca"), is_hub_id("./data/x.json"), is_hub_id("/abs/path")
        (True, False, False)
    """
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")):
        return False
    return bool(_HUB_ID.match(name)) and not name.endswith((".json", ".jsonl", ".parquet"))


def _selection_parts(selection: Any) -> tuple[list[dict[str, Any]], list[int]]:
    if hasattr(selection, "provenance"):
        return [dict(s) for s in selection.provenance], [int(i) for i in selection.row_ids]
    if isinstance(selection, Mapping):
        steps = selection.get("provenance", selection.get("steps", []))
        return [dict(s) for s in steps], [int(i) for i in selection.get("row_ids", [])]
    raise TypeError(f"expected a SelectionResult or its to_dict(), got {type(selection).__name__}")


def _steps_for_card(provenance: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in provenance:
        dropped = dict(s.get("dropped") or {})
        out.append({
            "step": f"{s['stage']}: {s.get('step')}" if s.get("stage") else s.get("step"),
            "params_json": json.dumps(s.get("params", {}), sort_keys=True, default=str),
            "seed": s.get("seed"), "rows_in": s.get("rows_in"), "rows_out": s.get("rows_out"),
            "dropped_text": ", ".join(f"{k}: {v}" for k, v in dropped.items()) or "-", "dropped": dropped,
        })
    return out


def _score_summary(dataset: Any, columns: Sequence[str]) -> list[dict[str, Any]]:
    import numpy as np

    out = []
    for col in columns:
        if dataset is None or col not in dataset.column_names:
            continue
        try:
            arr = np.asarray(dataset[col], dtype=float)
        except (TypeError, ValueError):
            continue
        if arr.ndim != 1:
            continue
        ok = arr[np.isfinite(arr)]
        if len(ok):
            out.append({"column": col, "n": int(len(ok)), "min": float(ok.min()), "median": float(np.median(ok)),
                        "max": float(ok.max())})
    return out


def build_card_context(
    *,
    selection: Any,
    source: str,
    method: str,
    rows_in: int,
    base_model: str,
    training: Mapping[str, Any] | None = None,
    train_loss: float | None = None,
    eval_result: Mapping[str, Any] | None = None,
    stages: Sequence[Mapping[str, Any]] = (),
    scored: Any = None,
    score_columns: Sequence[str] = (),
    plots: Sequence[Mapping[str, str]] = (),
    source_split: str | None = None,
    license: str | None = None,
    reproduce: str = "",
    extra_models: Sequence[Mapping[str, str]] = (),
    pretty_name: str | None = None,
    source_revision: str | None = None,
    base_model_license: str | None = None,
    examples_md: str = "",
    has_model: bool = True,
    lookup: bool = True,
) -> dict[str, Any]:
    """Everything both cards need, as a JSON-friendly dict (saved as ``card_context.json``).

    The source's licence and revision (a Hub dataset) and the base model's licence are read from the Hub when they
    are not given and ``lookup`` is on and the Hub is reachable (:func:`hub_metadata`); the scorers' settings come
    from the scored columns' provenance (:func:`hf_select.card_text.scorer_records`).

    Example:
        >>> ctx = build_card_context(selection={"provenance": [{"step": "random", "params": {"k": 2}, "rows_in": 5,
        ...     "rows_out": 2}], "row_ids": [3, 1]}, source="demo", method="superfiltering", rows_in=5,
        ...     base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
        >>> ctx["rows_out"], ctx["row_ids"]
        (2, [3, 1])
    """
    from . import __version__

    provenance, row_ids = _selection_parts(selection)
    title, description, method_steps = method_text(method, provenance)
    dropped_total: dict[str, int] = {}
    dropped_rows = getattr(selection, "dropped", None)
    if dropped_rows is not None and "drop_reason" in getattr(dropped_rows, "column_names", ()):
        # each dropped source row once, with the reason of the step that dropped it last
        for reason in dropped_rows["drop_reason"]:
            dropped_total[reason] = dropped_total.get(reason, 0) + 1
    else:
        for s in provenance:
            for reason, count in (s.get("dropped") or {}).items():
                dropped_total[reason] = dropped_total.get(reason, 0) + int(count)
    stage_rows = []
    limit = None
    for st in stages:
        meta = {k: v for k, v in (st.get("meta") or {}).items() if isinstance(v, (int, float, str, bool))}
        if st["name"] == "data" and (st.get("params") or {}).get("limit"):
            limit = int(st["params"]["limit"])
        stage_rows.append({"name": st["name"], "params_json": json.dumps(st.get("params") or {}, sort_keys=True,
                                                                         default=str),
                           "meta_text": ", ".join(f"{k}={_fmt(v)}" for k, v in meta.items())})
    ev = dict(eval_result or {})
    adapter = adapter_summary(training)
    license_from = "given" if license else None
    if lookup and is_hub_id(source) and (license is None or source_revision is None):
        meta = hub_metadata(source, "dataset")
        if license is None and meta.get("license"):
            license, license_from = meta["license"], "the source dataset's card"
        source_revision = source_revision or meta.get("revision")
    if license is None and getattr(getattr(scored, "info", None), "license", None):
        license, license_from = scored.info.license, "the source's dataset metadata"
    if lookup and base_model_license is None and has_model and is_hub_id(base_model):
        base_model_license = hub_metadata(base_model, "model").get("license")
    name = source.split("/")[-1] if is_hub_id(source) else source.split(":")[0] if source.startswith("demo") \
        else Path(source).stem
    source_note = f"its first {rows_in} rows" if limit is not None else None
    return {
        "method": method, "method_title": title, "method_description": description, "method_steps": method_steps,
        "source": source, "source_note": source_note,
        "source_split": source_split, "rows_in": int(rows_in), "rows_out": len(row_ids), "row_ids": row_ids,
        "steps": _steps_for_card(provenance), "provenance": provenance, "dropped_total": dropped_total,
        "stages": stage_rows, "score_summary": _score_summary(scored, score_columns), "plots": list(plots),
        "base_model": base_model, "adapter": adapter,
        "training": {k: _fmt(v) for k, v in (training or {}).items()},
        "train_loss": train_loss, "eval": ev, "license": license, "reproduce": reproduce,
        "extra_models": list(extra_models), "hf_select_version": __version__,
        "corrupted": corrupted_shares(scored, getattr(selection, "dataset", None)),
        "pretty_name": pretty_name or f"{name} ({title}: {len(row_ids)} of {rows_in} rows)",
        "license_from": license_from, "source_revision": source_revision, "base_model_license": base_model_license,
        "scorers": _scorers_for_card(scored), "examples_md": examples_md, "has_model": has_model,
        "pool": None,
    }


def _scorers_for_card(scored: Any) -> list[dict[str, Any]]:
    """The scorers recorded in the scored columns' provenance, for the card's table."""
    return [{"scorer": r.get("scorer"), "columns": ", ".join(f"`{c}`" for c in r.get("columns") or []),
             "settings_json": json.dumps(r.get("config") or {}, sort_keys=True, default=str)}
            for r in scorer_records(scored)] if scored is not None else []


def hub_metadata(repo_id: str, repo_type: str = "dataset", *, token: str | None = None,
                 api: Any = None) -> dict[str, Any]:
    """``{"license": ..., "revision": ...}`` of a Hub repository, read from its card metadata and its current commit;
    ``{}`` (never an error) offline, for a repository that cannot be read, or for a local path.

    Example:
        >>> hub_metadata("data/local.json")
        {}
    """
    if not is_hub_id(repo_id):
        return {}
    from .models import hub_is_offline

    if api is None and hub_is_offline():
        return {}
    try:
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
        info = api.dataset_info(repo_id) if repo_type == "dataset" else api.model_info(repo_id)
    except Exception as err:  # not found, gated, no network: the card says it was not read
        logger.info("could not read the metadata of %s %s (%s)", repo_type, repo_id, type(err).__name__)
        return {}
    card = getattr(info, "card_data", None) or getattr(info, "cardData", None) or {}
    lic = card.get("license") if hasattr(card, "get") else getattr(card, "license", None)
    if isinstance(lic, (list, tuple)):
        lic = lic[0] if len(lic) == 1 else list(lic)
    out: dict[str, Any] = {}
    if lic:
        out["license"] = lic
    if getattr(info, "sha", None):
        out["revision"] = info.sha
    return out


def report_examples(report_dir: str | os.PathLike | None) -> str:
    """The "Example rows" markdown of a report folder (its ``report.json``'s ``summary.examples``), or ``""``.

    Example:
        >>> report_examples(None)
        ''
    """
    if report_dir is None:
        return ""
    meta = Path(report_dir) / "report.json"
    if not meta.is_file():
        return ""
    from .report_examples import examples_markdown

    try:
        groups = (json.loads(meta.read_text()).get("summary") or {}).get("examples") or []
        return examples_markdown(groups)
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""


def adapter_summary(training: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the model card says about a LoRA adapter (a training config with ``use_peft``), or None for a full
    fine-tune.

    Example:
        >>> adapter_summary({"use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": "all-linear"})
        {'kind': 'LoRA', 'r': 4, 'alpha': 8, 'target_modules': 'all-linear'}
        >>> adapter_summary({"use_peft": False}) is None
        True
    """
    training = training or {}
    if not training.get("use_peft"):
        return None
    modules = training.get("lora_target_modules")
    return {"kind": "QLoRA (4-bit base)" if training.get("load_in_4bit") else "LoRA", "r": training.get("lora_r"),
            "alpha": training.get("lora_alpha"),
            "target_modules": ", ".join(modules) if isinstance(modules, (list, tuple)) else modules or
            "peft's default for the architecture"}


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.6g}") if math.isfinite(v) else str(v)
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, default=str)
    return v


def _hub_url(repo_id: str | None, repo_type: str) -> str | None:
    if not repo_id or not is_hub_id(repo_id):
        return None
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"https://huggingface.co/{prefix}{repo_id}"


def _link(repo_id: str | None, repo_type: str, placeholder: str, flag: str) -> dict[str, Any]:
    """How a card names the other repository: its Hub id and URL when known, else a placeholder that ``hf-select
    push`` fills in (the push re-renders both cards with the ids)."""
    if repo_id and repo_id.startswith("https://huggingface.co/"):
        repo_id = repo_id.removeprefix("https://huggingface.co/").removeprefix("datasets/")
    url = _hub_url(repo_id, repo_type)
    if url:
        return {"id": repo_id, "url": url, "placeholder": None}
    return {"id": placeholder, "url": None, "placeholder": f"`{placeholder}` (filled in by `hf-select push {flag}`)"}


def _safe_vars(context: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The template's variables with every local path replaced (:func:`hf_select.card_text.hub_safe`)."""
    safe = hub_safe({**_template_vars(context), **extra}, run_dir=context.get("run_dir"))
    if safe.get("reproduce"):  # a relative --output_dir is a local path too
        safe["reproduce"] = re.sub(r"--output_dir\s+\S+", "--output_dir OUTPUT_DIR", safe["reproduce"])
    return safe


def render_dataset_card(context: Mapping[str, Any], *, dataset_id: str | None = None,
                        model_link: str | None = None) -> Any:
    """A ``huggingface_hub.DatasetCard`` rendered from ``model_cards/dataset_card.md.j2``.

    ``model_link`` is the model's Hub id (or URL); without one the card names a placeholder that ``hf-select push``
    fills in. No local path ends up in the card.

    Example:
        >>> card = render_dataset_card(ctx)  # doctest: +SKIP
        >>> card.data.tags  # doctest: +SKIP
        ['hf-select', 'data-selection', 'superfiltering']
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    source = context["source"]
    lic = context.get("license")
    extra: dict[str, Any] = {} if lic else {"license_name": UNKNOWN_LICENSE_NAME}
    if not lic and _hub_url(source, "dataset"):
        extra["license_link"] = _hub_url(source, "dataset")
    data = DatasetCardData(
        license=lic or "other",
        pretty_name=hub_safe(context["pretty_name"], run_dir=context.get("run_dir")),
        size_categories=[size_category(context["rows_out"])],
        task_categories=["text-generation"],
        source_datasets=[source] if is_hub_id(source) else None,
        tags=["hf-select", "data-selection", context["method"]],
        configs=dataset_configs(with_pool=bool(context.get("pool"))),
        **extra,
    )
    row_ids = context["row_ids"]
    inline = ", ".join(map(str, row_ids)) if len(row_ids) <= ROW_IDS_INLINE_MAX else None
    card = DatasetCard.from_template(
        data, template_path=str(templates_dir() / DATASET_TEMPLATE),
        **_safe_vars(context, source_url=_hub_url(source, "dataset"),
                     model=_link(model_link, "model", MODEL_PLACEHOLDER, "--hub_model_id"),
                     row_ids_file="row_ids.json", row_ids_inline=inline, dataset_id=dataset_id,
                     source_is_hub=is_hub_id(source), subset_file=SUBSET_FILE, pool_file=POOL_FILE,
                     pool_config=POOL_CONFIG, unknown_license_name=UNKNOWN_LICENSE_NAME),
    )
    return card


def dataset_configs(*, with_pool: bool = False) -> list[dict[str, Any]]:
    """The dataset card's ``configs:``: ``default`` (the selected rows) and, with the pool, ``pool`` (every row with
    its verdict), so the Hub's viewer shows both.

    Example:
        >>> [c["config_name"] for c in dataset_configs(with_pool=True)]
        ['default', 'pool']
    """
    configs = [{"config_name": "default", "default": True,
                "data_files": [{"split": "train", "path": SUBSET_FILE}]}]
    if with_pool:
        configs.append({"config_name": POOL_CONFIG, "data_files": [{"split": "train", "path": POOL_FILE}]})
    return configs


def render_model_card(context: Mapping[str, Any], *, model_id: str | None = None,
                      dataset_link: str | None = None, local_path: str | None = None) -> Any:
    """A ``huggingface_hub.ModelCard`` rendered from ``model_cards/model_card.md.j2``.

    ``dataset_link`` is the selected subset's Hub id; without one (and for the "Use" snippet without ``model_id``)
    the card names a placeholder that ``hf-select push`` fills in. ``local_path`` is accepted for older callers and
    never written into the card.
    """
    from huggingface_hub import ModelCard, ModelCardData

    base = context["base_model"]
    dataset = _link(dataset_link, "dataset", DATASET_PLACEHOLDER, "--hub_dataset_id")
    model = _link(model_id, "model", MODEL_PLACEHOLDER, "--hub_model_id")
    ev = context.get("eval") or {}
    adapter = context.get("adapter")
    safe_base = hub_safe(base, run_dir=context.get("run_dir"))
    model_title = (model_id.split("/")[-1] if model["url"] and model_id
                   else f"{safe_base.split('/')[-1]} on {context['pretty_name']}")
    lic = context.get("base_model_license")
    lic = lic[0] if isinstance(lic, list) and lic else lic
    data = ModelCardData(
        base_model=base if is_hub_id(base) else None,
        datasets=[dataset["id"]] if dataset["url"] else None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation",
        tags=["hf-select", "data-selection", context["method"], "trl", "sft", *(["lora"] if adapter else [])],
        license=lic or None,
        model_name=model_title,
        eval_results=heldout_eval_results(ev, run_dir=context.get("run_dir")),
    )
    return ModelCard.from_template(
        data, template_path=str(templates_dir() / MODEL_TEMPLATE),
        **_safe_vars(context, model_title=model_title, base_model_url=_hub_url(base, "model"), dataset=dataset,
                     eval_loss=ev.get("loss"), eval_rows=ev.get("rows"), eval_dataset=ev.get("dataset"),
                     eval_loss_base=ev.get("loss_base"), eval_tokens=ev.get("tokens_scored"),
                     eval_max_length=ev.get("max_length"), eval_truncated=ev.get("rows_truncated"),
                     eval_unscored=ev.get("unscored") or {}, model_ref=model["id"], model_url=model["url"]),
    )


def heldout_eval_results(ev: Mapping[str, Any], *, run_dir: str | None = None) -> list[Any] | None:
    """The model card's ``model-index`` entry: the held-out completion loss (metric type ``heldout_loss``) on the
    eval set, or None when no evaluation ran.

    Example:
        >>> [(r.metric_type, r.metric_value, r.dataset_name) for r in heldout_eval_results(
        ...     {"loss": 1.5, "dataset": "/data/alpaca_eval.json", "rows": 805})]
        [('heldout_loss', 1.5, 'alpaca_eval.json')]
    """
    from huggingface_hub import EvalResult

    loss = ev.get("loss")
    if loss is None or not isinstance(loss, (int, float)) or not math.isfinite(loss):
        return None
    name = str(hub_safe(str(ev.get("dataset") or "held-out set"), run_dir=run_dir))
    hub_eval = is_hub_id(name)
    short = name if hub_eval else name.split("/")[-1]
    return [EvalResult(task_type="text-generation", task_name="Held-out completion loss",
                       dataset_type=name if hub_eval else "json", dataset_name=short,
                       metric_type=HELDOUT_METRIC, metric_name="Held-out loss (completion tokens, lower is better)",
                       metric_value=float(f"{float(loss):.6g}"))]


def _template_vars(context: Mapping[str, Any]) -> dict[str, Any]:
    # `license` and `tags` are card-data keys: keep the template's own names apart from them
    return {k: v for k, v in context.items() if k not in ("tags", "run_dir")}


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def save_dataset_folder(folder: str | os.PathLike, subset: Any, context: Mapping[str, Any], *,
                        plots_from: str | os.PathLike | None = None, selection: Any = None,
                        drop_columns: Sequence[str] = ("embedding",)) -> Path:
    """Write the Hub-ready dataset folder: ``data/train.parquet`` (the rows with their scores and ``_row_id``;
    without the bulky ``drop_columns``), ``row_ids.json``, ``selection.json``, ``plots/`` and ``README.md`` (the
    card). Returns the folder.

    ``plots_from`` is the report folder; the PNGs its ``report.json`` lists (or all PNGs in it) are copied.
    """
    out = Path(folder)
    (out / "data").mkdir(parents=True, exist_ok=True)
    gone = [c for c in drop_columns if c in subset.column_names]
    (subset.remove_columns(gone) if gone else subset).to_parquet(str(out / "data" / "train.parquet"))
    (out / "row_ids.json").write_text(json.dumps(context["row_ids"]))
    sel = selection.to_dict() if hasattr(selection, "to_dict") else {"steps": context["provenance"]}
    sel = {**sel, "row_ids": context["row_ids"]}
    (out / "selection.json").write_text(json.dumps(sel, indent=2, default=str))
    ctx = dict(context)
    if plots_from is not None:
        ctx["plots"] = copy_plots(plots_from, out / "plots")
    render_dataset_card(ctx).save(out / "README.md")
    return out


def copy_plots(report_dir: str | os.PathLike, target: str | os.PathLike) -> list[dict[str, str]]:
    """Copy a report's PNGs into ``target``; returns ``[{"title", "path"}]`` with paths relative to its parent."""
    report = Path(report_dir)
    listed: list[tuple[str, str | None]] = []
    meta = report / "report.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        for item in info.get("figures") or info.get("plots") or []:
            if isinstance(item, str):
                listed.append((item, None))
            elif isinstance(item, Mapping):
                listed.append((item.get("file") or item.get("path") or "", item.get("caption")))
    if not listed:
        listed = [(p.name, None) for p in sorted(report.glob("*.png"))]
    plots = []
    Path(target).mkdir(parents=True, exist_ok=True)
    for name, caption in listed:
        src = report / name if not Path(name).is_absolute() else Path(name)
        if not src.is_file() or src.suffix.lower() != ".png":
            continue
        shutil.copy2(src, Path(target) / src.name)
        plots.append({"title": caption or src.stem.replace("_", " "), "path": f"{Path(target).name}/{src.name}"})
    return plots


def save_model_folder(folder: str | os.PathLike, model_dir: str | os.PathLike, context: Mapping[str, Any], *,
                      model_id: str | None = None, dataset_link: str | None = None) -> Path:
    """Link the trained model's files into ``folder`` and write its card as ``README.md``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    skip = {"README.md", "training_args.bin", "row_losses.json", "stage.json"}
    for src in Path(model_dir).iterdir():
        if src.is_file() and src.name not in skip:
            _link_or_copy(src, out / src.name)
    render_model_card(context, model_id=model_id, dataset_link=dataset_link).save(out / "README.md")
    return out


def write_hub_folders(folder: str | os.PathLike, *, subset: Any, context: Mapping[str, Any], model_dir: str,
                      report_dir: str | None = None, selection: Any = None, dataset_id: str | None = None,
                      model_id: str | None = None) -> Path:
    """Write ``folder/dataset``, ``folder/model`` and ``folder/card_context.json`` (see the module docstring)."""
    out = Path(folder)
    ctx = scrub(json.loads(json.dumps(dict(context), default=str)))
    # the run's folder (``folder`` is ``<output_dir>/hub`` or its temporary ``.hub.tmp``): paths inside it read as
    # OUTPUT_DIR/... in the cards, like the Reproduce line's --output_dir
    ctx.setdefault("run_dir", str(out.resolve().parent))
    dataset_dir = out / "dataset"
    if report_dir is not None:
        ctx["plots"] = copy_plots(report_dir, dataset_dir / "plots")
        ctx["examples_md"] = ctx.get("examples_md") or report_examples(report_dir)
    save_dataset_folder(dataset_dir, subset, ctx, selection=selection)
    save_model_folder(out / "model", model_dir, ctx, model_id=model_id, dataset_link=dataset_id)
    # without Hub ids the cards name placeholders; push re-renders both with the ids
    render_dataset_card(ctx, dataset_id=dataset_id, model_link=model_id).save(dataset_dir / "README.md")
    (out / "card_context.json").write_text(json.dumps(ctx, indent=2, default=str))
    return out


def fill_dataset_link(path: str | os.PathLike, dataset_id: str) -> bool:
    """Put the Hub dataset id into a model folder's ``selection_provenance.json`` where it still names
    :data:`DATASET_PLACEHOLDER` (a recipe run without ``--hub_dataset_id``); returns whether it changed the file.

    Example:
        >>> import json, tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "selection_provenance.json"
        >>> _ = f.write_text(json.dumps({"dataset": DATASET_PLACEHOLDER}))
        >>> fill_dataset_link(f, "me/subset"), json.loads(f.read_text())["dataset"]
        (True, 'me/subset')
    """
    p = Path(path)
    if not p.is_file():
        return False
    data = json.loads(p.read_text())
    if data.get("dataset") != DATASET_PLACEHOLDER:
        return False
    data["dataset"] = dataset_id
    p.write_text(json.dumps(data, indent=2))
    return True


def push_outputs(folder: str | os.PathLike, *, dataset_id: str | None = None, model_id: str | None = None,
                 allow_public: bool = False, token: str | None = None) -> dict[str, str]:
    """Push ``folder/dataset`` and/or ``folder/model`` (written by :func:`write_hub_folders`) to the Hub.

    Both cards are re-rendered first with the Hub ids (so they link each other) and saved in the local copy too.
    Repositories are created private unless ``allow_public``; an existing public repository is refused without
    it. Returns ``{"dataset": url, "model": url}`` for what was pushed.

    Raises:
        HFSelectError: one line, naming the local copy, when there is no token, no network, or the push fails.
    """
    from huggingface_hub import HfApi, get_token

    from .models import hub_is_offline

    out = Path(folder)
    if (out / "hub" / "card_context.json").is_file():  # a recipe's output_dir
        out = out / "hub"
    ctx_path = out / "card_context.json"
    if not ctx_path.is_file():
        raise HFSelectError(f"{folder} holds no card_context.json: pass a recipe's output_dir or its hub/ folder.")
    if not dataset_id and not model_id:
        raise HFSelectError("nothing to push: pass a dataset id (--hub_dataset_id) and/or a model id "
                            "(--hub_model_id).")
    for repo_id in (dataset_id, model_id):
        if repo_id and not is_hub_id(repo_id):
            raise HFSelectError(f"{repo_id!r} is not a Hub repository id (expected 'owner/name').")
    where = f"The local copy is at {out.resolve()}."
    token = token or get_token()
    if not token:
        raise HFSelectError(f"no Hugging Face token (run `hf auth login` or set HF_TOKEN); nothing was pushed. "
                            f"{where}")
    if hub_is_offline():
        raise HFSelectError(f"the Hub is unreachable (or HF_HUB_OFFLINE=1); nothing was pushed. {where}")
    ctx = json.loads(ctx_path.read_text())
    if dataset_id:
        render_dataset_card(ctx, dataset_id=dataset_id, model_link=model_id).save(out / "dataset" / "README.md")
    if model_id:
        render_model_card(ctx, model_id=model_id, dataset_link=dataset_id).save(out / "model" / "README.md")
    if dataset_id:
        fill_dataset_link(out / "model" / "selection_provenance.json", dataset_id)
    api = HfApi(token=token)
    urls: dict[str, str] = {}
    for kind, repo_id, sub in (("dataset", dataset_id, "dataset"), ("model", model_id, "model")):
        if not repo_id:
            continue
        try:
            api.create_repo(repo_id, repo_type=kind, private=not allow_public, exist_ok=True)
            info = api.repo_info(repo_id, repo_type=kind)
            if not getattr(info, "private", True) and not allow_public:
                raise HFSelectError(f"{repo_id} exists and is public; pushing data there needs --allow_public.")
            api.upload_folder(folder_path=str(out / sub), repo_id=repo_id, repo_type=kind,
                              commit_message=f"hf-select: {ctx.get('method')} subset and cards")
        except HFSelectError as err:
            raise HFSelectError(f"{err} {where}") from None
        except Exception as err:  # network, auth, permissions: one line, token redacted
            raise HFSelectError(redact(f"pushing the {kind} to {repo_id} failed ({type(err).__name__}: "
                                       f"{str(err).splitlines()[0] if str(err) else 'no detail'}). {where}")) from None
        urls[kind] = _hub_url(repo_id, kind) or repo_id
        logger.info("pushed the %s to %s", kind, urls[kind])
    return urls


# -- any selection: a SelectionResult, made in Python or loaded from the folder `hf-select select` wrote -------------


def _arrow_rows(ds: Any, drop_columns: Sequence[str]) -> Any:
    table = ds.with_format("arrow")[:] if len(ds) else ds.data.table.slice(0, 0)
    gone = [c for c in drop_columns if c in table.column_names]
    return table.drop_columns(gone) if gone else table


def pool_with_verdicts(result: Any, pool: Any = None, *, label: str = "the selection",
                       drop_columns: Sequence[str] = ("embedding",)) -> Any:
    """Every pool row with its scores and its verdict, as a ``pyarrow.Table`` sorted by ``_row_id``: ``selected``
    (bool), ``drop_step`` (the step that dropped the row, null when selected), ``drop_step_index`` (that step's
    position, from 0) and ``drop_reason``.

    Without ``pool`` the rows are the selection's own (kept + dropped: every input row once, with every column the
    selection's input had). A ``pool`` (a Dataset or a path) must be the dataset the selection was made from: the
    same fingerprint (or, where none was recorded, the same number of rows and row ids).

    Raises:
        HFSelectError: a pool that no longer matches the selection.

    Example:
        >>> from datasets import Dataset
        >>> from hf_select.selection import select
        >>> result = select(Dataset.from_dict({"q": [0.1, 0.9, 0.5]}), [{"step": "top", "column": "q", "count": 1}])
        >>> table = pool_with_verdicts(result)
        >>> table.column("selected").to_pylist(), table.column("drop_reason").to_pylist()
        ([False, True, False], ['not_top', None, 'not_top'])
    """
    import numpy as np
    import pyarrow as pa

    from .columns import ROW_ID

    if pool is None:
        kept = _arrow_rows(result.dataset, drop_columns)
        n = kept.num_rows
        kept = (kept.append_column("selected", pa.array([True] * n, pa.bool_()))
                .append_column("drop_step", pa.nulls(n, pa.string()))
                .append_column("drop_step_index", pa.nulls(n, pa.int64()))
                .append_column("drop_reason", pa.nulls(n, pa.string())))
        dropped = _arrow_rows(result.dropped, drop_columns)
        dropped = dropped.append_column("selected", pa.array([False] * dropped.num_rows, pa.bool_()))
        order = kept.column_names
        table = pa.concat_tables([kept, dropped.select(order).cast(kept.schema)])
        return table.sort_by(ROW_ID)
    if isinstance(pool, (str, os.PathLike)):
        from .io import load_rows

        where = f"--with-pool {pool}"
        pool = load_rows(str(pool))
    else:
        where = "the pool"
    fix = (f"pass the scored dataset {label} was selected from, or leave the pool out to publish the selection's "
           "own rows (kept + dropped)")
    expected = getattr(result, "input_fingerprint", None)
    found = getattr(pool, "_fingerprint", None)
    if expected and found != expected:
        raise HFSelectError(f"{where}: not the dataset {label} was selected from (fingerprint {str(found)[:16]}, "
                            f"the selection's input {str(expected)[:16]}): its rows or scores changed since; {fix}.")
    if len(pool) != result.input_rows:
        raise HFSelectError(f"{where}: {len(pool)} rows, but {label} was selected from {result.input_rows}; {fix}.")
    ids = (np.asarray(pool.with_format(None)[ROW_ID], dtype=np.int64) if ROW_ID in pool.column_names
           else np.arange(len(pool), dtype=np.int64))
    verdict: dict[int, tuple[str | None, int | None, str | None]] = {i: (None, None, None) for i in result.row_ids}
    dropped = result.dropped.with_format(None)
    if len(dropped):
        for rid, step, idx, reason in zip(dropped[ROW_ID], dropped["drop_step"], dropped["drop_step_index"],
                                          dropped["drop_reason"], strict=True):
            verdict[int(rid)] = (step, int(idx), reason)
    unknown = [int(i) for i in ids if int(i) not in verdict]
    if unknown:
        raise HFSelectError(f"{where}: row id {unknown[0]} is neither selected nor dropped in {label} "
                            f"({len(unknown)} such rows); {fix}.")
    table = _arrow_rows(pool, drop_columns)
    if ROW_ID not in table.column_names:
        table = table.append_column(ROW_ID, pa.array(ids, pa.int64()))
    rows = [verdict[int(i)] for i in ids]
    table = (table.append_column("selected", pa.array([r[0] is None for r in rows], pa.bool_()))
             .append_column("drop_step", pa.array([r[0] for r in rows], pa.string()))
             .append_column("drop_step_index", pa.array([r[1] for r in rows], pa.int64()))
             .append_column("drop_reason", pa.array([r[2] for r in rows], pa.string())))
    return table.sort_by(ROW_ID)


def _selection_source(result: Any, source: str | None, split: str | None) -> tuple[str, str | None]:
    records = scorer_records(result.dataset)
    recorded = next((r for r in records if r.get("source")), {})
    return (source or recorded.get("source") or "the scored rows (source not recorded)",
            split if split is not None else recorded.get("split"))


def selection_card_context(result: Any, *, source: str | None = None, source_split: str | None = None,
                           source_revision: str | None = None, license: str | None = None,
                           report_dir: str | os.PathLike | None = None, plots: Sequence[Mapping[str, str]] = (),
                           lookup: bool = True) -> dict[str, Any]:
    """:func:`build_card_context` for a selection made outside a recipe: the steps, counts and drop reasons, the
    scorers' settings from the scored columns' provenance, the source (given, else the one ``hf-select score``
    recorded) with its licence and revision, and the report's example rows when ``report_dir`` is given."""
    import yaml

    src, split = _selection_source(result, source, source_split)
    columns = [c for c in result.dataset.column_names if c not in ("_row_id",)]
    score_columns = [c for r in scorer_records(result.dataset) for c in r.get("columns") or [] if c in columns]
    if not score_columns:  # scores made outside `hf-select score`: every float column
        score_columns = [c for c in columns if getattr(result.dataset.features[c], "dtype", None)
                         in ("float16", "float32", "float64")]
    pool = _pool_dataset(result)
    steps = [{"step": e["step"], **(e.get("params") or {})} for e in result.provenance]
    reproduce = ("# select.yaml (in this repository) holds the steps and the seed\n"
                 "hf-select select --dataset SCORED_ROWS --config select.yaml --output chosen/")
    ctx = build_card_context(
        selection=result, source=src, method="selection", rows_in=result.input_rows, base_model="",
        scored=pool, score_columns=score_columns, plots=plots, source_split=split, license=license,
        reproduce=reproduce, source_revision=source_revision, examples_md=report_examples(report_dir),
        has_model=False, lookup=lookup)
    ctx["select_yaml"] = yaml.safe_dump({"seed": result.seed, "steps": steps}, sort_keys=False)
    return ctx


def _pool_dataset(result: Any) -> Any:
    """Kept + dropped rows as one Dataset (for the score summary and the corrupted-rows count), scorer records
    kept."""
    from datasets import concatenate_datasets

    kept = result.dataset
    dropped = result.dropped
    extra = [c for c in dropped.column_names if c not in kept.column_names]
    try:
        pool = concatenate_datasets([kept, dropped.remove_columns(extra)]) if len(dropped) else kept
    except ValueError:  # features that do not line up: the kept rows alone
        return kept
    pool.info.description = kept.info.description
    return pool


def write_selection_folder(folder: str | os.PathLike, result: Any, context: Mapping[str, Any], *,
                           pool_table: Any = None, report_dir: str | os.PathLike | None = None,
                           dataset_id: str | None = None) -> Path:
    """The Hub-ready folder of a selection: ``data/train.parquet`` (config ``default``), with ``pool_table``
    ``pool/train.parquet`` (config ``pool``), ``row_ids.json``, ``selection.json``, ``select.yaml``, ``plots/``
    (from ``report_dir``) and ``README.md`` (the card). Returns the folder."""
    import pyarrow.parquet as pq

    out = Path(folder)
    ctx = scrub(json.loads(json.dumps(dict(context), default=str)))
    if report_dir is not None:
        ctx["plots"] = copy_plots(report_dir, out / "plots")
    if pool_table is not None:
        (out / POOL_FILE).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pool_table, str(out / POOL_FILE), row_group_size=10_000)
        n_sel = int(sum(pool_table.column("selected").to_pylist()))
        ctx["pool"] = {"rows": pool_table.num_rows, "selected": n_sel, "dropped": pool_table.num_rows - n_sel,
                       "columns": ", ".join(f"`{c}`" for c in pool_table.column_names
                                            if c not in (*VERDICT_COLUMNS, "drop_step_index"))}
    save_dataset_folder(out, result.dataset, ctx, selection=result)
    sel = json.loads((out / "selection.json").read_text())
    sel["source"] = {"id": ctx["source"], "split": ctx.get("source_split"), "revision": ctx.get("source_revision"),
                     "license": ctx.get("license")}
    sel["scorers"] = scorer_records(result.dataset)
    (out / "selection.json").write_text(json.dumps(hub_safe(sel, run_dir=ctx.get("run_dir")), indent=2,
                                                   default=str))
    (out / "select.yaml").write_text(ctx.get("select_yaml") or "")
    render_dataset_card(ctx, dataset_id=dataset_id).save(out / "README.md")
    return out


def push_selection(selection: Any, dataset_id: str, *, private: bool = True, token: str | None = None,
                   label: str | None = None,
                   with_pool: bool = False, pool: Any = None, source: str | None = None,
                   source_split: str | None = None, source_revision: str | None = None, license: str | None = None,
                   report_dir: str | os.PathLike | None = None, local_copy: str | os.PathLike | None = None,
                   commit_message: str | None = None) -> str:
    """Push any selection (a :class:`~hf_select.selection.SelectionResult`, made in Python or loaded from the folder
    ``hf-select select`` wrote with :func:`~hf_select.selection.select.load_selection_folder`) as a dataset
    repository with the same card as a recipe's, in one commit. Returns the repository's URL. ``label`` names the
    selection in errors (its folder).

    ``with_pool`` (or a ``pool``) adds config ``pool``: every pool row with its scores and ``selected``,
    ``drop_step``, ``drop_step_index``, ``drop_reason`` (:func:`pool_with_verdicts`). ``report_dir`` (a report of
    the selection) adds its plots and example rows. ``local_copy`` keeps the pushed folder there. The repository is
    created private unless ``private=False``; an existing public one is refused while ``private``.

    Raises:
        HFSelectError: one line naming the folder or the id and the fix; nothing is uploaded (no token, the Hub
            unreachable, a public repository, an incomplete or older selection folder, a pool that does not match).

    Example:
        >>> push_selection(load_selection_folder("chosen/"), "me/alpaca-top10", with_pool=True)  # doctest: +SKIP
        'https://huggingface.co/datasets/me/alpaca-top10'
    """
    import tempfile

    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import RepositoryNotFoundError

    from .models import hub_is_offline

    if not dataset_id or not is_hub_id(dataset_id):
        raise HFSelectError(f"{dataset_id!r} is not a Hub dataset id (expected 'owner/name', e.g. "
                            "--dataset-id me/alpaca-top10).")
    if isinstance(selection, (str, os.PathLike)):
        raise TypeError("push_selection takes a SelectionResult; load a folder with "
                        "hf_select.selection.select.load_selection_folder(folder) (it checks the folder whole)")
    result = selection
    if not hasattr(result, "provenance") or not hasattr(result, "dropped"):
        raise TypeError(f"push_selection takes a SelectionResult, got {type(selection).__name__}")
    label = label or "the SelectionResult"
    pool_table = pool_with_verdicts(result, pool, label=label) if (with_pool or pool is not None) else None
    token = token or get_token()
    if not token:
        raise HFSelectError(f"no Hugging Face token (run `hf auth login` or set HF_TOKEN); nothing was pushed from "
                            f"{label}.")
    if hub_is_offline():
        raise HFSelectError(f"the Hub is unreachable (or HF_HUB_OFFLINE=1); nothing was pushed from {label}.")
    api = HfApi(token=token)
    src, _ = _selection_source(result, source, source_split)
    meta = hub_metadata(src, "dataset", api=api) if (license is None or source_revision is None) else {}
    ctx = selection_card_context(result, source=source, source_split=source_split,
                                 source_revision=source_revision or meta.get("revision"),
                                 license=license or meta.get("license"), report_dir=report_dir, lookup=False)
    if license is None and meta.get("license"):
        ctx["license_from"] = "the source dataset's card"
    tmp = None
    if local_copy is None:
        tmp = tempfile.mkdtemp(prefix="hf-select-push-")
        local_copy = Path(tmp) / "dataset"
    try:
        folder = write_selection_folder(local_copy, result, ctx, pool_table=pool_table, report_dir=report_dir,
                                        dataset_id=dataset_id)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                      for p in files]
        try:
            try:
                info = api.repo_info(dataset_id, repo_type="dataset")
            except RepositoryNotFoundError:
                api.create_repo(dataset_id, repo_type="dataset", private=private, exist_ok=True)
            else:
                if private and not getattr(info, "private", True):
                    raise HFSelectError(f"{dataset_id} exists and is public; nothing was pushed from {label}. Push "
                                        "to a new (private) id, or say public (--public / private=False).")
            api.create_commit(dataset_id, operations, repo_type="dataset",
                              commit_message=commit_message or f"hf-select: selected subset of {ctx['source']} "
                                                               f"({ctx['rows_out']} of {ctx['rows_in']} rows)")
        except HFSelectError:
            raise
        except Exception as err:  # network, auth, permissions: one line, token redacted
            raise HFSelectError(redact(f"pushing {label} to {dataset_id} failed ({type(err).__name__}: "
                                       f"{str(err).splitlines()[0] if str(err) else 'no detail'}); the commit is "
                                       "all or nothing, so nothing was uploaded.")) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    url = _hub_url(dataset_id, "dataset") or dataset_id
    logger.info("pushed %s to %s", label, url)
    return url
