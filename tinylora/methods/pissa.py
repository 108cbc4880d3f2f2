"""PiSSA and OLoRA: start LoRA from the principal part of W0 instead of from zero.

    W0 = W_res + s B A            h = W_res x + s B A x       (the same function at init)

PiSSA (Meng et al. 2024, arXiv 2404.02948): from the SVD W0 = U Σ Vᵀ, keep the top r triplets,

    A = diag(√(σ_{1..r}/s)) V_rᵀ   (r, k)      B = U_r diag(√(σ_{1..r}/s))   (d, r)

so s B A is the best rank-r approximation of W0 (Eckart–Young) and the frozen residual W_res holds the
other singular triplets: ‖W_res‖₂ = σ_{r+1}(W0). Training then moves the principal directions first.
OLoRA (Büyükakyüz 2024, arXiv 2406.01775): from the QR decomposition W0 = Q R,

    B = Q[:, :r]   (d, r), orthonormal columns        A = R[:r, :]   (r, k)      (no division by s)

Both: |Θ| = r(d + k) per adapted d×k weight, as LoRA; the base weight is REPLACED by W_res, so
disabling the adapter no longer gives the original model. s = α/r with α = r by default (s = 1, the
PiSSA authors' advice); rslora=True uses α/√r (decided before the decomposition, which depends on s).
Checked against PEFT's init_lora_weights="pissa" / "olora" (tests/test_methods_peft.py). PEFT refuses
float64 for PiSSA; tinylora decomposes in the weight's own dtype, float32 or float64.

Saving: an adapter of A and B alone cannot be applied to the original W0 (it needs W_res). As PEFT's
`path_initial_model_for_weight_conversion` does, `pissa_to_lora` rewrites a trained layer as a plain
LoRA of rank 2r on the original W0 = W_res + s B0 A0, using the initial A0, B0 the layer keeps:

    s B A x + W_res x = W0 x + s (B A − B0 A0) x = W0 x + s [B  B0] [A; −A0] x
"""

from __future__ import annotations

from tinylora import nn
from tinylora.engine.backend import device_of
from tinylora.lora.apply import lora_layers, mark_only_lora_as_trainable
from tinylora.lora.layer import LoRALinear
from tinylora.methods.wrap import wrap_linears

INITS = ("pissa", "olora")


def principal_factors(W, r: int, scaling: float, method: str = "pissa"):
    """(A (r, k), B (d, r)) as raw arrays, with s B A the principal rank-r part of W (d, k): see above."""
    xp = device_of(W).xp
    if method == "pissa":
        U, S, Vh = xp.linalg.svd(W, full_matrices=False)  # W = U diag(S) Vh, S descending
        root = xp.sqrt(S[:r] / scaling)  # (r,): √(σ_i / s)
        return root[:, None] * Vh[:r], U[:, :r] * root[None, :]  # A = diag(root) V_rᵀ, B = U_r diag(root)
    if method == "olora":
        Q, R = xp.linalg.qr(W)  # (d, min(d, k)), (min(d, k), k)
        return R[:r].copy(), Q[:, :r].copy()  # A = R[:r], B = Q[:, :r]
    raise ValueError(f"principal_factors: method must be one of {INITS}, got {method!r}")


class PiSSALinear(LoRALinear):
    """A LoRALinear started from W0's principal part (init "pissa" or "olora"), W0 replaced by W_res.

    Args: base, r, alpha, dropout as LoRALinear; init: "pissa" (SVD) or "olora" (QR); rslora: s = α/√r.
    Attributes added: initial_A (r, k), initial_B (d, r): raw copies of A0, B0 (not trained, not in the
    state dict), kept for `pissa_to_lora`; the cost is r(d + k) numbers per layer. original (d, k): W0's own
    array, kept so that `original_weight` and `pissa_to_lora` give W0 back bit for bit (W_res + s B0 A0
    is W0 only up to rounding, and an adapter for the original base is checked against its weights' hash).
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0,
                 init: str = "pissa", rslora: bool = False):
        if init not in INITS:
            raise ValueError(f"PiSSALinear: init must be one of {INITS}, got {init!r}")
        super().__init__(base, r, alpha=alpha, dropout=dropout, rslora=rslora)  # A, B: replaced just below
        self.init = init
        A, B = principal_factors(base.weight.data, self.r, self.scaling, init)
        self.lora_A.data[...], self.lora_B.data[...] = A, B
        self.initial_A, self.initial_B = A.copy(), B.copy()
        # W_res = W0 − s B A, as a new array: W0's array stays untouched (all_or_nothing can put it back)
        self.original = base.weight.data
        base.weight.data = self.original - self.delta_weight()

    def reset_lora_parameters(self) -> None:
        """Back to A0, B0 (W_res is unchanged: the layer computes W0 again). LoRALinear's init is not used."""
        if not hasattr(self, "initial_A"):  # called by LoRALinear.__init__, before the decomposition
            return super().reset_lora_parameters()
        if self.merged:
            raise RuntimeError("PiSSALinear: unmerge before resetting A and B")
        self.lora_A.data[...], self.lora_B.data[...] = self.initial_A, self.initial_B

    def original_weight(self):
        """W0 (d, k) as it was before the decomposition (= W_res + s B0 A0, exactly: the kept array)."""
        return self.original

    def extra_repr(self) -> str:
        return super().extra_repr() + f", init={self.init}"


def apply_pissa(model, r: int = 8, alpha: float | None = None, targets=("q", "v"), layers=None,
                dropout: float = 0.0, init: str = "pissa", rslora: bool = False):
    """Put a PiSSALinear (init "pissa" or "olora") on each target Linear. Returns `model`.

    Arguments as `tinylora.lora.apply_lora`; the model computes the same function afterwards.
    """
    return wrap_linears(model, lambda linear: PiSSALinear(linear, r, alpha=alpha, dropout=dropout, init=init,
                                                          rslora=rslora), targets=targets, layers=layers,
                        who="apply_pissa")


def apply_olora(model, r: int = 8, alpha: float | None = None, targets=("q", "v"), layers=None,
                dropout: float = 0.0, rslora: bool = False):
    """`apply_pissa(..., init="olora")`."""
    return apply_pissa(model, r, alpha, targets, layers, dropout, init="olora", rslora=rslora)


def pissa_to_lora(model):
    """Replace every PiSSALinear by a plain LoRALinear of rank 2r on the ORIGINAL W0, same function. Returns `model`.

        W0 = W_res + s B0 A0,   A' = [A; −A0] (2r, k),   B' = [B  B0] (d, 2r),   α' = 2α  (so α'/r' = α/r)

    Afterwards `save_adapter` / `export_peft` write an adapter for the original base model, as PEFT's
    conversion does (rank 2r). Merged layers are unmerged first. Under rsLoRA α' = √2 α keeps α'/√r'.
    Afterwards only the A and B of LoRA layers train (as after apply_lora).
    """
    converted = False
    for name, layer in list(lora_layers(model)):
        if not isinstance(layer, PiSSALinear):
            continue
        layer.unmerge()
        xp = layer.base.weight.device.xp
        layer.base.weight.data = layer.original_weight()
        rslora = layer.rslora
        alpha = layer.alpha * (2 ** 0.5 if rslora else 2)
        plain = LoRALinear(layer.base, 2 * layer.r, alpha=alpha, dropout=layer.lora_dropout.p, rslora=rslora)
        plain.lora_A.data[...] = xp.concatenate([layer.lora_A.data, -layer.initial_A])  # (2r, k)
        plain.lora_B.data[...] = xp.concatenate([layer.lora_B.data, layer.initial_B], axis=1)  # (d, 2r)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, plain)
        converted = True
    if converted:
        mark_only_lora_as_trainable(model, bias="none")
    return model
