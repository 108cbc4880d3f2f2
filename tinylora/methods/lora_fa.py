"""LoRA-FA: LoRA with the down-projection A frozen at its random init (Zhang et al. 2023, arXiv 2308.03303, v1).

    h = W0 x + (α/r) B A x      W0 ∈ R^{d×k} frozen,  A ∈ R^{r×k} frozen (random),  B ∈ R^{d×r} trains (0 at init)

The layer is LoRA's (`tinylora.lora.LoRALinear`): same init, same forward, same merge W0 + (α/r) B A.
The only change is which factor trains, and that changes what backward must keep:

    ∂L/∂B = (α/r) (∂L/∂h) (A x)^T     needs z = A x          (N, r)   N = b·s positions
    ∂L/∂A = (α/r) B^T (∂L/∂h) x^T     needs x                (N, k)   <- LoRA keeps this, LoRA-FA does not
    ∂L/∂x = W0^T ∂L/∂h + (α/r) A^T B^T ∂L/∂h    needs W0, A, B only (parameters, alive anyway)

tinylora's linear op saves an input only when the *other* operand needs a gradient (engine/ops/matmul.py),
so freezing A is all it takes: `linear(x, A)` keeps A (a parameter) and not x, and `linear(z, B)` keeps z.
Per adapted layer the saved activations drop from N(k + r) to N r values (r ≪ k).

|Θ| = d·r per adapted matrix (B only), half of LoRA's r(d + k) for a square W; A is stored (it is random,
so an adapter file must hold it) but not trained.

Defaults: those of `apply_lora` (r = 8, α = r, W_q and W_v, dropout 0). LoRA dropout p > 0 adds its own
saved arrays: the dropout node keeps a bool mask (N, k) (1 byte per value), even with A frozen.

Reference: the paper's v1 method (freeze A, train B with the ordinary optimizer). PEFT's `LoraFAOptimizer`
implements the paper's v2, which also projects B's gradient through (A A^T)^{-1}; that projection is not
done here, so there is no PEFT comparison: the test compares B's gradient with plain LoRA's instead.
"""

from __future__ import annotations

from tinylora.lora.apply import apply_lora, lora_layers


def apply_lora_fa(model, r: int = 8, alpha: float | None = None, targets=("q", "v"), layers=None,
                  dropout: float = 0.0, init: str = "kaiming"):
    """`apply_lora` with every A frozen: only the B factors train. Returns `model` (changed in place).

    Arguments are those of `tinylora.lora.apply_lora`. Calling `mark_only_lora_as_trainable` afterwards
    would make A trainable again (it is plain LoRA's rule); call `freeze_lora_A(model)` to undo that.
    """
    apply_lora(model, r=r, alpha=alpha, targets=targets, layers=layers, dropout=dropout, init=init)
    return freeze_lora_A(model)


def freeze_lora_A(model):
    """Freeze every LoRA layer's A at its current value (no gradient, no optimizer state). Returns `model`."""
    found = False
    for _, layer in lora_layers(model):
        layer.lora_A.requires_grad_(False)
        layer.lora_A.grad = None
        found = True
    if not found:
        raise ValueError("freeze_lora_A: the model has no LoRA layers (call apply_lora_fa or apply_lora first)")
    return model
