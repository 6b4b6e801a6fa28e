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

from .clusters import (
    ClusterSample,
    FacilityLocationResult,
    facility_location,
    facility_location_objective,
    kmeans_cluster_sample,
    knn_similarity_graph,
)
from .filters import (
    StepResult,
    dedup_exact,
    dedup_near,
    embedding_matrix,
    ifd_rule,
    threshold,
    token_budget,
    top,
)
from .fusion import fused_diverse, fused_scores
from .gates import consistency_gate
from .kcenter import KCenterResult, k_center_greedy
from .length import length_stratified_top
from .merge import merge_columns, union_selection
from .quotas import largest_remainder, strata_labels
from .select import SelectionResult, Step, load_selection_folder, load_steps, provenance_table, select
from .steps import STEPS, StepSpec, available_steps, register_step
from .target import TargetEmbeddings, load_target_embeddings, target_similarity

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
    "load_selection_folder",
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
