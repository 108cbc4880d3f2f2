"""Why low rank works: the LoRA paper's analyses (§7, Appendix G/H) as small functions on weight arrays.

    subspace.py   φ(A1, A2, i, j): how much the top-i and top-j directions of two adapters overlap
                  (Figures 3 and 4)
    amplify.py    ‖Uᵀ W V ᵀ‖_F for ΔW's, W's own and random top-r directions, and the amplification
                  factor ‖ΔW‖_F / ‖Uᵀ W Vᵀ‖_F (Table 7)
    spectrum.py   the singular values of ΔW and its effective rank
    sweep.py      train adapters of several ranks; validation loss against r (Table 6 / App. H.2 in miniature)

The functions take NumPy arrays (host memory: call tinylora.engine.backend.to_host on a CuPy array)
in the paper's layouts: A (r, k), B (d, r), W and ΔW (d, k). They compute in float64.
"""

from tinylora.analysis.amplify import amplification_factor, projection_norm, table7, top_directions
from tinylora.analysis.spectrum import effective_rank, energy_rank, singular_values
from tinylora.analysis.subspace import phi, phi_grid, random_phi_expectation, subspace_similarity, top_right_basis

__all__ = [
    "amplification_factor", "effective_rank", "energy_rank", "phi", "phi_grid", "projection_norm",
    "random_phi_expectation", "singular_values", "subspace_similarity", "table7", "top_directions", "top_right_basis",
]
