"""The singular value spectrum of an update ΔW (d, k) and two ways to read off its rank.

    σ_1 >= σ_2 >= ... >= 0             the singular values of ΔW (at most r of them nonzero for LoRA)
    effective rank  exp(H(p)),  p_i = σ_i / Σ σ_j,  H = -Σ p_i log p_i      (Roy & Vetterli 2007)
                    = n for n equal singular values, 1 for a rank-1 matrix; continuous in between
    energy rank     the fewest top singular values whose squares hold `fraction` of ‖ΔW‖_F²
"""

from __future__ import annotations

import numpy as np


def singular_values(m):
    """σ (min(d, k),) of M (d, k), largest first, in float64."""
    return np.linalg.svd(np.asarray(m, dtype=np.float64), compute_uv=False)


def effective_rank(sigma) -> float:
    """exp of the entropy of the normalised singular values (Roy & Vetterli 2007)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    p = sigma[sigma > 0] / sigma.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def energy_rank(sigma, fraction: float = 0.9) -> int:
    """The smallest n with Σ_{i<=n} σ_i² >= fraction · Σ σ_i²."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"energy_rank: fraction must be in (0, 1], got {fraction}")
    energy = np.cumsum(np.asarray(sigma, dtype=np.float64) ** 2)
    return int(np.searchsorted(energy, fraction * energy[-1] * (1 - 1e-12)) + 1)
