"""Selection: read score columns, keep rows, and record why every other row was dropped.

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
from .kcenter import KCenterResult, k_center_greedy
from .select import STEPS, SelectionResult, Step, load_steps, provenance_table, register_step, select

__all__ = [
    "STEPS",
    "ClusterSample",
    "FacilityLocationResult",
    "KCenterResult",
    "SelectionResult",
    "Step",
    "StepResult",
    "dedup_exact",
    "dedup_near",
    "embedding_matrix",
    "facility_location",
    "facility_location_objective",
    "ifd_rule",
    "k_center_greedy",
    "kmeans_cluster_sample",
    "knn_similarity_graph",
    "load_steps",
    "provenance_table",
    "register_step",
    "select",
    "threshold",
    "token_budget",
    "top",
]
