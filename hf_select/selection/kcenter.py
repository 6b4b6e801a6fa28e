"""k-center greedy (MoDS's coverage and necessity stages): repeatedly pick the row farthest from every chosen row.

The first pick is a seeded random row, or, when ``initial`` rows are given, the row farthest from them. Each pick
costs one matrix-vector product over the embeddings, so memory stays at the embeddings plus a few vectors of
length N (and a block of ``N x chunk`` when measuring the distances to ``initial``); nothing is ever N x N.

Precision (``precision="mixed"``, the default): the running distances are kept in float32 on the device (CPU or
CUDA), computed as ``|x|^2 + |c|^2 - 2 x.c`` (one matrix-vector product per pick). Before every pick the rows whose
float32 distance lies within a worst-case float32 error bound, ``2 (2d + 16) u max|x|^2``, of the largest one are
re-measured in float64 by differences against every center, and the largest float64 distance wins, exact ties
going to the lowest row index. So the picks are those of a float64 implementation (such as the MoDS loop with
``sklearn.metrics.pairwise_distances``), not merely close to them, while the bulk work runs at float32 speed; the
same seed gives the same picks on CPU and GPU. Should more than 256 rows fall inside the bound at once (exact
duplicates, or every row already covered), the run switches to float64 for the rest of the picks.
``precision="float64"`` keeps the running distances in float64 from the start (same rule, float64 bound).

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [5.0, 5.0]])
    >>> k_center_greedy(x, 2, initial=[0])
    [2, 3]
    >>> result = k_center_greedy(x, 2, initial=[0], return_radii=True)
    >>> [round(r, 3) for r in result.radii]
    [7.071, 1.0]
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
import torch

from .base import dense_rows

logger = logging.getLogger(__name__)

METRICS = ("euclidean", "cosine")
PRECISIONS = ("mixed", "float64")
# Elements of one N x chunk block (float32: 128 MiB).
_BLOCK_ELEMENTS = 1 << 25
# Rows re-measured in float64 after one pick before the run switches to float64 altogether.
_MAX_CANDIDATES = 256
# Candidate rows re-measured at once.
_EXACT_ROWS = 4096
# Largest distances looked at per pick before searching all rows for near-ties.
_TOP_PEEK = 16
_U32 = 2.0**-24  # unit roundoff of float32
_U64 = 2.0**-53  # unit roundoff of float64


@dataclass
class KCenterResult:
    """Picks of :func:`k_center_greedy` with the coverage radius after each pick.

    ``radii[j]`` is the largest distance from any row to its nearest center after ``j + 1`` picks (``initial``
    rows count as centers); ``initial_radius`` is that radius for the ``initial`` rows alone (None without them).
    Distances are euclidean, or ``1 - cosine similarity`` with ``metric="cosine"``.
    """

    indices: list[int]
    radii: list[float] = field(default_factory=list)
    initial_radius: float | None = None
    metric: str = "euclidean"


def _to_tensor(embeddings: Any, name: str = "embeddings") -> torch.Tensor:
    """A CPU (or already on-device) 2-D tensor view of the input; validates the shape."""
    if isinstance(embeddings, torch.Tensor):
        t = embeddings.detach()
    else:
        t = torch.from_numpy(np.ascontiguousarray(dense_rows(embeddings, name)))
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x dimensions), got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8)):
        raise ValueError(f"{name} must hold numbers, got {t.dtype}")
    return t


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Distances:
    """The embeddings on the device in the working dtype, their squared norms, and exact float64 row access."""

    def __init__(self, source: torch.Tensor, metric: str, device: torch.device, dtype: torch.dtype):
        self.source = source
        self.metric = metric
        self.device = device
        self.n, self.dim = source.shape
        rows = max(1, _BLOCK_ELEMENTS // max(1, self.dim))
        # float64 norms of the source rows (for cosine normalisation and the error bound).
        norms = torch.empty(self.n, dtype=torch.float64, device=device)
        for lo in range(0, self.n, rows):
            block = source[lo : lo + rows].to(device=device, dtype=torch.float64)
            if not torch.isfinite(block).all():
                bad = lo + int(torch.nonzero(~torch.isfinite(block).all(1))[0])
                raise ValueError(f"embeddings: row {bad} holds NaN or infinite values")
            norms[lo : lo + rows] = block.norm(dim=1)
        if metric == "cosine":
            zero = torch.nonzero(norms == 0)
            if len(zero):
                raise ValueError(f"embeddings: row {int(zero[0])} is all zeros, which has no cosine distance")
        self.norms64 = norms
        self.set_dtype(dtype)

    def set_dtype(self, dtype: torch.dtype) -> None:
        """(Re)build the working copy in ``dtype``: rows (normalised for cosine) and their squared norms."""
        self.dtype = dtype
        rows = max(1, _BLOCK_ELEMENTS // max(1, self.dim))
        same = self.source.device == self.device and self.source.dtype == dtype and self.metric == "euclidean"
        if same:
            self.x = self.source
        else:
            self.x = torch.empty((self.n, self.dim), dtype=dtype, device=self.device)
            for lo in range(0, self.n, rows):
                block = self.source[lo : lo + rows].to(device=self.device, dtype=torch.float64)
                if self.metric == "cosine":
                    block = block / self.norms64[lo : lo + rows, None]
                self.x[lo : lo + rows] = block.to(dtype)
        if self.metric == "cosine":
            sq = torch.ones(self.n, dtype=torch.float64, device=self.device)
        else:
            sq = self.norms64**2
        self.sq = sq.to(dtype)
        self.max_sq = float(sq.max()) if self.n else 0.0

    def exact_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` in float64 on the device (normalised for cosine)."""
        rows = self.source[idx.to(self.source.device)].to(device=self.device, dtype=torch.float64)
        if self.metric == "cosine":
            rows = rows / self.norms64[idx.to(self.device), None]
        return rows

    def sq_to(self, center: int) -> torch.Tensor:
        """Squared euclidean distance of every row to row ``center`` in the working dtype (expansion form; may be
        a rounding error below 0). Two passes over N values: few parallel regions per pick."""
        d = torch.addmv(self.sq, self.x, self.x[center], beta=1.0, alpha=-2.0)
        return d.add_(self.sq[center])

    def sq_to_block(self, centers: torch.Tensor) -> torch.Tensor:
        """Squared distances of every row to the nearest of ``centers`` (row indices), in N x chunk blocks."""
        out = torch.full((self.n,), math.inf, dtype=self.dtype, device=self.device)
        step = max(1, _BLOCK_ELEMENTS // max(1, self.n))
        for lo in range(0, len(centers), step):
            c = centers[lo : lo + step].to(self.device)
            block = self.x @ self.x[c].T
            block.mul_(-2.0).add_(self.sq[:, None]).add_(self.sq[c][None, :])
            torch.minimum(out, block.min(dim=1).values.clamp_min_(0.0), out=out)
        return out

    def error_bound(self) -> float:
        """Bound on |computed squared distance - exact| for the expansion form in the working dtype
        (worst case of sequential summation: ``(2d + 16) u max|x|^2``, u the unit roundoff)."""
        u = _U32 if self.dtype == torch.float32 else _U64
        return (2.0 * self.dim + 16.0) * u * self.max_sq

    def radius(self, sq: float) -> float:
        """A squared euclidean distance (of normalised rows for cosine) as the reported distance."""
        sq = max(sq, 0.0)
        return sq / 2.0 if self.metric == "cosine" else math.sqrt(sq)


def _exact_min_dist(dist: _Distances, rows: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """float64 euclidean distance from each of ``rows`` (indices) to its nearest center, by differences."""
    best = torch.full((len(rows),), math.inf, dtype=torch.float64, device=dist.device)
    for qlo in range(0, len(rows), _EXACT_ROWS):
        q = dist.exact_rows(rows[qlo : qlo + _EXACT_ROWS])
        step = max(1, (_BLOCK_ELEMENTS // 4) // max(1, len(q)))
        for lo in range(0, centers.shape[0], step):
            d = torch.cdist(q, centers[lo : lo + step], compute_mode="donot_use_mm_for_euclid_dist")
            torch.minimum(best[qlo : qlo + len(q)], d.min(dim=1).values, out=best[qlo : qlo + len(q)])
    return best


@overload
def k_center_greedy(
    embeddings: Any, k: int, *, seed: int = 0, initial: Sequence[int] | None = None, metric: str = "euclidean",
    device: str | torch.device | None = None, precision: str = "mixed", return_radii: Literal[False] = False,
) -> list[int]: ...


@overload
def k_center_greedy(
    embeddings: Any, k: int, *, seed: int = 0, initial: Sequence[int] | None = None, metric: str = "euclidean",
    device: str | torch.device | None = None, precision: str = "mixed", return_radii: Literal[True],
) -> KCenterResult: ...


def k_center_greedy(
    embeddings: Any,
    k: int,
    *,
    seed: int = 0,
    initial: Sequence[int] | None = None,
    metric: str = "euclidean",
    device: str | torch.device | None = None,
    precision: str = "mixed",
    return_radii: bool = False,
) -> list[int] | KCenterResult:
    """Pick ``k`` rows by k-center greedy; returns their indices in pick order.

    Args:
        embeddings: N x d array (numpy, torch or nested lists). It stays where it is; a working copy goes to the
            device (none when it is already a float32 tensor there, for the euclidean metric).
        k: rows to pick besides ``initial``. More than the rows left gives all of them, with a warning.
        seed: chooses the first center when there is no ``initial`` (same seed, same picks).
        initial: rows already chosen (e.g. MoDS's seed set); they are centers from the start and are never picked,
            and the first pick is the row farthest from them.
        metric: ``euclidean`` or ``cosine`` (``1 - cosine similarity``; rows are normalised, so the picks are the
            euclidean picks of the normalised rows).
        device: ``cpu``, ``cuda``, ...; default CUDA when available.
        precision: ``mixed`` (float32, near-ties settled in float64; see the module docstring) or ``float64``.
        return_radii: return a :class:`KCenterResult` with the coverage radius after each pick.

    Raises:
        ValueError: for a bad shape, NaN rows, an all-zero row with ``metric="cosine"``, or bad arguments.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(100, 8)).astype("float32")
        >>> picks = k_center_greedy(x, 5, seed=1)
        >>> picks == k_center_greedy(x, 5, seed=1), len(set(picks))
        (True, 5)
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    source = _to_tensor(embeddings)
    n = source.shape[0]
    init = list(dict.fromkeys(int(i) for i in (initial if initial is not None else [])))
    bad = [i for i in init if not 0 <= i < n]
    if bad:
        raise ValueError(f"initial holds row {bad[0]}, outside the {n} rows of the embeddings")
    available = n - len(init)
    if n == 0:
        warnings.warn("k_center_greedy: no rows to choose from; returning no picks.", UserWarning, stacklevel=2)
    elif k > available:
        warnings.warn(
            f"k_center_greedy: k={k} is more than the {available} rows available; returning all of them.",
            UserWarning,
            stacklevel=2,
        )
    k = int(min(k, available))
    result = KCenterResult(indices=[], metric=metric)
    if n == 0 or (k == 0 and not init):
        return result if return_radii else []
    dev = _resolve_device(device)
    dist = _Distances(source, metric, dev, torch.float32 if precision == "mixed" else torch.float64)
    centers64 = torch.empty((len(init) + k, dist.dim), dtype=torch.float64, device=dev)
    n_centers = 0
    min_sq = torch.full((n,), math.inf, dtype=dist.dtype, device=dev)
    if init:
        init_t = torch.tensor(init, dtype=torch.long)
        min_sq = dist.sq_to_block(init_t)
        min_sq[init_t.to(dev)] = -math.inf
        centers64[: len(init)] = dist.exact_rows(init_t)
        n_centers = len(init)

    def next_pick() -> tuple[int | None, float]:
        """The row farthest from every center (exactly, in float64) and its squared distance."""
        nonlocal min_sq
        window = 2.0 * dist.error_bound()
        vals, idx = torch.topk(min_sq, min(_TOP_PEEK, n))
        vals = vals.cpu()
        top = float(vals[0])
        if top == -math.inf:
            return None, 0.0
        if float(vals[-1]) >= top - window and n > _TOP_PEEK:  # more near-ties than peeked at: find them all
            cand = torch.nonzero(min_sq >= top - window).flatten()
        else:
            cand = torch.sort(idx[(vals >= top - window).to(idx.device)]).values
        if len(cand) > _MAX_CANDIDATES and dist.dtype == torch.float32:
            logger.info("k_center_greedy: %d rows tie within float32 error; continuing in float64.", len(cand))
            dist.set_dtype(torch.float64)
            centers = torch.tensor(picks_so_far, dtype=torch.long)
            all_centers = torch.cat([torch.tensor(init, dtype=torch.long), centers]) if init else centers
            min_sq = dist.sq_to_block(all_centers)
            min_sq[all_centers.to(dev)] = -math.inf
            return next_pick()
        exact = _exact_min_dist(dist, cand, centers64[:n_centers])
        j = int(torch.argmax(exact))  # candidates are in increasing row order: ties go to the lowest row
        return int(cand[j]), float(exact[j]) ** 2

    picks_so_far: list[int] = []
    if init:
        first, first_sq = next_pick()
        result.initial_radius = dist.radius(first_sq)
    else:
        first = int(np.random.default_rng(seed).integers(n))
    pick: int | None = first
    while pick is not None and len(picks_so_far) < k:
        picks_so_far.append(pick)
        centers64[n_centers] = dist.exact_rows(torch.tensor([pick]))[0]
        n_centers += 1
        torch.minimum(min_sq, dist.sq_to(pick), out=min_sq)
        min_sq[pick] = -math.inf
        pick, sq = next_pick()
        result.radii.append(dist.radius(sq))
    result.indices = picks_so_far
    return result if return_radii else list(picks_so_far)
