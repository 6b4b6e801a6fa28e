"""Blocked k-center distance updates (several likely centers per pass over the embeddings): the picks stay those of
a brute-force float64 k-center, on random data, near-ties, duplicates and tight clusters, for both metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_kcenter import brute_force

from hf_select.selection import k_center_greedy
from hf_select.selection import kcenter as kcenter_module


def near_ties(seed: int) -> np.ndarray:
    """A large common offset: float32 distances cannot tell these rows apart, float64 can."""
    return 1000.0 + np.random.default_rng(seed).normal(scale=1e-3, size=(400, 16))


def duplicates(seed: int) -> np.ndarray:
    """Four distinct points, each repeated: the run falls back to float64 once everything is covered."""
    return np.repeat(np.random.default_rng(seed).normal(size=(4, 5)), 100, axis=0)


def clusters(seed: int) -> np.ndarray:
    """Tight, well-separated clusters: the likely next centers of a block often sit in one cluster."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=10.0, size=(12, 8))
    return (means[rng.integers(0, 12, 600)] + rng.normal(scale=0.05, size=(600, 8))).astype(np.float32)


def random_rows(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(500, 24)).astype(np.float32)


@pytest.mark.parametrize("make", [random_rows, near_ties, duplicates, clusters])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("block", [2, 5, 32])
def test_blocked_picks_match_brute_force_float64(make, metric, block):
    x = make(3)
    k = 30
    res = k_center_greedy(x, k, seed=1, metric=metric, block=block, return_radii=True)
    picks, radii = brute_force(x, k, res.indices[0], metric)
    assert res.indices == picks
    np.testing.assert_allclose(res.radii, radii, rtol=1e-9, atol=1e-12)
    assert res.indices == k_center_greedy(x, k, seed=1, metric=metric, block=1)  # the unblocked loop agrees


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_blocked_with_initial_rows_and_float64(metric):
    x = random_rows(4)
    initial = [3, 50, 77]
    for precision in ("mixed", "float64"):
        res = k_center_greedy(x, 25, initial=initial, metric=metric, precision=precision, block=8)
        assert res == brute_force(x, 25, None, metric, initial=initial)[0]


class _Recorder(kcenter_module._BlockColumns):
    made: list[kcenter_module._BlockColumns] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _Recorder.made.append(self)


def test_blocks_serve_several_picks_per_pass(monkeypatch):
    """On random data most picks come from a block already computed: far fewer passes than picks."""
    monkeypatch.setattr(kcenter_module, "_BlockColumns", _Recorder)
    _Recorder.made.clear()
    x = np.random.default_rng(0).normal(size=(5000, 64)).astype(np.float32)
    picks = k_center_greedy(x, 200, seed=0, block=32)
    blocks = _Recorder.made[-1].blocks
    assert blocks * 3 < len(picks), blocks
    k_center_greedy(x, 20, seed=0, block=1)
    assert _Recorder.made[-1].blocks == 0  # block=1: one matrix-vector product per pick, no block


def test_block_is_capped_by_the_block_memory(monkeypatch):
    monkeypatch.setattr(kcenter_module, "_BLOCK_ELEMENTS", 1000)
    monkeypatch.setattr(kcenter_module, "_BlockColumns", _Recorder)
    _Recorder.made.clear()
    x = random_rows(5)  # 500 rows: at most 2 columns of 500 dot products
    picks = k_center_greedy(x, 20, seed=2, block=32)
    assert _Recorder.made[-1].max_cols == 2
    assert picks == brute_force(x, 20, picks[0])[0]


def _mkldnn_matmul():
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    if matmul is None or not hasattr(matmul, "fp32_precision"):
        pytest.skip("this torch has no torch.backends.mkldnn.matmul.fp32_precision")
    return matmul


def test_reduced_precision_matmul_settings_are_overridden_and_restored(monkeypatch):
    """A caller's bf16 float32-matmul setting would break the float32 error bound: the block product runs in IEEE
    float32 and the caller's setting is back afterwards."""
    matmul = _mkldnn_matmul()
    seen = []
    real_mm = torch.Tensor.__matmul__

    def spy(a, b):
        seen.append(matmul.fp32_precision)
        return real_mm(a, b)

    old = matmul.fp32_precision
    try:
        matmul.fp32_precision = "bf16"
        monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
        x = near_ties(6)
        picks = k_center_greedy(x, 20, seed=0, block=8, initial=[1, 2])
        monkeypatch.undo()
        assert matmul.fp32_precision == "bf16"
    finally:
        matmul.fp32_precision = old
    assert seen and set(seen) == {"ieee"}
    assert picks == brute_force(x, 20, None, initial=[1, 2])[0]


def test_bad_block_is_named():
    x = np.ones((3, 2))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="block must be a positive integer"):
            k_center_greedy(x, 1, block=bad)


def test_overflowing_row_is_named():
    x = np.ones((3, 2))
    x[2] = 1e200
    with pytest.raises(ValueError, match="row 2 is too large"):
        k_center_greedy(x, 1)
