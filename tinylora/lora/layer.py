"""LoRALinear: a frozen Linear plus a trainable low-rank update (Hu et al. 2021, eq. 3).

    h = W0 x + ΔW x = W0 x + (α/r) B A x

In the paper's notation, for a wrapped Linear(in_features=k, out_features=d):

    W0 ∈ R^{d×k}   base.weight   (out_features, in_features)   frozen, called unchanged
    A  ∈ R^{r×k}   lora_A        (r, in_features)               trainable, random at init
    B  ∈ R^{d×r}   lora_B        (out_features, r)              trainable, zero at init
    ΔW = (α/r) B A ∈ R^{d×k}     `delta_weight()`               rank <= r

With batched row vectors x (..., k) the code computes

    h = base(x) + scaling * (dropout(x) @ A.T) @ B.T        (..., k) -> (..., r) -> (..., d)

The low-rank path costs r(d + k) parameters instead of d k, and never forms ΔW
(except to merge it).
"""

from __future__ import annotations

import math
import numbers

from tinylora import functional as F
from tinylora import nn
from tinylora.engine.tensor import zeros

INITS = ("kaiming", "gaussian")


def lora_scaling(alpha: float, r: int, rslora: bool = False) -> float:
    """s = α/r, or rsLoRA's rank-stabilised s = α/√r (tinylora/methods/rslora.py) when `rslora`."""
    return alpha / math.sqrt(r) if rslora else alpha / r


class LoRALinear(nn.Module):
    """Wraps a frozen nn.Linear W0 with the low-rank update ΔW = (α/r) B A.

    Args:
        base:    the nn.Linear to adapt (d = out_features, k = in_features). Its weight
                 is frozen here (requires_grad=False); its bias is left as it is
                 (`mark_only_lora_as_trainable` decides about biases). It is called unchanged.
        r:       the rank, 1 <= r <= min(d, k).
        alpha:   α; the update is scaled by α/r. None means α = r, i.e. scaling 1. The paper
                 sets α to the first r it tries and does not tune it (with Adam, tuning α is
                 much like tuning the learning rate); keeping α fixed while r changes is what
                 spares retuning. So to compare ranks the paper's way, pass the first r as
                 alpha (e.g. alpha=8) and vary r; alpha=None suits a single run.
        dropout: dropout probability on the LoRA input x (the base path never sees it).
                 0 by default (loralib's and PEFT's default): a regulariser to raise
                 (e.g. to 0.05-0.1) when the adapter overfits a small dataset.
        rslora:  use rsLoRA's scaling s = α/√r instead of α/r (recorded by save_adapter, so a
                 reloaded, switched or mixed-batch adapter keeps it).
        init:    how A starts ("kaiming" by default), B always starts at 0 so ΔW = 0 and
                 the wrapped model computes exactly what the base model did:
                   "kaiming":  A ~ U(-1/sqrt(k), 1/sqrt(k)), Kaiming-uniform with a = sqrt(5),
                               what loralib and PEFT do (the same init as nn.Linear's weight);
                   "gaussian": A ~ N(0, (1/r)^2), closer to the paper's text ("random Gaussian
                               initialization for A"), with PEFT's choice of std 1/r.

    Attributes: base, lora_A (r, k), lora_B (d, r), r, alpha, rslora, scaling = alpha / r (alpha / √r if rslora),
    merged (ΔW currently added into base.weight), enabled (False: the layer is W0 alone);
    for several named adapters (tinylora/lora/adapters.py, mixed.py): adapter_name (the one
    lora_A / lora_B hold), stored_adapters (the others), per_example (set during a mixed batch).

    Merging (`merge()`, `unmerge()`) is explicit and idempotent; see their docstrings.
    Disabling a merged layer unmerges it first, so that `enabled=False` always means
    "exactly the base model"; merging a disabled layer is an error.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0, init: str = "kaiming",
                 rslora: bool = False):
        super().__init__()
        quantized = getattr(base, "is_quantized", False)  # a frozen 4-bit base (tinylora.quant.NF4Linear)
        if not isinstance(base, nn.Linear) and not quantized:
            raise TypeError(f"LoRALinear wraps an nn.Linear (or a quantized one such as NF4Linear), "
                            f"got {type(base).__name__}")
        d, k = base.out_features, base.in_features
        if not isinstance(r, numbers.Integral) or isinstance(r, bool):
            raise TypeError(f"LoRALinear: rank r must be an int, got {r!r}")
        if not 1 <= r <= min(d, k):
            raise ValueError(
                f"LoRALinear: rank r={r} must satisfy 1 <= r <= min(d, k) = {min(d, k)} "
                f"for a Linear with d=out_features={d}, k=in_features={k}"
            )
        if alpha is None:
            alpha = r
        if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not 0 < alpha < math.inf:
            raise ValueError(f"LoRALinear: alpha must be a positive finite number (or None for alpha = r), "
                             f"got {alpha!r}")
        if init not in INITS:
            raise ValueError(f"LoRALinear: init must be one of {INITS}, got {init!r}")
        if not isinstance(rslora, bool):
            raise TypeError(f"LoRALinear: rslora must be True or False, got {rslora!r}")
        if not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRALinear: dropout must be in [0, 1), got {dropout!r}")

        self.base = base
        if not quantized:
            base.weight.requires_grad_(False)  # W0 is frozen: no gradient, no optimizer state
        self.r, self.alpha, self.rslora = int(r), alpha, rslora
        self.scaling = lora_scaling(alpha, self.r, rslora)  # a Python float: keeps float32 math in float32
        self.init = init
        self.lora_dropout = nn.Dropout(dropout)
        # A, B live where W0 lives, with its dtype (a quantized W0: the dtype it had before quantization)
        device, dtype = (base.device, base.lora_dtype) if quantized else (base.weight.device, base.weight.dtype)
        self.lora_A = nn.Parameter(zeros(r, k, device=device, dtype=dtype))  # (r, k)
        self.lora_B = nn.Parameter(zeros(d, r, device=device, dtype=dtype))  # (d, r), zero: ΔW = 0 at init
        self.merged = False  # is ΔW currently added into base.weight?
        self.enabled = True  # False: forward is the base layer alone
        # Several named adapters (tinylora/lora/adapters.py): lora_A, lora_B, r, alpha, scaling
        # always describe the active one, called `adapter_name`; the others wait in `stored_adapters`.
        self.adapter_name = "default"
        self.stored_adapters = {}  # name -> AdapterState, not registered: only the active adapter trains
        self.per_example = None  # set while a batch mixes adapters (tinylora/lora/mixed.py): x -> each row's ΔW x
        self.reset_lora_parameters()
        self.train(base.training)  # a model in eval mode stays in eval mode (LoRA dropout off)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def adapter_parameters(self) -> list:
        """The parameters this layer adds and trains: [A, B] here; a method that adds more (DoRA's
        magnitude, AdaLoRA's Λ) extends the list, and `mark_only_lora_as_trainable` trains exactly these."""
        return [self.lora_A, self.lora_B]

    def reset_lora_parameters(self) -> None:
        """A random (per `init`), B = 0, so ΔW = BA = 0."""
        if self.merged:
            raise RuntimeError("LoRALinear: unmerge before resetting A and B (W0 still contains the old ΔW)")
        if self.init == "kaiming":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        else:
            nn.init.normal_(self.lora_A, 0.0, 1.0 / self.r)
        nn.init.zeros_(self.lora_B)

    def forward(self, x):
        h = self.base(x)  # (..., d): W0 x + b (W0 already holds ΔW when merged)
        if self.merged or not self.enabled:
            return h
        if self.per_example is not None:  # a mixed-adapter batch: row b gets its own (α_b/r_b) B_b A_b x_b
            return h + self.per_example(x)
        z = F.linear(self.lora_dropout(x), self.lora_A)  # (..., r): A x
        return h + F.linear(z * self.scaling, self.lora_B)  # (..., d): + (α/r) B A x, scaled in r dims (cheaper)

    # ------------------------------------------------------------ merging
    def delta_weight(self):
        """ΔW = (α/r) B A as a raw array (d, k), on the weights' device; no graph."""
        return (self.lora_B.data @ self.lora_A.data) * self.scaling

    def merge(self, safe: bool = True) -> "LoRALinear":
        """W0 <- W0 + (α/r) B A, so forward costs one matmul. Does nothing if already merged.

        safe=True (the default, PEFT's `safe_merge`): W0 + ΔW is computed aside and checked
        first; if any entry is NaN or inf, a ValueError is raised and W0 is left untouched.
        safe=False adds ΔW into W0 in place (no extra d×k buffer, no check).

        For inference: while merged, forward is base(x) alone, so A and B get no gradient.
        Rounding: W0 + ΔW - ΔW is W0 only up to float rounding (about 1e-7 relative in float32).
        """
        if not self.enabled:
            raise RuntimeError("LoRALinear: cannot merge a disabled adapter; call enable() first")
        if getattr(self.base, "is_quantized", False):
            raise RuntimeError("LoRALinear: the base weight is quantized; merge into a dequantized copy with "
                               "tinylora.methods.qlora.merge_qlora(model)")
        if self.merged:
            return self
        if not safe:
            self.base.weight.data += self.delta_weight()
        else:
            merged = self.base.weight.data + self.delta_weight()  # (d, k), aside: W0 is not touched yet
            bad = int((~self.base.weight.device.xp.isfinite(merged)).sum().item())
            if bad:
                raise ValueError(f"LoRALinear.merge: W0 + ΔW has {bad} non-finite entries (NaN or inf) of "
                                 f"{merged.size}; the adapter's A or B is broken; W0 was left unchanged")
            self.base.weight.data[...] = merged
        self.merged = True
        return self

    def unmerge(self) -> "LoRALinear":
        """W0 <- W0 - (α/r) B A, in place, undoing `merge()`. Does nothing if not merged."""
        if self.merged:
            self.base.weight.data -= self.delta_weight()
            self.merged = False
        return self

    def disable(self) -> "LoRALinear":
        """Make the layer compute W0 x + b alone (unmerging first if merged)."""
        self.unmerge()
        self.enabled = False
        return self

    def enable(self) -> "LoRALinear":
        """Bring ΔW back into the forward pass."""
        self.enabled = True
        return self

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, alpha={self.alpha}, "
            f"scaling={self.scaling:g}, dropout={self.lora_dropout.p}, merged={self.merged}, enabled={self.enabled}"
        )
