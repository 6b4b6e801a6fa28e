"""k-center greedy (MoDS's coverage and necessity stages): repeatedly pick the row farthest from every chosen row.

The first pick is a seeded random row, or, when ``initial`` rows are given, the row farthest from them. Memory stays
at the embeddings plus a few vectors of length N and one block of at most ``N x block`` dot products; nothing is
ever N x N.

Blocked distance updates (``block``, default 32). Each pick needs the distance of every row to the new center, and
computing it as one matrix-vector product reads all N x d embeddings for 2 N d flops: memory-bound. Instead, when
the picked row's distances are not at hand, the ``m`` rows with the largest current distances (the picked row
among them) are taken as the likely next centers and their dot products with every row come from one matrix-matrix
product (one pass over the embeddings for ``m`` columns, at matrix-multiply speed). The following picks use their
column while the pick is one of those rows, which is the common case: a row outside the block can only become the
farthest once every block row not yet picked has come closer than it. A pick outside the block starts a new
block. ``m`` adapts to how many columns the last block served (twice that, between 4 and ``block``), so data where
few of them are used (tight clusters) pays for small blocks only. The picks do not depend on ``block``: the block
only changes how the same float32 distances are computed, and every pick is settled exactly as below.
``block=1`` is the plain one-matrix-vector-product-per-pick loop.

Precision (``precision="mixed"``, the default): the running distances are kept in float32 on the device (CPU or
CUDA), computed as ``|x|^2 + |c|^2 - 2 x.c``. Before every pick the rows whose float32 distance lies within a
worst-case float32 error bound, ``2 (2d + 16) u max|x|^2``, of the largest one are re-measured in float64 by
differences against every center, and the largest float64 distance wins, exact ties going to the lowest row index.
So the picks are those of a float64 implementation (such as the MoDS loop with
``sklearn.metrics.pairwise_distances``), not merely close to them, while the bulk work runs at float32 speed; the
same seed gives the same picks on CPU and GPU. The bound of a float32 dot product holds for any order of summation
(blocked, fused multiply-add), so it covers the matrix-matrix product too, provided the product really runs in
float32: the block product is computed with TF32 and bf16 matrix-multiply modes switched off
(``torch.backends.*.matmul.fp32_precision = "ieee"``) whatever the caller set, and the setting is restored after.
Should more than 256 rows fall inside the bound at once (exact duplicates, or every row already covered), the run
switches to float64 for the rest of the picks. ``precision="float64"`` keeps the running distances in float64 from
the start (same rule, float64 bound).

Why not 16-bit embeddings. Storing the rows in bf16 or fp16 halves the bytes a matrix-vector product reads, but
(1) torch 2.13's CPU matrix-vector product is no faster in 16 bits on this project's CPU (AVX512-BF16; one pass over
50,000 x 384 on an idle machine, ``benchmarks/kcenter.py cpu``: float32 3.8 ms, bf16 4.3 ms, fp16 3.8 ms) and
returns its result in 16 bits, and a 16-bit-in, float32-out product (``out_dtype``) is not implemented on CPU;
(2) a 16-bit row is off by up to ``u16 |x_i|`` per element (u16 = 2^-8 for bf16, 2^-11 for fp16), so even with
exact products accumulated in float32 a dot product is off by up to ``(2 u16 + u16^2 + d u32) |x| |c|`` and a
squared distance by ``2 (2 u16 + u16^2 + (d + 8) u32) max|x|^2``: at d = 384 that is 1.6% of max|x|^2 for bf16 and
0.2% for fp16, against 0.005% for the float32 bound above, and every row within twice the bound of the largest
distance needs the float64 re-check. Blocking removes the memory bound without widening that window, so it is the
one used.

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

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
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
# Smallest adaptive block (columns per matrix-matrix product) once blocks have served few picks.
_MIN_BLOCK = 4
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
            block = source[lo : lo + rows].to(device=device)
            if not block.is_floating_point():
                block = block.to(torch.float64)
            # one pass: a NaN or infinite value makes its row's norm non-finite (checked once, below)
            norms[lo : lo + rows] = torch.linalg.vector_norm(block, dim=1, dtype=torch.float64)
        finite = torch.isfinite(norms)
        if not bool(finite.all()):
            bad = int(torch.nonzero(~finite)[0])
            if bool(torch.isfinite(source[bad]).all()):
                raise ValueError(f"embeddings: row {bad} is too large (its squared norm overflows float64); "
                                 "scale the embeddings down")
            raise ValueError(f"embeddings: row {bad} holds NaN or infinite values")
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
            with _ieee_fp32_matmul():
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


@contextlib.contextmanager
def _ieee_fp32_matmul() -> Iterator[None]:
    """Float32 matrix products in real float32 (no TF32, no bf16 passes) inside the block; the caller's settings are
    restored after. The error bound of the near-tie window assumes float32 arithmetic."""
    backends = [b for b in (getattr(torch.backends, "cuda", None), getattr(torch.backends, "mkldnn", None))
                if b is not None and hasattr(getattr(b, "matmul", None), "fp32_precision")]
    if not backends:  # torch without the per-backend API
        old = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(old)
        return
    old_values = [b.matmul.fp32_precision for b in backends]
    try:
        for b in backends:
            b.matmul.fp32_precision = "ieee"
        yield
    finally:
        for b, value in zip(backends, old_values, strict=True):
            b.matmul.fp32_precision = value


class _BlockColumns:
    """Squared distances to a new center, taken from a block of dot products computed for several likely centers in
    one matrix-matrix product (see the module docstring); ``max_cols=1`` is one matrix-vector product per center."""

    def __init__(self, dist: _Distances, max_cols: int):
        self.dist = dist
        self.max_cols = max(1, min(max_cols, _BLOCK_ELEMENTS // max(1, dist.n)))
        self.cols = self.max_cols
        self.rows: dict[int, int] = {}
        self.dots: torch.Tensor | None = None
        self.dtype = dist.dtype
        self.served = 0
        self.blocks = 0

    def sq_to(self, center: int, min_sq: torch.Tensor) -> torch.Tensor:
        """Squared distance of every row to ``center`` in the working dtype (expansion form). ``min_sq`` (the running
        distances, ``center`` not yet masked) chooses the rows of a new block when ``center`` is not in this one."""
        dist = self.dist
        if self.max_cols == 1:
            return dist.sq_to(center)
        if self.dtype != dist.dtype:  # switched to float64: the block is stale
            self.rows, self.dots, self.dtype = {}, None, dist.dtype
        if center not in self.rows:
            if self.dots is not None:
                self.cols = min(self.max_cols, max(_MIN_BLOCK, 2 * self.served))
            vals, idx = torch.topk(min_sq, min(self.cols, dist.n))
            rows = [int(i) for i in idx[vals > -math.inf].cpu() if int(i) != center][: self.cols - 1]
            rows = [center, *rows]
            with _ieee_fp32_matmul():
                self.dots = dist.x[torch.tensor(rows, device=dist.device)] @ dist.x.T
            self.rows = {r: j for j, r in enumerate(rows)}
            self.served = 0
            self.blocks += 1
        self.served += 1
        d = torch.add(dist.sq, self.dots[self.rows.pop(center)], alpha=-2.0)
        return d.add_(dist.sq[center])


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
    device: str | torch.device | None = None, precision: str = "mixed", block: int = 32,
    return_radii: Literal[False] = False,
) -> list[int]: ...


@overload
def k_center_greedy(
    embeddings: Any, k: int, *, seed: int = 0, initial: Sequence[int] | None = None, metric: str = "euclidean",
    device: str | torch.device | None = None, precision: str = "mixed", block: int = 32,
    return_radii: Literal[True],
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
    block: int = 32,
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
        block: most likely centers whose distances one pass over the embeddings computes (a matrix-matrix product;
            capped so the block holds at most 2^25 values, and adapting down when few of them get picked); ``1``
            is one matrix-vector product per pick. The picks are the same for every value.
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
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be a positive integer (1: one matrix-vector product per pick), got {block!r}")
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

    columns = _BlockColumns(dist, int(block))
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
        torch.minimum(min_sq, columns.sq_to(pick, min_sq), out=min_sq)
        min_sq[pick] = -math.inf
        pick, sq = next_pick()
        result.radii.append(dist.radius(sq))
    result.indices = picks_so_far
    return result if return_radii else list(picks_so_far)
