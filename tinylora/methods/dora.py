"""DoRA: weight-decomposed low-rank adaptation (Liu et al. 2024, ICML, arXiv 2402.09353, eq. 5).

    W' = m ⊙ (W0 + s B A) / ‖W0 + s B A‖_c          h = W' x + b

split W0 into a magnitude and a direction, adapt the direction with LoRA and train the magnitude alone:

    W0 ∈ R^{d×k}   base.weight (out, in)    frozen
    A  ∈ R^{r×k}   lora_A                   trainable, kaiming-uniform (as LoRA)
    B  ∈ R^{d×r}   lora_B                   trainable, 0: W' = W0 at init
    m  ∈ R^{d}     magnitude                trainable, ‖W0‖_c at init
    ‖V‖_c          the L2 norm of each output feature's weights: row j of V in this (out, in) layout,
                   ‖V[j, :]‖₂ (the paper writes W as (in, out), hence "column"; its author and PEFT agree)
    s = α / r      LoRA's scaling, inside the norm as PEFT puts it

|Θ| = r(d + k) + d per adapted d×k weight (LoRA plus one magnitude per output feature).

The norm n = ‖W0 + s B A‖_c is treated as a constant in backward (the paper's §4.3, PEFT, and this
code: it is computed from raw arrays, outside the graph), so ∇_m is exact and ∇_{A,B} is (m/n)·∇_{W'}
passed through the LoRA path, without the projection term of the paper's eq. 6. The forward never
forms W'; like PEFT it computes, with x̃ = dropout(x),

    h = W0 x + b + (m/n − 1) ⊙ W0 x̃ + (m/n) ⊙ s B A x̃      = (m/n) ⊙ (W0 x + s B A x) + b  when x̃ = x

Merging writes W' into base.weight; unmerging needs n from merge time (cached), since it cannot be
recovered from W'. A zero row of W0 (or of W0 + sBA) has no direction: that is an error, not a NaN.

Defaults: as LoRA (r, α, targets); the authors advise a slightly lower learning rate than LoRA's and
note half the rank often suffices. Checked against PEFT's `LoraConfig(use_dora=True)` on HF GPT-2 in
float64 (tests/test_methods_peft.py): logits, every gradient, merged weights.
"""

from __future__ import annotations

from tinylora import functional as F
from tinylora import nn
from tinylora.engine.tensor import Tensor
from tinylora.lora.layer import LoRALinear
from tinylora.methods.wrap import wrap_linears


class DoRALinear(LoRALinear):
    """A LoRALinear whose output is renormalised per output feature to a trained magnitude m (d,).

    Args as LoRALinear. Raises ValueError if a row of W0 is zero (it has no direction to keep).
    Attributes added: magnitude (d,), the norm cached at merge time (`merged_norm`, None when unmerged).
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0,
                 init: str = "kaiming", rslora: bool = False):
        super().__init__(base, r, alpha=alpha, dropout=dropout, init=init, rslora=rslora)
        norms = self._row_norms(add_delta=False)  # (d,) = ‖W0‖_c
        self.magnitude = nn.Parameter(Tensor(norms, dtype=base.weight.dtype))
        self.merged_norm = None  # n at merge time, for unmerge

    def adapter_parameters(self) -> list:
        return [self.lora_A, self.lora_B, self.magnitude]

    def _row_norms(self, add_delta: bool = True):
        """n = ‖W0 + s B A‖_c as a raw array (d,): no graph, hence constant in backward. Zero rows are an error."""
        W = self.base.weight.data
        if add_delta:
            W = W + self.delta_weight()  # (d, k)
        xp = self.base.weight.device.xp
        n = xp.sqrt((W * W).sum(axis=1))  # (d,)
        if not xp.all(n > 0).item():
            rows = xp.nonzero(n == 0)[0][:5].tolist()
            which = "W0" if not add_delta else "W0 + sBA"
            raise ValueError(f"DoRALinear: rows {rows} of {which} are zero; a zero row has no direction "
                             "for DoRA to keep (leave this layer out of the targets)")
        return n

    def forward(self, x):
        h = self.base(x)  # (..., d): W0 x + b (W' x + b when merged)
        if self.merged or not self.enabled:
            return h
        scale = self.magnitude / Tensor(self._row_norms())  # (d,): m / n, gradient to m only
        x_tilde = self.lora_dropout(x)  # the same object as x without dropout
        lora = F.linear(F.linear(x_tilde, self.lora_A) * self.scaling, self.lora_B)  # (..., d): s B A x̃
        if x_tilde is x:  # reuse the base result, less its bias (PEFT does the same)
            w0x = h if self.base.bias is None else h - self.base.bias  # (..., d): W0 x
        else:
            w0x = F.linear(x_tilde, self.base.weight)  # (..., d): W0 x̃, no bias
        return h + w0x * (scale - 1.0) + lora * scale

    # ------------------------------------------------------------ merging
    def merge(self, safe: bool = True) -> "DoRALinear":
        """W0 <- (m/n) ⊙ (W0 + s B A) row by row, caching n for `unmerge`. Does nothing if merged.

        W' is computed aside first; with safe=True (the default, as LoRALinear) a NaN or inf in it
        is refused before W0 changes. A zero magnitude is refused too (the merge could not be undone).
        """
        if not self.enabled:
            raise RuntimeError("DoRALinear: cannot merge a disabled adapter; call enable() first")
        if not self.merged:
            xp = self.base.weight.device.xp
            n = self._row_norms()
            scale = (self.magnitude.data / n)[:, None]  # (d, 1)
            if not (scale != 0).all().item():
                raise ValueError("DoRALinear: a magnitude is 0, so the merge could not be undone; not merging")
            merged = scale * (self.base.weight.data + self.delta_weight())  # (d, k): W'
            if safe and not xp.isfinite(merged).all().item():
                raise ValueError("DoRALinear: W' has NaN or inf (in lora_A, lora_B or magnitude); W0 is unchanged")
            self.base.weight.data[...] = merged
            self.merged_norm, self.merged = n, True
        return self

    def unmerge(self) -> "DoRALinear":
        """W0 <- W' / (m/n) − s B A with the n cached by `merge`. Does nothing if not merged."""
        if self.merged:
            scale = (self.magnitude.data / self.merged_norm)[:, None]  # (d, 1)
            self.base.weight.data[...] = self.base.weight.data / scale - self.delta_weight()
            self.merged_norm, self.merged = None, False
        return self

    def extra_repr(self) -> str:
        return super().extra_repr() + ", dora=True"


def apply_dora(model, r: int = 8, alpha: float | None = None, targets=("q", "v"), layers=None,
               dropout: float = 0.0, init: str = "kaiming", rslora: bool = False):
    """Put a DoRALinear on each target Linear (arguments as `tinylora.lora.apply_lora`). Returns `model`.

    rslora=True uses s = α/√r (tinylora.methods.rslora). Only A, B and m train afterwards.
    """
    return wrap_linears(model, lambda linear: DoRALinear(linear, r, alpha=alpha, dropout=dropout, init=init,
                                                         rslora=rslora), targets=targets, layers=layers,
                        who="apply_dora")
