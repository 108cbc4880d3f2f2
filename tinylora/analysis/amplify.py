"""How ΔW relates to W (the LoRA paper §7.3, Table 7, Appendix H.4).

Project W (d, k) onto an r-dimensional pair of subspaces, U (d, r) on the output side
and V (r, k) on the input side (V's rows orthonormal, as an SVD's Vᵀ):

    ‖Uᵀ W Vᵀ‖_F          (r, d) (d, k) (k, r) -> (r, r)

how much of W lives in those directions. Table 7 takes U, V from
  - ΔW's own top-r singular vectors ("ΔW_q"),
  - W's top-r singular vectors ("W_q": the upper bound, = sqrt(Σ_{p<=r} σ_p(W)²)),
  - a random Gaussian matrix's top-r singular vectors ("Random": the floor),
and the amplification factor

    ‖ΔW‖_F / ‖Uᵀ W Vᵀ‖_F     (U, V from ΔW)

says by how much ΔW enlarges the directions it shares with W. The paper, GPT-3 W_q
of layer 48: ‖W_q‖_F = 61.95; r = 4: 0.32 / 21.67 / 0.02, factor 6.91 / 0.32 ≈ 21.5;
r = 64: 1.90 / 37.71 / 0.33, factor 3.57 / 1.90 ≈ 1.9.
If ΔW = c u₁ v₁ᵀ for W's own top pair, then Uᵀ W Vᵀ = σ₁(W) and the factor is c / σ₁(W).
"""

from __future__ import annotations

import numpy as np


def top_directions(m, r: int):
    """U (d, r), Vᵀ (r, k): the top-r left and right singular vectors of M (d, k)."""
    m = np.asarray(m, dtype=np.float64)
    if not 1 <= r <= min(m.shape):
        raise ValueError(f"top_directions: r must be in 1..min(d, k) = {min(m.shape)}, got {r}")
    u, _, vt = np.linalg.svd(m, full_matrices=False)
    return u[:, :r], vt[:r]


def projection_norm(w, u, vt) -> float:
    """‖Uᵀ W Vᵀ‖_F for W (d, k), U (d, r), Vᵀ (r, k)."""
    return float(np.linalg.norm(u.T @ np.asarray(w, dtype=np.float64) @ vt.T))


def amplification_factor(delta, w, r: int) -> float:
    """‖ΔW‖_F / ‖Uᵀ W Vᵀ‖_F with U, V the top-r singular vectors of ΔW."""
    u, vt = top_directions(delta, r)
    return float(np.linalg.norm(np.asarray(delta, dtype=np.float64)) / projection_norm(w, u, vt))


def table7(w, delta, r: int, seed: int = 0) -> dict:
    """One column group of Table 7 for W (d, k) and its update ΔW (d, k) at rank r.

    Returns {"r", "norm_W", "norm_dW", "proj_dW", "proj_W", "proj_random", "amplification"}.
    The random directions come from a Gaussian matrix of W's shape drawn with `seed`.
    """
    w = np.asarray(w, dtype=np.float64)
    random = np.random.default_rng(seed).normal(size=w.shape)
    proj = {name: projection_norm(w, *top_directions(m, r)) for name, m in
            (("proj_dW", delta), ("proj_W", w), ("proj_random", random))}
    norm_dw = float(np.linalg.norm(delta))
    return {"r": r, "norm_W": float(np.linalg.norm(w)), "norm_dW": norm_dw, **proj,
            "amplification": norm_dw / proj["proj_dW"]}
