"""Subspace similarity between two adapters (the LoRA paper, eq. 4 and Appendix G).

For A ∈ R^{r×k} (LoRALinear.lora_A), its right singular vectors live in R^k, the
layer's input space: A = U Σ Vᵀ, Vᵀ (r, k). Take the top-i of them as the columns of

    U_A^i = Vᵀ[:i].T ∈ R^{k×i}          (orthonormal columns)

(the paper calls this matrix U_A^i: "the right-singular unitary matrix" of A).
The normalised subspace similarity of two adapters is

    φ(A1, A2, i, j) = ‖U_{A1}^{iᵀ} U_{A2}^{j}‖_F² / min(i, j)   ∈ [0, 1]

= the mean of the squared cosines of the principal angles between the two subspaces:
1 when the smaller subspace lies inside the larger one, 0 when they are orthogonal.
For two independent random subspaces of dimensions i and j in R^k,
E‖U_iᵀ U_j‖_F² = i j / k, so E φ = max(i, j) / k: the baseline to compare against
(large when k is small: with k = 128 and j = 64 it is already 0.5).
"""

from __future__ import annotations

import numpy as np


def top_right_basis(a, i: int):
    """U_A^i (k, i): the top-i right singular vectors of A (r, k), as orthonormal columns."""
    a = np.asarray(a, dtype=np.float64)
    if not 1 <= i <= min(a.shape):
        raise ValueError(f"top_right_basis: i must be in 1..min(r, k) = {min(a.shape)}, got {i}")
    _, _, vt = np.linalg.svd(a, full_matrices=False)  # vt (min(r, k), k), rows sorted by singular value
    return vt[:i].T


def subspace_similarity(u1, u2) -> float:
    """ψ(U1, U2) = ‖U1ᵀ U2‖_F² / min(i, j) for orthonormal columns U1 (k, i), U2 (k, j)."""
    u1, u2 = np.asarray(u1, dtype=np.float64), np.asarray(u2, dtype=np.float64)
    if u1.shape[0] != u2.shape[0]:
        raise ValueError(f"subspace_similarity: bases live in different spaces, {u1.shape} vs {u2.shape}")
    return float(np.sum((u1.T @ u2) ** 2) / min(u1.shape[1], u2.shape[1]))


def phi(a1, a2, i: int, j: int) -> float:
    """φ(A1, A2, i, j): the overlap of the top-i directions of A1 with the top-j of A2 (both (r, k))."""
    return subspace_similarity(top_right_basis(a1, i), top_right_basis(a2, j))


def phi_grid(a1, a2, max_i: int | None = None, max_j: int | None = None):
    """φ(A1, A2, i, j) for i = 1..max_i, j = 1..max_j (default: the ranks): a (max_i, max_j) array.

    Figure 3 plots this for A_{r=8} and A_{r=64}; Figure 4 for two r = 64 adapters of different seeds.
    One SVD per adapter: every entry reuses the same right singular vectors.
    """
    max_i = max_i or min(np.shape(a1))
    max_j = max_j or min(np.shape(a2))
    u1, u2 = top_right_basis(a1, max_i), top_right_basis(a2, max_j)
    overlap = (u1.T @ u2) ** 2  # (max_i, max_j): squared cosines between single directions
    cumulative = overlap.cumsum(axis=0).cumsum(axis=1)  # [i-1, j-1] = ‖U1^iᵀ U2^j‖_F²
    sizes = np.minimum.outer(np.arange(1, max_i + 1), np.arange(1, max_j + 1))
    return cumulative / sizes


def random_phi_expectation(i: int, j: int, k: int) -> float:
    """E φ for independent, uniformly random subspaces of dimensions i and j in R^k: max(i, j) / k."""
    return max(i, j) / k
