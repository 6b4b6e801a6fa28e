"""What the dataset and model cards say, as plain text built from what ran: the method in one sentence per selection
step (a threshold reads as a threshold, a share as a share), local paths replaced so a card holds nothing that only
exists on the machine that wrote it, and the share of rows corrupted on purpose in a labelled (demo) pool.

:mod:`hf_select.hub` renders the cards; this module only writes their sentences, so it imports nothing heavy.

Example:
    >>> describe_step({"step": "top", "params": {"column": "judge_score", "fraction": 0.5}, "rows_in": 160,
    ...                "rows_out": 80})
    'keep the 50% of rows with the highest `judge_score` (160 -> 80 rows)'
    >>> hub_safe("--output_dir /tmp/run --model_name_or_path /home/me/models/tiny", run_dir="/tmp/run")
    '--output_dir OUTPUT_DIR --model_name_or_path <local>/tiny'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

MODEL_PLACEHOLDER = "<hub-model-id>"
DATASET_PLACEHOLDER = "<hub-dataset-id>"
RUN_DIR_PLACEHOLDER = "OUTPUT_DIR"
LOCAL_PREFIX = "<local>/"
CORRUPTION_COLUMN = "corruption"  # the demo pool's label of rows corrupted on purpose ("none" = clean)
SCORES_MARKER = "hf-select scores: "  # how a dataset's ``info.description`` records the scorers that made its columns

# an absolute (or home-relative) path that starts a token: after a space, quote, bracket, '=' or the text's start;
# never inside a URL (``https://``) or a relative path
_PATH = re.compile(r"(?<![\w.:/<>~-])(?:~/|/)[^\s\"'`()\[\]{},;|]+")

METHOD_INTROS = {
    "mods": ("MoDS", "MoDS (Model-oriented Data Selection, arXiv 2311.15653): a quality filter, a k-center seed set "
                     "on instruction embeddings, a seed model fine-tuned on it that answers the high-quality "
                     "instructions, the rows it answers badly (necessity) k-centered to a budget, and seed + "
                     "necessary rows as the subset."),
    "cherry": ("Cherry LLM (IFD)", "Cherry LLM (NAACL'24): a pre-experienced model trained on a few rows per k-means "
                                   "cluster of prompt embeddings scores every row's Instruction-Following Difficulty "
                                   "(IFD = loss(answer | prompt) / loss(answer)); the IFD rule then picks the rows."),
    "superfiltering": ("Superfiltering (IFD with a small model)",
                       "Superfiltering (ACL'24): a small language model scores IFD; the IFD rule picks the rows, "
                       "optionally followed by facility location on sentence embeddings for diversity."),
    "selection": ("hf-select selection steps", "Rows chosen by score with `hf-select select` (or "
                                               "`hf_select.select` in Python): the steps below ran in order, each on "
                                               "the rows the previous ones kept."),
    "instruct_mining": ("InstructMining", "InstructMining (arXiv 2307.06290): natural-language indicators per row, a "
                                          "linear rule that predicts the eval loss from them, the rows ranked by the "
                                          "rule and the subset size chosen on a small grid by held-out loss."),
}


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _budget(p: Mapping[str, Any], *, of: str = "rows") -> str:
    if p.get("count") is not None or p.get("k") is not None:
        return f"{p.get('count', p.get('k'))} {of}"
    if p.get("fraction") is not None or p.get("top") is not None:
        return f"{100 * float(p.get('fraction', p.get('top'))):g}% of {of}"
    return of


def _describe(step: str, p: Mapping[str, Any]) -> str:
    col = f"`{p.get('column')}`" if p.get("column") else None
    if step == "threshold":
        strict = bool(p.get("strict"))
        parts = []
        if p.get("min") is not None:
            parts.append(f"{col} {'>' if strict else '>='} {_num(p['min'])}")
        if p.get("max") is not None:
            parts.append(f"{col} {'<' if strict else '<='} {_num(p['max'])}")
        return f"keep rows with {' and '.join(parts) or col + ' set'} (a threshold)"
    if step == "top":
        side = "highest" if p.get("descending", True) else "lowest"
        if p.get("count") is not None:
            return f"keep the {p['count']} rows with the {side} {col}"
        of = " of the scored rows" if p.get("of") == "scored" else ""
        return f"keep the {100 * float(p.get('fraction', 0)):g}% of rows{of} with the {side} {col}"
    if step == "ifd_rule":
        column = p.get("column", "ifd")
        max_ifd = _num(p.get("max_ifd", 1.0))
        share = ("a share of all rows, scored or not" if p.get("of", "all") == "all"
                 else "a share of the rows left after the drops")
        budget = _budget(p) if p.get("count") is not None else f"{_budget(p)} ({share})"
        return (f"the IFD rule: drop rows without an ok IFD status and rows with `{column}` >= {max_ifd}, then keep "
                f"the highest `{column}`: {budget}")
    if step == "kcenter":
        return f"k-center greedy on {col or '`embedding`'}: {_budget(p)} spread over the embedding space"
    if step == "facility_location":
        return f"facility location on {col or '`embedding`'}: {_budget(p)} that best cover the rest (diversity)"
    if step == "kmeans_sample":
        band = p.get("band") or [25, 75]
        inside = f" inside the {band[0]:g}-{band[1]:g} percentile band of `{p['score_column']}`" \
            if p.get("score_column") else ""
        return (f"k-means ({p.get('n_clusters', 100)} clusters) on {col or '`embedding`'}: up to "
                f"{p.get('per_cluster', 10)} rows per cluster{inside}")
    if step == "random":
        return f"a seeded random sample of {_budget(p)}"
    if step == "union":
        return f"the union of {' + '.join(p.get('of') or [])}, each row once"
    if step == "consistency_gate":
        q = p.get("max_reverse_quantile")
        limit = f"its {float(q):g} quantile" if q is not None else _num(p.get("max_reverse"))
        return f"a consistency gate: drop rows whose reverse IFD `{p.get('column', 'ifd_reverse')}` is above {limit}"
    params = ", ".join(f"{k}={_num(v)}" for k, v in sorted(p.items()))
    return f"`{step}` ({params})" if params else f"`{step}`"


def describe_step(entry: Mapping[str, Any]) -> str:
    """One provenance entry as a sentence: what the step kept, from its own parameters, and its row counts.

    Example:
        >>> describe_step({"step": "threshold", "params": {"column": "reward", "min": 0.0, "strict": True},
        ...                "stage": "quality", "rows_in": 50, "rows_out": 20})
        'quality: keep rows with `reward` > 0 (a threshold) (50 -> 20 rows)'
    """
    text = _describe(str(entry.get("step")), entry.get("params") or {})
    if entry.get("stage"):
        text = f"{entry['stage']}: {text}"
    if entry.get("rows_in") is not None and entry.get("rows_out") is not None:
        text += f" ({entry['rows_in']} -> {entry['rows_out']} rows)"
    return text


def method_text(method: str, provenance: Sequence[Mapping[str, Any]]) -> tuple[str, str, list[str]]:
    """(title, one-paragraph introduction of the method, one sentence per step that ran).

    Example:
        >>> title, intro, steps = method_text("superfiltering", [{"step": "ifd_rule", "params": {"count": 5}}])
        >>> title, steps[0].endswith("then keep the highest `ifd`: 5 rows")
        ('Superfiltering (IFD with a small model)', True)
    """
    title, intro = METHOD_INTROS.get(method, (method, ""))
    return title, intro, [describe_step(e) for e in provenance]


def hub_safe(value: Any, *, run_dir: str | os.PathLike | None = None) -> Any:
    """``value`` (a string, or lists and dicts of them) with every absolute path replaced: a path inside ``run_dir``
    becomes ``OUTPUT_DIR/...`` (the Reproduce line's ``--output_dir OUTPUT_DIR``), any other ``<local>/<name>``.

    Example:
        >>> hub_safe({"model": "/tmp/r/seed_model", "url": "https://huggingface.co/me/m"}, run_dir="/tmp/r")
        {'model': 'OUTPUT_DIR/seed_model', 'url': 'https://huggingface.co/me/m'}
    """
    if isinstance(value, str):
        root = os.path.realpath(str(run_dir)).rstrip("/") if run_dir else None
        roots = {str(run_dir).rstrip("/"), root} if run_dir else set()

        def replace(match: re.Match[str]) -> str:
            path = match.group(0)
            for r in roots:
                if r and (path == r or path.startswith(r + "/")):
                    rest = path[len(r):].lstrip("/")
                    rest = re.sub(r"(^|/)\.(\w+)\.tmp(?=/|$)", r"\1\2", rest)  # a stage's temporary folder
                    return RUN_DIR_PLACEHOLDER + (f"/{rest}" if rest else "")
            name = os.path.basename(path.rstrip("/")) or "path"
            return LOCAL_PREFIX + name

        return _PATH.sub(replace, value)
    if isinstance(value, Mapping):
        return {k: hub_safe(v, run_dir=run_dir) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [hub_safe(v, run_dir=run_dir) for v in value]
    return value


def corrupted_shares(pool: Any, subset: Any) -> dict[str, Any] | None:
    """Rows corrupted on purpose (``corruption != "none"``) in the pool that was read and in the subset, when the
    pool is labelled (the demo pool); None otherwise.

    Example:
        >>> from datasets import Dataset
        >>> pool = Dataset.from_dict({"corruption": ["none", "swapped", "none", "wrong"]})
        >>> corrupted_shares(pool, pool.select([0, 1]))["subset"]
        {'rows': 2, 'corrupted': 1, 'share': 0.5, 'kinds': {'swapped': 1}}
    """
    def count(ds: Any) -> dict[str, Any] | None:
        if ds is None or CORRUPTION_COLUMN not in getattr(ds, "column_names", ()):
            return None
        kinds: dict[str, int] = {}
        values = list(ds.with_format(None)[CORRUPTION_COLUMN])
        for v in values:
            if v not in (None, "none"):
                kinds[str(v)] = kinds.get(str(v), 0) + 1
        bad = sum(kinds.values())
        return {"rows": len(values), "corrupted": bad, "share": bad / len(values) if values else None,
                "kinds": dict(sorted(kinds.items()))}

    pool_counts, subset_counts = count(pool), count(subset)
    if pool_counts is None or subset_counts is None:
        return None
    return {"pool": pool_counts, "subset": subset_counts}


def record_scorer(dataset: Any, scorer: str, config: Mapping[str, Any], columns: Sequence[str], *,
                  source: str | None = None, split: str | None = None) -> Any:
    """Record in ``dataset.info.description`` which scorer made ``columns`` with which settings (the scored
    columns' provenance, kept by ``save_to_disk`` and by every selection made from the rows; a dataset card reads it
    back with :func:`scorer_records`). An earlier record of the same scorer is replaced. Returns ``dataset``.

    Example:
        >>> from datasets import Dataset
        >>> ds = record_scorer(Dataset.from_dict({"ifd": [0.5]}), "ifd", {"max_length": 512}, ["ifd"],
        ...                    source="tatsu-lab/alpaca")
        >>> [(r['scorer'], r['config'], r['source']) for r in scorer_records(ds)]
        [('ifd', {'max_length': 512}, 'tatsu-lab/alpaca')]
    """
    import json

    records = [r for r in scorer_records(dataset) if r.get("scorer") != scorer]
    records.append({"scorer": scorer, "columns": list(columns), "config": dict(config), "source": source,
                    "split": split})
    text = getattr(dataset.info, "description", None) or ""
    others = [line for line in text.splitlines() if not line.startswith(SCORES_MARKER)]
    line = SCORES_MARKER + json.dumps(records, sort_keys=False, default=str)
    dataset.info.description = "\n".join([*[o for o in others if o.strip()], line])
    return dataset


def scorer_records(dataset: Any) -> list[dict[str, Any]]:
    """The scorers recorded by :func:`record_scorer` in ``dataset.info.description`` (``[]`` when none: scores made
    outside ``hf-select score``).

    Example:
        >>> from datasets import Dataset
        >>> scorer_records(Dataset.from_dict({"x": [1]}))
        []
    """
    import json

    text = getattr(getattr(dataset, "info", None), "description", None) or ""
    for line in reversed(text.splitlines()):
        if line.startswith(SCORES_MARKER):
            try:
                records = json.loads(line[len(SCORES_MARKER):])
            except ValueError:
                return []
            return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []
    return []
