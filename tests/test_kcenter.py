"""k-center greedy against a brute-force float64 loop written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_select.selection import KCenterResult, k_center_greedy


def brute_force(x: np.ndarray, k: int, first: int | None, metric: str = "euclidean",
                initial: list[int] | None = None) -> tuple[list[int], list[float]]:
    """The textbook loop: float64 distances by differences, farthest row next, ties to the lowest index."""
    x = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)

    def dist(c: int) -> np.ndarray:
        d = np.sqrt(((x - x[c]) ** 2).sum(1))
        return d**2 / 2 if metric == "cosine" else d

    chosen = set(initial or [])
    best = np.full(len(x), np.inf)
    for c in initial or []:
        best = np.minimum(best, dist(c))
    picks, radii = [], []
    nxt = first
    if initial:
        masked = np.where([i in chosen for i in range(len(x))], -np.inf, best)
        nxt = int(np.argmax(masked))
    while len(picks) < k:
        picks.append(nxt)
        chosen.add(nxt)
        best = np.minimum(best, dist(nxt))
        masked = np.array([-np.inf if i in chosen else best[i] for i in range(len(x))])
        radii.append(float(masked.max()) if np.isfinite(masked.max()) else 0.0)
        nxt = int(np.argmax(masked))
    return picks, radii


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("precision", ["mixed", "float64"])
@pytest.mark.parametrize("seed", [0, 7])
def test_matches_brute_force_given_the_same_first_center(metric, precision, seed):
    x = np.random.default_rng(seed).normal(size=(300, 12)).astype(np.float32)
    res = k_center_greedy(x, 40, seed=seed, metric=metric, precision=precision, return_radii=True)
    assert isinstance(res, KCenterResult)
    picks, radii = brute_force(x, 40, res.indices[0], metric)
    assert res.indices == picks
    np.testing.assert_allclose(res.radii, radii, rtol=1e-9, atol=1e-12)
    assert all(a >= b - 1e-12 for a, b in zip(res.radii, res.radii[1:], strict=False))  # coverage only improves


def test_same_seed_same_picks_and_the_seed_matters():
    x = np.random.default_rng(1).normal(size=(500, 8))
    a = k_center_greedy(x, 20, seed=3)
    assert a == k_center_greedy(x, 20, seed=3)
    firsts = {k_center_greedy(x, 1, seed=s)[0] for s in range(5)}
    assert len(firsts) > 1


def test_initial_rows_are_centers_and_never_picked():
    x = np.random.default_rng(2).normal(size=(200, 6))
    initial = [5, 17, 42, 99]
    res = k_center_greedy(x, 15, initial=initial, return_radii=True)
    assert not set(res.indices) & set(initial)
    picks, radii = brute_force(x, 15, None, initial=initial)
    assert res.indices == picks  # the first pick is the row farthest from the initial rows, no random start
    assert res.initial_radius == pytest.approx(
        float(np.max([np.min([np.linalg.norm(x[i] - x[c]) for c in initial]) for i in range(200)]))
    )
    assert res.indices == k_center_greedy(x, 15, initial=initial, seed=123)  # seed unused with initial


def test_float32_near_ties_are_settled_exactly():
    # A large common offset: float32 distances cannot tell these rows apart, float64 can.
    rng = np.random.default_rng(0)
    x = 1000.0 + rng.normal(scale=1e-3, size=(400, 16))
    res = k_center_greedy(x, 30, seed=1, precision="mixed")
    assert res == brute_force(x, 30, res[0])[0]


def test_exact_duplicates_tie_to_the_lowest_row_and_fall_back_to_float64():
    base = np.random.default_rng(3).normal(size=(4, 5))
    x = np.repeat(base, 150, axis=0)  # 600 rows, 4 distinct points: after 4 picks everything is covered
    res = k_center_greedy(x, 10, seed=0, return_radii=True)
    assert res.indices == brute_force(x, 10, res.indices[0])[0]
    assert res.radii[3:] == [0.0] * 7


def test_k_larger_than_rows_gives_all_rows_with_a_warning():
    x = np.random.default_rng(4).normal(size=(6, 3))
    with pytest.warns(UserWarning, match="k=10 is more than the 4 rows"):
        picks = k_center_greedy(x, 10, initial=[0, 1])
    assert sorted(picks) == [2, 3, 4, 5]


def test_empty_and_zero():
    with pytest.warns(UserWarning, match="no rows"):
        assert k_center_greedy(np.zeros((0, 4)), 3) == []
    assert k_center_greedy(np.ones((3, 2)), 0) == []


def test_torch_input_and_explicit_cpu_device():
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    picks = k_center_greedy(x, 5, device="cpu", seed=2)
    assert picks == k_center_greedy(x.numpy(), 5, seed=2)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="2-D"):
        k_center_greedy(np.zeros(5), 1)
    bad = np.zeros((3, 2))
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="row 1"):
        k_center_greedy(bad, 1)
    with pytest.raises(ValueError, match="all zeros"):
        k_center_greedy(np.zeros((3, 2)), 1, metric="cosine")
    with pytest.raises(ValueError, match="metric"):
        k_center_greedy(np.ones((3, 2)), 1, metric="manhattan")
    with pytest.raises(ValueError, match="initial"):
        k_center_greedy(np.ones((3, 2)), 1, initial=[7])
    with pytest.raises(ValueError, match="different lengths"):
        k_center_greedy([[1.0, 2.0], [1.0]], 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = np.random.default_rng(5).normal(size=(2000, 32)).astype(np.float32)
    assert k_center_greedy(x, 50, device="cuda") == k_center_greedy(x, 50, device="cpu")
