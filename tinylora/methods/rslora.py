"""rsLoRA: rank-stabilised scaling (Kalajdzievski 2023, arXiv 2312.03732).

    h = W0 x + s B A x,   s = α / √r   (LoRA: s = α / r)

Shapes and parameters are LoRA's (A (r, k), B (d, r), |Θ| = r(d + k) per adapted d×k weight); only the
constant s changes. Why √r: starting from B = 0, one SGD step with learning rate η gives

    ΔB = -η s G (A x)ᵀ,   ΔW = s ΔB A = -η s² G xᵀ AᵀA,   E[AᵀA] = r/(3k) · I  (A ~ U(±1/√k))

so the first update has size ∝ s² r: ∝ 1/r under α/r (a larger rank learns slower), independent of r
under α/√r. Tested in tests/test_methods_rslora_loraplus.py; checked against PEFT's `LoraConfig(use_rslora=True)`.

Defaults: α = r when None (as LoRALinear), so s = √r; PEFT's default lora_alpha is 8.
`make_rslora(layer)` switches any LoRA-like layer (DoRA, PiSSA, ...) to this scaling: that is how
rsLoRA composes with the other methods.
"""

from __future__ import annotations

from tinylora.lora.apply import apply_lora
from tinylora.lora.layer import LoRALinear, lora_scaling


def rslora_scaling(alpha: float, r: int) -> float:
    """s = α / √r."""
    return lora_scaling(alpha, r, rslora=True)


def make_rslora(layer):
    """Give one LoRA-like layer the rank-stabilised scaling s = α/√r (in place). Returns the layer.

    Call it before the layer is merged and before an initialisation that depends on s (PiSSA, OLoRA).
    """
    if not isinstance(layer, LoRALinear):
        raise TypeError(f"make_rslora: rsLoRA rescales a LoRA-like layer's α/r; {type(layer).__name__} has no "
                        "such scaling (GLoRA's supports are unscaled)")
    if layer.merged:
        raise RuntimeError("make_rslora: unmerge the layer first (W0 holds ΔW with the old scaling)")
    layer.scaling = rslora_scaling(layer.alpha, layer.r)
    layer.rslora = True
    return layer


def apply_rslora(model, r: int = 8, alpha: float | None = None, targets=("q", "v"), layers=None,
                 dropout: float = 0.0, init: str = "kaiming"):
    """`apply_lora` with s = α/√r in every layer. Arguments as `tinylora.lora.apply_lora`. Returns `model`."""
    return apply_lora(model, r=r, alpha=alpha, targets=targets, layers=layers, dropout=dropout, init=init, rslora=True)
