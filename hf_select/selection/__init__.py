"""Selection: read score columns, keep rows, and record why every other row was dropped.

A selector reads columns that scorers wrote and never loads a model or tokenizer. :mod:`.base` holds what every
step builds on (``StepResult``, column readers, the ``count`` / ``fraction`` budget); :mod:`.filters`,
:mod:`.gates`, :mod:`.length`, :mod:`.fusion`, :mod:`.target` are steps; :mod:`.kcenter` and :mod:`.clusters` are the
matrix algorithms that :mod:`.steps` adapts into steps and registers (``STEPS``); :mod:`.quotas` adds composition
quotas to any budgeted step; :mod:`.select` runs a step list into a :class:`SelectionResult`; :mod:`.presets` are
named step lists.

Example:
    >>> from hf_select.selection import select
    >>> result = select(scored, "select.yaml", seed=0)  # doctest: +SKIP
    >>> result.save("chosen/")                           # doctest: +SKIP
"""

from importlib import import_module
from typing import Any

# Public name -> the module that defines it, imported on first use (so that a step list, the presets or
# `hf-select --help` need not load torch: kcenter and clusters import it).
_EXPORTS = {
    "ClusterSample": "clusters", "FacilityLocationResult": "clusters", "facility_location": "clusters",
    "facility_location_objective": "clusters", "kmeans_cluster_sample": "clusters",
    "knn_similarity_graph": "clusters", "StepResult": "filters", "dedup_exact": "filters", "dedup_near": "filters",
    "embedding_matrix": "filters", "ifd_rule": "filters", "threshold": "filters", "token_budget": "filters",
    "top": "filters", "fused_diverse": "fusion", "fused_scores": "fusion", "consistency_gate": "gates",
    "KCenterResult": "kcenter", "k_center_greedy": "kcenter", "length_stratified_top": "length",
    "merge_columns": "merge", "union_selection": "merge", "largest_remainder": "quotas", "strata_labels": "quotas",
    "SelectionResult": "select", "Step": "select", "load_steps": "select", "provenance_table": "select",
    "select": "select", "STEPS": "steps", "StepSpec": "steps", "available_steps": "steps", "register_step": "steps",
    "TargetEmbeddings": "target", "load_target_embeddings": "target", "target_similarity": "target",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = [
    "STEPS",
    "ClusterSample",
    "FacilityLocationResult",
    "KCenterResult",
    "SelectionResult",
    "Step",
    "StepResult",
    "StepSpec",
    "TargetEmbeddings",
    "available_steps",
    "consistency_gate",
    "dedup_exact",
    "dedup_near",
    "embedding_matrix",
    "facility_location",
    "facility_location_objective",
    "fused_diverse",
    "fused_scores",
    "ifd_rule",
    "k_center_greedy",
    "kmeans_cluster_sample",
    "knn_similarity_graph",
    "largest_remainder",
    "length_stratified_top",
    "load_target_embeddings",
    "load_steps",
    "merge_columns",
    "provenance_table",
    "register_step",
    "select",
    "strata_labels",
    "target_similarity",
    "threshold",
    "token_budget",
    "top",
    "union_selection",
]
