"""The paper's §7 analyses on matrices whose answers are known without running any training."""

from __future__ import annotations

import numpy as np
import pytest

from tinylora.analysis import (
    amplification_factor, effective_rank, energy_rank, phi, phi_grid, projection_norm, random_phi_expectation,
    singular_values, subspace_similarity, table7, top_directions, top_right_basis,
)


def test_phi_of_an_adapter_with_itself_is_one_at_every_i_j():
    a = np.random.default_rng(0).normal(size=(8, 32))
    grid = phi_grid(a, a)
    assert grid.shape == (8, 8)
    np.testing.assert_allclose(np.diag(grid), 1.0, atol=1e-12)
    np.testing.assert_allclose(grid, 1.0, atol=1e-12)  # top-i ⊂ top-j or top-j ⊂ top-i: the smaller lies inside
    assert phi(a, 3.0 * a, 5, 5) == pytest.approx(1.0)  # scaling does not move the subspace


def test_phi_of_orthogonal_subspaces_is_zero_and_of_nested_ones_is_one():
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(40, 40)))
    a1 = np.diag([5.0, 4, 3, 2]) @ q[:, :4].T  # (4, 40): right singular vectors = q's first 4 columns
    a2 = np.diag([9.0, 7, 5, 3, 1, 0.5]) @ q[:, 4:10].T  # the next 6: orthogonal to a1's
    np.testing.assert_allclose(phi_grid(a1, a2), 0.0, atol=1e-12)
    a3 = np.diag([9.0, 8, 7, 6, 5, 4]) @ q[:, :6].T  # contains a1's 4 directions
    assert phi(a1, a3, 4, 6) == pytest.approx(1.0)
    assert phi(a1, a3, 4, 2) == pytest.approx(1.0)  # a3's top-2 (q0, q1) lie inside a1's top-4
    assert phi(a1, a3, 1, 1) == pytest.approx(1.0)  # both top directions are q0
    assert phi(a1, a3, 2, 6) == pytest.approx(1.0)


def test_phi_grid_matches_phi_entry_by_entry_and_is_invariant_to_the_stored_layout():
    rng = np.random.default_rng(2)
    a1, a2 = rng.normal(size=(4, 24)), rng.normal(size=(7, 24))
    grid = phi_grid(a1, a2)
    for i in (1, 3, 4):
        for j in (1, 5, 7):
            assert grid[i - 1, j - 1] == pytest.approx(phi(a1, a2, i, j), abs=1e-12)
    # the same subspaces from the (k, r) layout, with left singular vectors: the same φ
    u1 = np.linalg.svd(a1.T, full_matrices=False)[0][:, :3]
    u2 = np.linalg.svd(a2.T, full_matrices=False)[0][:, :5]
    assert subspace_similarity(u1, u2) == pytest.approx(phi(a1, a2, 3, 5), abs=1e-12)


def test_phi_of_independent_random_adapters_averages_max_i_j_over_k():
    """E φ(i, j) = max(i, j)/k for random subspaces: 100 pairs (r = 8 and r = 64, k = 256), fixed seed.

    A z-test per entry: the sample mean of φ(i, j) must lie within 5 standard errors
    (sample standard deviation / sqrt(100)) of max(i, j)/k; with the fixed seed it either always
    passes or always fails, and a correct φ fails it with probability below 1e-6 per entry.
    """
    rng = np.random.default_rng(3)
    k, trials = 256, 100
    grids = np.array([phi_grid(rng.normal(size=(8, k)), rng.normal(size=(64, k))) for _ in range(trials)])
    mean, stderr = grids.mean(axis=0), grids.std(axis=0, ddof=1) / np.sqrt(trials)  # (8, 64) each
    for i, j in ((1, 1), (1, 64), (8, 8), (8, 64), (4, 16), (2, 40)):
        expected = random_phi_expectation(i, j, k)
        z = (mean[i - 1, j - 1] - expected) / stderr[i - 1, j - 1]
        assert abs(z) < 5, f"φ({i},{j}): mean {mean[i - 1, j - 1]:.4f}, expected {expected:.4f}, z = {z:.1f}"
    assert mean[0, 63] > 10 * mean[0, 0]  # and the expectation really grows with max(i, j)


def test_amplification_of_a_scaled_copy_of_ws_top_direction_is_c_over_sigma_1():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(30, 20))
    u, s, vt = np.linalg.svd(w)
    c = 0.37
    delta = c * np.outer(u[:, 0], vt[0])  # ΔW = c u₁ v₁ᵀ
    assert amplification_factor(delta, w, 1) == pytest.approx(c / s[0], rel=1e-10)
    # ΔW along W's top-4 directions, scaled by c: projection = sqrt(Σ σ_p²), factor = c
    delta4 = c * u[:, :4] @ np.diag(s[:4]) @ vt[:4]
    assert amplification_factor(delta4, w, 4) == pytest.approx(c, rel=1e-10)
    row = table7(w, delta4, 4)
    assert row["proj_W"] == pytest.approx(np.sqrt(np.sum(s[:4] ** 2)))  # W's own directions: the upper bound
    assert row["proj_dW"] == pytest.approx(row["proj_W"])  # ΔW shares W's top directions here
    assert row["proj_random"] < row["proj_W"]
    assert row["norm_W"] == pytest.approx(np.linalg.norm(w))


def test_amplification_along_directions_w_does_not_emphasise_is_large():
    """ΔW along W's weakest directions: a small projection, so a large factor (the paper's finding)."""
    rng = np.random.default_rng(5)
    u, _, vt = np.linalg.svd(rng.normal(size=(30, 30)))
    s = np.geomspace(10, 0.01, 30)
    w = u @ np.diag(s) @ vt
    delta = u[:, -1:] @ vt[-1:]  # ‖ΔW‖_F = 1 along σ = 0.01
    assert amplification_factor(delta, w, 1) == pytest.approx(1 / 0.01, rel=1e-8)
    u1, vt1 = top_directions(delta, 1)
    assert projection_norm(w, u1, vt1) == pytest.approx(0.01, rel=1e-8)


def test_spectrum_effective_rank_and_energy_rank():
    rng = np.random.default_rng(6)
    q1, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    q2, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    m = q1[:, :3] @ np.diag([2.0, 2.0, 2.0]) @ q2[:, :3].T  # three equal singular values
    sigma = singular_values(m)
    np.testing.assert_allclose(sigma[:3], 2.0)
    assert effective_rank(sigma) == pytest.approx(3.0, rel=1e-6)
    assert energy_rank(sigma, 0.9) == 3
    assert energy_rank([3.0, 1.0, 0.0], 0.9) == 1  # 9 of 10 units of energy in the first
    assert effective_rank([1.0, 0, 0]) == pytest.approx(1.0)


def test_bad_ranks_raise():
    a = np.zeros((4, 10))
    with pytest.raises(ValueError, match="i must be in 1..min"):
        top_right_basis(a, 5)
    with pytest.raises(ValueError, match="r must be in 1..min"):
        top_directions(np.zeros((3, 3)), 4)
